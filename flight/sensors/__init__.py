"""Sensors: one interface (reading.py) for power, battery, solar, eclipse timing and
temperatures, with backends: sim (minimal models), hil (the rig's or EPS board's sensor bus,
bus.py) and jetson (jetson_backend.py: what the board itself can tell, read by jetson.py, joined
with the EPS board's frames and the eclipses predicted from the uplinked TLE)."""
