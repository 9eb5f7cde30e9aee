"""The Sun's geocentric position: the Astronomical Almanac's low-precision formula.

Source: The Astronomical Almanac, section C ("Sun"), "Low-precision formulas for the Sun's
coordinates and the equation of time" (the same formula is in the Explanatory Supplement and
in the U.S. Naval Observatory's "Approximate Solar Coordinates"). Stated accuracy: 0.01° in
position between 1950 and 2050 (R agrees with Meeus' higher-accuracy series to ~1e-4 AU:
see tests/orbit/test_sun.py).

    n = JD - 2451545.0                      (days from J2000.0)
    L = 280.460° + 0.9856474° n             mean longitude, corrected for aberration
    g = 357.528° + 0.9856003° n             mean anomaly
    λ = L + 1.915° sin g + 0.020° sin 2g    ecliptic longitude (β = 0)
    ε = 23.439° - 0.0000004° n              obliquity of the ecliptic
    R = 1.00014 - 0.01671 cos g - 0.00014 cos 2g   AU
    x = R cos λ, y = R cos ε sin λ, z = R sin ε sin λ   equatorial, mean equator and equinox of date

Time scale: the Almanac takes n in TT; we use UTC. The ~69 s difference moves the Sun
0.0008°: nothing beside the formula's 0.01°.

Frame: the result is referred to the mean equator and mean equinox of date (MOD); SGP4 gives
TEME (true equator, mean equinox of date). The two differ only by nutation: the true pole is
off the mean pole by the nutation in obliquity and the nutation in longitude × sin ε, together
under 20" (1e-4 rad), and both frames measure right ascension from the mean equinox. A 1e-4 rad
turn of the Sun direction moves the shadow's edge at the Earth's limb by ~0.6 km, which a LEO
satellite crosses in < 0.1 s (more at grazing incidence, where the edge itself is ill defined);
the formula's own 0.01° (1.7e-4 rad) is ~1 km, ~0.15 s. So we use the MOD vector as TEME for
shadow timing. It is not good enough for pointing an instrument at the Sun to arcseconds.
"""
from __future__ import annotations

import math

import numpy as np

from flight.orbit.tle import TimeLike, to_unix

AU_KM = 149_597_870.7
"""The astronomical unit, km (IAU 2012 Resolution B2)."""

_J2000_UNIX = 946_728_000.0  # 2000-01-01T12:00:00 UTC as Unix seconds (JD 2451545.0)


def _days_from_j2000(unix_s):
    return (np.asarray(unix_s, dtype=float) - _J2000_UNIX) / 86400.0


def sun_ecliptic(t: TimeLike) -> tuple[float, float, float]:
    """(apparent ecliptic longitude λ in degrees [0, 360), obliquity ε in degrees, R in AU)."""
    n = float(_days_from_j2000(to_unix(t)))
    lam, eps, r = _almanac(n)
    return float(lam % 360.0), float(eps), float(r)


def _almanac(n):
    L = 280.460 + 0.9856474 * n
    g = np.radians(357.528 + 0.9856003 * n)
    lam = L + 1.915 * np.sin(g) + 0.020 * np.sin(2.0 * g)
    eps = 23.439 - 0.0000004 * n
    r = 1.00014 - 0.01671 * np.cos(g) - 0.00014 * np.cos(2.0 * g)
    return lam, eps, r


def sun_position(t: TimeLike) -> np.ndarray:
    """Geocentric Sun position, km, equatorial (MOD, used as TEME: see the module note)."""
    return sun_positions(np.array([to_unix(t)]))[0]


def sun_positions(unix_s: np.ndarray) -> np.ndarray:
    """sun_position for many Unix times: shape (N, 3), km."""
    lam, eps, r = _almanac(_days_from_j2000(unix_s))
    lam = np.radians(lam)
    eps = np.radians(eps)
    rk = r * AU_KM
    return np.stack(
        [rk * np.cos(lam), rk * np.cos(eps) * np.sin(lam), rk * np.sin(eps) * np.sin(lam)], axis=-1
    )


def sun_distance_km(t: TimeLike) -> float:
    """Earth-Sun distance, km."""
    return sun_ecliptic(t)[2] * AU_KM


def sun_ra_dec(t: TimeLike) -> tuple[float, float]:
    """(right ascension [0, 360), declination), degrees, of date."""
    x, y, z = sun_position(t)
    return math.degrees(math.atan2(y, x)) % 360.0, math.degrees(math.atan2(z, math.hypot(x, y)))
