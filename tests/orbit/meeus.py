"""An independent solar position for the tests: Meeus, "Astronomical Algorithms" (2nd ed., 1998),
chapter 25, the low-accuracy method (the one NOAA's solar calculator uses), coded separately
from flight/orbit/sun.py. Accuracy 0.01°. Input: Julian Ephemeris Day (TT)."""
from __future__ import annotations

import math


def meeus_sun(jde: float) -> dict[str, float]:
    T = (jde - 2451545.0) / 36525.0
    L0 = (280.46646 + 36000.76983 * T + 0.0003032 * T * T) % 360.0
    M = (357.52911 + 35999.05029 * T - 0.0001537 * T * T) % 360.0
    e = 0.016708634 - 0.000042037 * T - 0.0000001267 * T * T
    Mr = math.radians(M)
    C = ((1.914602 - 0.004817 * T - 0.000014 * T * T) * math.sin(Mr)
         + (0.019993 - 0.000101 * T) * math.sin(2 * Mr) + 0.000289 * math.sin(3 * Mr))
    true_long = L0 + C
    nu = math.radians(M + C)
    R = 1.000001018 * (1 - e * e) / (1 + e * math.cos(nu))
    omega = math.radians(125.04 - 1934.136 * T)
    lam = true_long - 0.00569 - 0.00478 * math.sin(omega)
    eps0 = 23 + 26 / 60 + 21.448 / 3600 - (46.8150 * T + 0.00059 * T**2 - 0.001813 * T**3) / 3600
    eps = eps0 + 0.00256 * math.cos(omega)
    lr, er = math.radians(lam), math.radians(eps)
    ra = math.degrees(math.atan2(math.cos(er) * math.sin(lr), math.cos(lr))) % 360.0
    dec = math.degrees(math.asin(math.sin(er) * math.sin(lr)))
    return {"T": T, "L0": L0, "M": M, "e": e, "C": C, "true_long": true_long % 360.0, "R": R,
            "lambda": lam % 360.0, "eps": eps, "ra": ra, "dec": dec}


def meeus_sun_vector_km(jde: float, au_km: float = 149_597_870.7) -> tuple[float, float, float]:
    s = meeus_sun(jde)
    ra, dec = math.radians(s["ra"]), math.radians(s["dec"])
    r = s["R"] * au_km
    return (r * math.cos(dec) * math.cos(ra), r * math.cos(dec) * math.sin(ra), r * math.sin(dec))
