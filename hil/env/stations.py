"""Ground stations and their contact windows.

Model: a station is a point on the WGS-84 ellipsoid (geodetic latitude and longitude in degrees,
altitude in metres) with an elevation mask in degrees. The satellite's SGP4 position (TEME, km)
is turned into the Earth-fixed frame by the Greenwich mean sidereal time (IAU 1982, the angle
TEME is defined by; polar motion and UT1 - UTC < 0.9 s are ignored, which moves a pass by well
under a second), and its elevation is the angle between the station-to-satellite vector and the
plane normal to the ellipsoid's normal at the station (no refraction).

A contact window runs from rise (elevation climbs through the mask) to set (falls through it),
with its culmination (maximum elevation). The search samples elevation every 10 s, bisects each
crossing of the mask to 0.01 s, and locates the culmination by golden section; a pass whose peak
barely reaches the mask between two samples is caught by maximising elevation around every
sampled local maximum that is close to the mask, as flight/orbit/eclipse.py does for grazing
eclipses.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

import numpy as np

from flight.orbit import Satellite
from flight.orbit.eclipse import bisect_sign_change, golden_min

WGS84_A_KM = 6378.137
WGS84_F = 1.0 / 298.257223563
_E2 = WGS84_F * (2.0 - WGS84_F)
_J2000_UNIX = 946_728_000.0  # 2000-01-01T12:00:00 UTC (JD 2451545.0)
SAMPLE_S = 10.0
EDGE_TOL_S = 0.01


def _iso(unix_s: float) -> str:
    return datetime.fromtimestamp(unix_s, tz=timezone.utc).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Station:
    """A ground station: geodetic latitude and longitude (deg), altitude (m), elevation mask (deg)."""

    name: str
    lat_deg: float
    lon_deg: float
    alt_m: float = 0.0
    mask_deg: float = 5.0

    def __post_init__(self) -> None:
        checks = (
            (-90.0 <= self.lat_deg <= 90.0, f"latitude {self.lat_deg} is not in [-90, 90] deg"),
            (-180.0 <= self.lon_deg <= 360.0, f"longitude {self.lon_deg} is not in [-180, 360] deg"),
            (-500.0 <= self.alt_m <= 10_000.0, f"altitude {self.alt_m} m is not in [-500, 10000] m"),
            (-5.0 <= self.mask_deg < 90.0, f"elevation mask {self.mask_deg} is not in [-5, 90) deg"),
        )
        for ok, message in checks:
            # also refuses NaN, which fails every comparison
            if not ok:
                raise ValueError(f"station {self.name!r}: {message}")

    @property
    def ecef_km(self) -> np.ndarray:
        phi, lam = math.radians(self.lat_deg), math.radians(self.lon_deg)
        n = WGS84_A_KM / math.sqrt(1.0 - _E2 * math.sin(phi) ** 2)
        h = self.alt_m / 1000.0
        return np.array([
            (n + h) * math.cos(phi) * math.cos(lam),
            (n + h) * math.cos(phi) * math.sin(lam),
            (n * (1.0 - _E2) + h) * math.sin(phi),
        ])

    @property
    def up(self) -> np.ndarray:
        """Unit normal of the ellipsoid at the station (geodetic zenith)."""
        phi, lam = math.radians(self.lat_deg), math.radians(self.lon_deg)
        return np.array([math.cos(phi) * math.cos(lam), math.cos(phi) * math.sin(lam), math.sin(phi)])


@dataclass(frozen=True)
class Window:
    """One contact: Unix seconds (UTC) of rise, culmination and set, and the peak elevation (deg)."""

    station: str
    rise: float
    culmination: float
    set: float
    max_elevation_deg: float

    @property
    def duration_s(self) -> float:
        return self.set - self.rise

    def as_dict(self) -> dict[str, object]:
        """The keys `hil passes --json` prints (times ISO-8601 UTC)."""
        return {
            "station": self.station,
            "rise": _iso(self.rise),
            "culmination": _iso(self.culmination),
            "set": _iso(self.set),
            "max_elevation_deg": round(self.max_elevation_deg, 3),
        }


def gmst_rad(unix_s: np.ndarray | float) -> np.ndarray:
    """Greenwich mean sidereal time, IAU 1982 (Vallado's gstime, the angle TEME is defined by), rad."""
    tut1 = (np.asarray(unix_s, dtype=float) - _J2000_UNIX) / (86400.0 * 36525.0)
    seconds = (-6.2e-6 * tut1**3 + 0.093104 * tut1**2
               + (876600.0 * 3600.0 + 8640184.812866) * tut1 + 67310.54841)
    return np.mod(np.radians(seconds / 240.0), 2.0 * np.pi)


def teme_to_ecef(r_teme: np.ndarray, unix_s: np.ndarray | float) -> np.ndarray:
    """Rotate TEME positions (km, shape (3,) or (N, 3)) into the Earth-fixed frame by GMST."""
    theta = gmst_rad(unix_s)
    c, s = np.cos(theta), np.sin(theta)
    r = np.asarray(r_teme, dtype=float)
    x, y, z = r[..., 0], r[..., 1], r[..., 2]
    return np.stack([c * x + s * y, -s * x + c * y, z], axis=-1)


def elevation_deg(station: Station, r_teme: np.ndarray, unix_s: np.ndarray | float) -> np.ndarray | float:
    """Elevation (deg) of satellite positions r_teme (km) seen from the station at unix_s."""
    rho = teme_to_ecef(r_teme, unix_s) - station.ecef_km
    sin_el = (rho @ station.up) / np.linalg.norm(rho, axis=-1)
    el = np.degrees(np.arcsin(np.clip(sin_el, -1.0, 1.0)))
    return float(el) if np.ndim(el) == 0 else el


def _golden_max(f: Callable[[float], float], lo: float, hi: float) -> tuple[float, float]:
    """(t, f(t)) at the maximum of a unimodal f on [lo, hi], to EDGE_TOL_S."""
    t, neg = golden_min(lambda x: -f(x), lo, hi, EDGE_TOL_S)
    return t, -neg


def contact_windows(sat: Satellite, station: Station, start_unix: float, end_unix: float) -> list[Window]:
    """The contacts of the satellite with the station overlapping [start, end], whole, in order.

    A pass in progress at either end keeps its true rise or set (the search is padded by 30 min,
    longer than any LEO pass).
    """
    if not (math.isfinite(start_unix) and math.isfinite(end_unix) and end_unix >= start_unix):
        raise ValueError("contact window search needs finite start <= end")
    pad = 1800.0
    grid = np.arange(start_unix - pad, end_unix + pad + SAMPLE_S, SAMPLE_S)
    margin = elevation_deg(station, sat.positions(grid), grid) - station.mask_deg

    def f(t: float) -> float:
        return elevation_deg(station, sat.position(t), t) - station.mask_deg

    crossings: list[tuple[float, int]] = []  # (time, +1 rise / -1 set)
    above = margin >= 0
    for i in np.nonzero(above[1:] != above[:-1])[0]:
        edge = bisect_sign_change(f, float(grid[i]), float(grid[i + 1]), float(margin[i]), EDGE_TOL_S)
        crossings.append((edge, -1 if above[i] else +1))
    # a pass that peaks above the mask only between two samples: a sampled local maximum below
    # the mask, close enough to it that the elevation's curvature could lift it over
    for i in range(1, len(margin) - 1):
        m = margin[i]
        if m >= 0 or m < margin[i - 1] or m < margin[i + 1]:
            continue
        if -m > 2.0 * max(m - margin[i - 1], m - margin[i + 1]) + 0.5:
            continue
        tm, fm = _golden_max(f, float(grid[i - 1]), float(grid[i + 1]))
        if fm >= 0:
            crossings.append((bisect_sign_change(f, float(grid[i - 1]), tm, float(margin[i - 1]), EDGE_TOL_S), +1))
            crossings.append((bisect_sign_change(f, tm, float(grid[i + 1]), fm, EDGE_TOL_S), -1))
    crossings.sort()

    out: list[Window] = []
    rise: float | None = None
    for t, d in crossings:
        if d > 0:
            rise = t
        elif rise is not None:
            if t > start_unix and rise < end_unix:
                tc, mc = _golden_max(f, rise, t)
                out.append(Window(station.name, rise, tc, t, mc + station.mask_deg))
            rise = None
    return out
