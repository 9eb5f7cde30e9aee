"""Sensors: one interface (reading.py) for power, battery, solar, eclipse timing and
temperatures, with backends: sim (minimal models, here); hil and jetson come with their issues."""
