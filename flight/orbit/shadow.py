"""Illumination of a satellite by the Sun past a spherical Earth: the conical shadow model.

Source: O. Montenbruck & E. Gill, "Satellite Orbits: Models, Methods and Applications",
Springer 2000, §3.4.2 (eq. 3.85-3.87); Basilisk's eclipse module does the same.

Seen from the satellite at r (geocentric, km) the Sun (at r_sun) and the Earth are discs of
apparent radii
    a = asin(R_sun / |r_sun - r|),   b = asin(R_earth / |r|),
whose centres are c apart:
    c = acos(-r · (r_sun - r) / (|r| |r_sun - r|)).
  c >= a + b        full sun:        illumination 1
  c <= b - a        umbra (total):   0
  c <= a - b        annular (Earth inside the Sun's disc; not reachable in LEO): 1 - b²/a²
  otherwise         penumbra: the Earth covers the area A of the Sun's disc
      x = (c² + a² - b²) / (2c),  y = sqrt(a² - x²)
      A = a² acos(x/a) + b² acos((c - x)/b) - c y
  (computed as a² atan2(y, x) + b² atan2(y, c - x) - c y with y from a factored, Heron-like
  product, which keeps full precision at the edges)
      illumination = 1 - A / (π a²)
The discs are treated as flat (valid for these small angles) and the Sun's disc as uniformly
bright (no limb darkening).

Earth: a sphere of the WGS-84 equatorial radius, 6378.137 km, with no atmosphere. The polar
radius is 21 km less, and refraction and absorption make the effective shadow some 20-50 km
larger; both move eclipse edges of a LEO satellite by a few seconds. These are limits of the
model (and of every "spherical Earth, conical shadow" prediction), not of the arithmetic.

Two continuous margins, used to locate the edges by bisection:
    penumbra_margin = c - (a + b)   > 0 in full sun
    umbra_margin    = c - (b - a)   > 0 outside the umbra
"""
from __future__ import annotations

import numpy as np

EARTH_RADIUS_KM = 6378.137
"""WGS-84 equatorial radius, km: the spherical Earth of the shadow."""

SUN_RADIUS_KM = 696_000.0
"""Solar radius, km, as Montenbruck & Gill and Vallado use it (IAU 2015 nominal: 695 700 km, 0.04% less)."""


def shadow_angles(r, r_sun, earth_radius_km: float = EARTH_RADIUS_KM, sun_radius_km: float = SUN_RADIUS_KM):
    """(a, b, c) in radians: apparent radius of the Sun, of the Earth, and their separation.

    r and r_sun are geocentric, km, same frame; shape (3,) or (N, 3).
    """
    r = np.asarray(r, dtype=float)
    r_sun = np.asarray(r_sun, dtype=float)
    d = r_sun - r
    rn = np.linalg.norm(r, axis=-1)
    dn = np.linalg.norm(d, axis=-1)
    a = np.arcsin(np.clip(sun_radius_km / dn, -1.0, 1.0))
    b = np.arcsin(np.clip(earth_radius_km / rn, -1.0, 1.0))
    cos_c = -np.sum(r * d, axis=-1) / (rn * dn)
    c = np.arccos(np.clip(cos_c, -1.0, 1.0))
    return a, b, c


def illumination_from_angles(a, b, c):
    """Fraction of the Sun's disc visible, 0…1, from the angles of shadow_angles."""
    a, b, c = np.broadcast_arrays(np.asarray(a, float), np.asarray(b, float), np.asarray(c, float))
    out = np.ones(a.shape)
    umbra = c <= b - a
    annular = (c <= a - b) & ~umbra
    partial = (c < a + b) & ~umbra & ~annular
    out[umbra] = 0.0
    out[annular] = 1.0 - (b[annular] / a[annular]) ** 2
    if np.any(partial):
        ap, bp, cp = a[partial], b[partial], c[partial]
        # the same formula in a cancellation-free form: b >> a in LEO (70° against 0.27°), and
        # acos((c - x)/b) of an argument within 1e-13 of 1 loses the sliver of Sun near the edges
        p = ap + cp - bp  # > 0: not in the umbra
        q = ap + bp - cp  # > 0: not in full sun
        y = np.sqrt(np.clip(p * q * (ap + bp + cp) * (bp + cp - ap), 0.0, None)) / (2.0 * cp)
        x = ((cp - bp) * (cp + bp) + ap**2) / (2.0 * cp)
        area = ap**2 * np.arctan2(y, x) + bp**2 * np.arctan2(y, cp - x) - cp * y
        out[partial] = 1.0 - area / (np.pi * ap**2)
    out = np.clip(out, 0.0, 1.0)
    return out if out.ndim else float(out)


def illumination(r, r_sun, earth_radius_km: float = EARTH_RADIUS_KM, sun_radius_km: float = SUN_RADIUS_KM):
    """Illumination 0…1 of a satellite at r (km) with the Sun at r_sun (km), both geocentric.

    0 in the umbra, 1 in full sun, the visible fraction of the Sun's disc in the penumbra.
    A float for one position, an array for (N, 3).
    """
    return illumination_from_angles(*shadow_angles(r, r_sun, earth_radius_km, sun_radius_km))


def margins(r, r_sun, earth_radius_km: float = EARTH_RADIUS_KM, sun_radius_km: float = SUN_RADIUS_KM):
    """(penumbra_margin, umbra_margin), radians: see the module note; continuous in r."""
    a, b, c = shadow_angles(r, r_sun, earth_radius_km, sun_radius_km)
    return c - (a + b), c - (b - a)
