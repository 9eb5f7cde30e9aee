"""The satellite's orbit over a run: illumination, eclipse timing and station contact, stepped fast.

Model: SGP4 from a TLE, the Almanac's low-precision Sun, a conical shadow of a spherical Earth
(all from flight/orbit: illumination is 0 in the umbra, 1 in full sun, the visible fraction of
the Sun's disc in the penumbra) and WGS-84 ground stations (stations.py).

Speed: eclipse and contact windows are computed once per chunk of simulated time (a day by
default, recomputed when the clock passes the middle of the chunk), with edges located to 0.1 s
(eclipses) and 0.01 s (contacts). A step then looks up the current window instead of running
SGP4, except inside the penumbra, where illumination is computed from the shadow geometry.
Times are Unix seconds (UTC); quantities are dimensionless (illumination, cosines) or degrees.
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

import numpy as np

from flight.orbit import Satellite, illumination_at, sun_position
from flight.orbit.eclipse import eclipse_intervals
from hil.env.stations import Station, Window, contact_windows, elevation_deg

NO_EVENT_S = 1e9
"""What eclipse timing reports when no eclipse is known ahead (a dawn-dusk orbit out of season):
a finite stand-in for 'never', since the sensor frames carry finite numbers only."""


@dataclass(frozen=True)
class OrbitSample:
    """What the orbit gives the other models at one instant."""

    illumination: float     # 0..1
    in_eclipse: bool         # penumbra or umbra (illumination < 1)
    entry_in_s: float        # to the next penumbra entry, 0 while in eclipse
    exit_in_s: float         # to the next penumbra exit
    contact: Window | None   # the window in progress, if any (the highest one)


class OrbitModel:
    """Eclipse and contact windows of one satellite over a run, looked up step by step."""

    def __init__(self, sat: Satellite, stations: tuple[Station, ...], start_unix: float, chunk_s: float = 86400.0):
        if chunk_s < 2 * 3600.0:
            raise ValueError("chunk_s must be at least 2 h: the next eclipse must be in the chunk")
        self.satellite = sat
        self.stations = stations
        self.chunk_s = chunk_s
        self._from = math.nan
        self._eclipses: list[tuple[float, float | None, float | None, float]] = []
        self._entries: list[float] = []
        self._contacts: list[Window] = []
        self._load(start_unix)

    def _load(self, t: float) -> None:
        self._from = t
        self._eclipses = eclipse_intervals(self.satellite, t, self.chunk_s)
        self._entries = [e[0] for e in self._eclipses]
        self._contacts = sorted(
            (w for s in self.stations for w in contact_windows(self.satellite, s, t, t + self.chunk_s)),
            key=lambda w: w.rise,
        )

    def _ensure(self, t: float) -> None:
        # reload once t leaves the first half of the chunk (so the next eclipse, less than an
        # orbit away, and any pass in progress are always inside it) or goes back before it
        if not (self._from <= t <= self._from + self.chunk_s / 2):
            self._load(t)

    def sample(self, t: float) -> OrbitSample:
        self._ensure(t)
        i = bisect.bisect_right(self._entries, t) - 1  # the last eclipse entered at or before t
        illum, entry, exit_ = 1.0, NO_EVENT_S, NO_EVENT_S
        if i >= 0 and t < self._eclipses[i][3]:
            pe, ue, ux, px = self._eclipses[i]
            entry, exit_ = 0.0, px - t
            in_umbra = ue is not None and ux is not None and ue <= t < ux
            illum = 0.0 if in_umbra else illumination_at(self.satellite, t)
            # bisection puts the edge within 0.1 s, where the exact geometry may still say 1.0
            illum = min(illum, 1.0 - 1e-9)
        elif i + 1 < len(self._eclipses):
            entry, exit_ = self._eclipses[i + 1][0] - t, self._eclipses[i + 1][3] - t
        return OrbitSample(illum, entry == 0.0, entry, exit_, self._contact(t))

    def _contact(self, t: float) -> Window | None:
        best: Window | None = None
        for w in self._contacts:
            if w.rise > t:
                break  # sorted by rise
            if t < w.set and (best is None or w.max_elevation_deg > best.max_elevation_deg):
                best = w
        return best

    def contact_windows(self, start_unix: float, end_unix: float) -> list[Window]:
        """Every station's windows overlapping [start, end], in order of rise."""
        return sorted(
            (w for s in self.stations for w in contact_windows(self.satellite, s, start_unix, end_unix)),
            key=lambda w: w.rise,
        )

    def elevations(self, t: float) -> dict[str, float]:
        """Each station's elevation of the satellite at t, degrees (one SGP4 call)."""
        r = self.satellite.position(t)
        return {s.name: float(elevation_deg(s, r, t)) for s in self.stations}

    def sun_cosine_zenith(self, t: float) -> float:
        """Cosine between the local zenith (radial outward) and the Sun, >= 0: a body-mounted
        array on a nadir-pointing satellite sees the Sun at this cosine."""
        r = self.satellite.position(t)
        s = sun_position(t)
        return max(0.0, float(np.dot(r, s) / (np.linalg.norm(r) * np.linalg.norm(s))))
