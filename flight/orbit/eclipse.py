"""Eclipse events of a satellite: penumbra and umbra entries and exits, and the time to the next.

Model: SGP4 orbit (tle.py), Almanac Sun (sun.py), conical shadow of a spherical Earth
(shadow.py). The search samples the continuous shadow margins of shadow.py on a coarse grid
(10 s by default), brackets every sign change, and bisects it to a tolerance (0.1 s by default),
so edges are located to well under the 1 s the HIL rig asks for. A margin that dips toward zero
between two samples without changing sign there (a grazing eclipse shorter than the step) is
caught by minimising it over the two neighbouring steps (golden section) before bisecting.

Eclipses are returned whole: the search runs from 3 h before the start to 3 h after the end of
the window (longer than any Earth-orbit eclipse), so one in progress at either end of the window
keeps its true entry and exit.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Callable, Literal, Optional, Union

import numpy as np

from flight.orbit.shadow import illumination_from_angles, margins, shadow_angles
from flight.orbit.sun import sun_position, sun_positions
from flight.orbit.tle import Satellite, TimeLike, Tle, to_datetime, to_unix

SatelliteLike = Union[Satellite, Tle, str, bytes]
Edge = Literal["penumbra", "umbra"]

_PAD_S = 3 * 3600.0
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


@dataclass(frozen=True)
class Eclipse:
    """One passage through the Earth's shadow, UTC. Umbra fields are None for a penumbral-only pass."""

    penumbra_entry: datetime
    umbra_entry: Optional[datetime]
    umbra_exit: Optional[datetime]
    penumbra_exit: datetime

    @property
    def duration_s(self) -> float:
        """Penumbra entry to penumbra exit, s."""
        return (self.penumbra_exit - self.penumbra_entry).total_seconds()

    @property
    def umbra_s(self) -> float:
        """Time in the umbra, s (0 for a penumbral-only pass)."""
        if self.umbra_entry is None or self.umbra_exit is None:
            return 0.0
        return (self.umbra_exit - self.umbra_entry).total_seconds()

    def as_dict(self) -> dict[str, Optional[str]]:
        """ISO-8601 UTC strings under the keys `hil eclipses --json` prints."""
        iso = lambda d: None if d is None else d.isoformat().replace("+00:00", "Z")  # noqa: E731
        return {
            "penumbra_entry": iso(self.penumbra_entry),
            "umbra_entry": iso(self.umbra_entry),
            "umbra_exit": iso(self.umbra_exit),
            "penumbra_exit": iso(self.penumbra_exit),
        }


def _satellite(sat: SatelliteLike) -> Satellite:
    return sat if isinstance(sat, Satellite) else Satellite(sat)


def illumination_at(sat: SatelliteLike, t: TimeLike) -> float:
    """Illumination 0…1 of the satellite at UTC time t."""
    s = _satellite(sat)
    return float(illumination_from_angles(*shadow_angles(s.position(t), sun_position(t))))


def _margin_fns(sat: Satellite) -> tuple[Callable[[float], float], Callable[[float], float]]:
    def pen(t: float) -> float:
        return float(margins(sat.position(t), sun_position(t))[0])

    def umb(t: float) -> float:
        return float(margins(sat.position(t), sun_position(t))[1])

    return pen, umb


def bisect_sign_change(f: Callable[[float], float], lo: float, hi: float, f_lo: float, tol: float) -> float:
    """The sign change of f in [lo, hi] (f(lo) has sign of f_lo), to within tol."""
    neg_lo = f_lo < 0
    while hi - lo > tol:
        mid = 0.5 * (lo + hi)
        if (f(mid) < 0) == neg_lo:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def golden_min(f: Callable[[float], float], lo: float, hi: float, tol: float,
               stop_below: float | None = None) -> tuple[float, float]:
    """(t, f(t)) at the minimum of a unimodal f on [lo, hi], to tol; with stop_below, stops
    early at the first t where f(t) < stop_below (all a caller asking "does f go negative" needs)."""
    x1 = hi - _GOLDEN * (hi - lo)
    x2 = lo + _GOLDEN * (hi - lo)
    f1, f2 = f(x1), f(x2)
    while hi - lo > tol:
        if stop_below is not None and f1 < stop_below:
            return x1, f1
        if stop_below is not None and f2 < stop_below:
            return x2, f2
        if f1 < f2:
            hi, x2, f2 = x2, x1, f1
            x1 = hi - _GOLDEN * (hi - lo)
            f1 = f(x1)
        else:
            lo, x1, f1 = x1, x2, f2
            x2 = lo + _GOLDEN * (hi - lo)
            f2 = f(x2)
    return (x1, f1) if f1 < f2 else (x2, f2)


def _crossings(f: Callable[[float], float], t: np.ndarray, v: np.ndarray, tol: float) -> list[tuple[float, int]]:
    """Sorted (time, direction) of the zero crossings of f: -1 going negative (entry), +1 exit."""
    out: list[tuple[float, int]] = []
    neg = v < 0
    for i in np.nonzero(neg[1:] != neg[:-1])[0]:
        tc = bisect_sign_change(f, float(t[i]), float(t[i + 1]), float(v[i]), tol)
        out.append((tc, -1 if not neg[i] else +1))
    # grazing: a positive local minimum whose neighbours do not rule out a dip below zero
    for i in range(1, len(v) - 1):
        if not (v[i] >= 0 and v[i - 1] >= 0 and v[i + 1] >= 0 and v[i] <= v[i - 1] and v[i] <= v[i + 1]):
            continue
        if v[i] > 2.0 * max(v[i - 1] - v[i], v[i + 1] - v[i]):
            continue  # too far above zero for the curvature between samples to reach it
        tm, fm = golden_min(f, float(t[i - 1]), float(t[i + 1]), tol, stop_below=0.0)
        if fm < 0:
            out.append((bisect_sign_change(f, float(t[i - 1]), tm, float(v[i - 1]), tol), -1))
            out.append((bisect_sign_change(f, tm, float(t[i + 1]), fm, tol), +1))
    return sorted(out)


