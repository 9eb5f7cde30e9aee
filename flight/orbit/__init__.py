"""Orbit and eclipse for the node: one small module per physical model (Basilisk style).

- tle.py     parse and validate a Two-Line Element set (it arrives by command: TLE_UPLOAD) and
             propagate it with SGP4 (the `sgp4` package, Vallado's code) to TEME position/velocity.
- sun.py     the Sun's geocentric position from the Astronomical Almanac's low-precision formula.
- shadow.py  illumination 0…1 from a conical Earth shadow (Montenbruck & Gill §3.4.2).
- eclipse.py eclipse events (penumbra/umbra entry and exit) and the time to the next entry/exit.

flight/, hil/ and ground/ share these; nothing here touches the hardware.
"""
from flight.orbit.eclipse import Eclipse, EclipsePredictor, find_eclipses, illumination_at, next_eclipse
from flight.orbit.shadow import EARTH_RADIUS_KM, SUN_RADIUS_KM, illumination
from flight.orbit.sun import AU_KM, sun_position
from flight.orbit.tle import Satellite, Tle, TleError, parse_tle

__all__ = [
    "AU_KM", "EARTH_RADIUS_KM", "SUN_RADIUS_KM", "Eclipse", "EclipsePredictor", "Satellite", "Tle",
    "TleError", "find_eclipses", "illumination", "illumination_at", "next_eclipse", "parse_tle",
    "sun_position",
]
