"""Sensors: one interface (reading.py) for power, battery, solar, eclipse timing and
temperatures, with backends: sim (minimal models), hil (the rig's or EPS board's sensor bus,
bus.py). jetson.py reads what the board itself can tell (rail power, thermal zones, nvpmodel
mode); the jetson backend that joins it with the EPS frames and onboard SGP4 comes next."""