def _intervals(crossings: list[tuple[float, int]]) -> list[tuple[float, float]]:
    """Pair entries with the exits that follow them; a leading exit or trailing entry is dropped."""
    out = []
    entry: Optional[float] = None
    for tc, d in crossings:
        if d < 0:
            entry = tc
        elif entry is not None:
            out.append((entry, tc))
            entry = None
    return out


def eclipse_intervals(
    sat: SatelliteLike, start: TimeLike, horizon_s: float, step_s: float = 10.0, tol_s: float = 0.1
) -> list[tuple[float, Optional[float], Optional[float], float]]:
    """find_eclipses in Unix seconds: (penumbra_entry, umbra_entry, umbra_exit, penumbra_exit)."""
    if not (0 < step_s <= 60.0):
        raise ValueError("step_s must be in (0, 60] s: coarser steps miss short eclipses")
    if not (0 < tol_s <= 1.0):
        raise ValueError("tol_s must be in (0, 1] s")
    if not (horizon_s >= 0 and math.isfinite(horizon_s)):
        raise ValueError("horizon_s must be finite and >= 0")
    s = _satellite(sat)
    t0 = to_unix(start)
    t1 = t0 + horizon_s
    grid = np.arange(t0 - _PAD_S, t1 + _PAD_S + step_s, step_s)
    pm, um = margins(s.positions(grid), sun_positions(grid))
    pen_f, umb_f = _margin_fns(s)
    pen = _intervals(_crossings(pen_f, grid, pm, tol_s))
    umb = _intervals(_crossings(umb_f, grid, um, tol_s))
    out = []
    for pe, px in pen:
        if px <= t0 or pe >= t1:
            continue  # does not overlap [start, start + horizon]
        inside = [(ue, ux) for ue, ux in umb if pe - tol_s <= ue and ux <= px + tol_s]
        if inside:
            # one umbra per eclipse for a sphere; keep the outermost edges if bisection split one
            ue, ux = min(u[0] for u in inside), max(u[1] for u in inside)
            out.append((pe, max(ue, pe), min(ux, px), px))
        else:
            out.append((pe, None, None, px))
    return out


def find_eclipses(
    sat: SatelliteLike, start: TimeLike, horizon_s: float = 86400.0, step_s: float = 10.0, tol_s: float = 0.1
) -> list[Eclipse]:
    """The eclipses overlapping [start, start + horizon_s], whole, in time order.

    sat: a Satellite, a Tle or TLE text. Edges to within tol_s (default 0.1 s).
    """
    dt = lambda u: None if u is None else to_datetime(u)  # noqa: E731
    return [
        Eclipse(dt(pe), dt(ue), dt(ux), dt(px))  # type: ignore[arg-type]
        for pe, ue, ux, px in eclipse_intervals(sat, start, horizon_s, step_s, tol_s)
    ]


def _edges(ivals, edge: Edge) -> list[tuple[float, float]]:
    if edge == "penumbra":
        return [(pe, px) for pe, _, _, px in ivals]
    if edge == "umbra":
        return [(ue, ux) for _, ue, ux, _ in ivals if ue is not None]
    raise ValueError(f"edge must be 'penumbra' or 'umbra', not {edge!r}")


def _at(edges: list[tuple[float, float]], t: float) -> tuple[bool, float, float]:
    for entry, exit_ in edges:
        if exit_ <= t:
            continue
        if entry <= t:
            return True, 0.0, exit_ - t
        return False, entry - t, exit_ - t
    return False, math.inf, math.inf


def next_eclipse(
    sat: SatelliteLike, t: TimeLike, horizon_s: float = 2 * 86400.0, edge: Edge = "penumbra"
) -> tuple[float, float]:
    """(s to the next eclipse entry, s to the next exit), as SensorReading wants them.

    In eclipse: (0, s to its exit). In sunlight: entry and exit of the coming eclipse.
    None within horizon_s (a dawn-dusk sun-synchronous orbit out of eclipse season): (inf, inf).
    edge="penumbra" (default) counts from the first loss of sunlight to full sun again, the
    conservative choice for an energy plan; "umbra" counts total eclipse only.
    """
    u = to_unix(t)
    _, entry, exit_ = _at(_edges(eclipse_intervals(sat, u, horizon_s), edge), u)
    return entry, exit_


class EclipsePredictor:
    """next_eclipse for a caller that asks every tick: events are computed once per window.

    at(t) -> (in_eclipse, s to next entry (0 in eclipse), s to next exit), the contract of the
    sim sensor backend's Eclipse.at, so a backend can swap its square wave for this.
    """

    def __init__(self, sat: SatelliteLike, horizon_s: float = 86400.0, edge: Edge = "penumbra"):
        self.satellite = _satellite(sat)
        self.horizon_s = float(horizon_s)
        self.edge: Edge = edge
        self._from = math.inf
        self._edges: list[tuple[float, float]] = []
        _edges([], edge)  # validate edge now

    def at(self, t: TimeLike) -> tuple[bool, float, float]:
        u = to_unix(t)
        # recompute when t leaves the first half of the cached window (so the next eclipse,
        # less than one orbit away, is always inside it) or goes back before it
        if not (self._from <= u <= self._from + self.horizon_s / 2):
            self._from = u
            self._edges = _edges(eclipse_intervals(self.satellite, u, self.horizon_s), self.edge)
        return _at(self._edges, u)
