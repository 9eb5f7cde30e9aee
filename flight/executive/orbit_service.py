"""The onboard orbit: the TLE the ground uplinks (TLE_UPLOAD), persisted, and the eclipse timing
predicted from it with SGP4 (flight/orbit) for a sensor backend to use (the jetson backend:
flight/sensors/jetson_backend.py; sim and hil have eclipse timing of their own world).

A TLE is checked before anything is stored: parsed (one line naming the line and field that is
wrong) and propagated over the prediction window from now, so one that SGP4 cannot fly (decayed,
or an epoch so far off that the theory breaks down) is refused by the command rather than found
by the main loop. A stored TLE that has become unusable since (the node was off for months) is
kept for its age channel, reported once as a sensor fault, and predicts nothing: the backend
falls back to the EPS board's timing.

Cost: the predictor finds every eclipse in a 24 h window at once (about 40 ms on the
development machine, more on a Jetson's core) and answers from that window after, in
microseconds. The window is renewed on a thread of its own a quarter of the way through, so the
10 Hz main loop never waits for SGP4; only if that thread has not finished by half-way (hours
later) does the main loop compute one itself.
"""
from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from flight.link.service import CommandFailure, CommandOrigin
from flight.orbit import EclipsePredictor, Tle, TleError, parse_tle

HORIZON_S = 86400.0  # each prediction window: more than a day of orbits
RENEW_AFTER = 0.25  # of the window: when a fresh one is computed off the main loop


class TleStore(Protocol):
    def load(self) -> str | None: ...

    def save(self, text: str) -> None: ...


class OrbitService:
    def __init__(self, store: TleStore, emit_event: Callable[..., object], on_fault: Callable[[str, str], object], *,
                 clock: Callable[[], float] = time.time, horizon_s: float = HORIZON_S):
        """emit_event(name, **args): the link's; on_fault(kind, detail): the node's SENSOR_FAULT
        report; clock: UTC, Unix seconds."""
        self._store = store
        self._emit = emit_event
        self._on_fault = on_fault
        self._clock = clock
        self.horizon_s = horizon_s
        self._lock = threading.Lock()
        self.tle: Tle | None = None
        self._predictor: EclipsePredictor | None = None  # None: no TLE, or an unusable one
        self._window_from = 0.0  # Unix s the predictor's window was computed from
        self._renewing = False
        self.faults = 0

    def handlers(self) -> dict[str, Callable[[dict[str, Any], CommandOrigin], dict[str, Any]]]:
        return {"TLE_UPLOAD": self._upload}

    def restore(self) -> None:
        """At start: the stored TLE, if there is one."""
        text = self._store.load()
        if text is None:
            return
        try:
            tle = parse_tle(text)
        except TleError as exc:  # stored by an older release that accepted it
            self._fault(f"stored TLE refused: {exc}")
            return
        try:
            predictor = self._predictor_from(tle)
        except TleError as exc:
            with self._lock:
                self.tle = tle
            self._fault(f"stored TLE of {tle.catalog_number} unusable: {exc}")
            return
        self._install(tle, predictor, "onboard store")

    def at(self, t: float) -> tuple[bool, float, float] | None:
        """(in eclipse, s to the next entry (0 in eclipse), s to the next exit) at Unix time t,
        from the loaded TLE; None without a usable one."""
        with self._lock:
            predictor, tle = self._predictor, self.tle
            renew = predictor is not None and not self._renewing and t > self._window_from + self.horizon_s * RENEW_AFTER
            if renew:
                self._renewing = True
        if predictor is None or tle is None:
            return None
        if renew:
            threading.Thread(target=self._renew, args=(tle, t), name="orbit window", daemon=True).start()
        try:
            return predictor.at(t)
        except TleError as exc:
            self._unusable(tle, exc)
            return None

    def channels(self) -> dict[str, Any]:
        tle = self.tle
        return {} if tle is None else {"ORBIT_TLE_AGE_D": self._age_d(tle)}

    # -- internals --------------------------------------------------------------------------------

    def _upload(self, args: dict[str, Any], origin: CommandOrigin) -> dict[str, Any]:
        text = "\n".join(line for line in (args["satellite"], args["line1"], args["line2"]) if line)
        try:
            tle = parse_tle(text)
        except TleError as exc:
            raise CommandFailure("BAD_ARGUMENT", str(exc)) from None
        try:
            predictor = self._predictor_from(tle)
        except TleError as exc:
            raise CommandFailure("BAD_ARGUMENT", f"TLE of {tle.catalog_number} cannot be propagated from now: "
                                                 f"{exc}") from None
        try:
            self._store.save(tle.text())
        except sqlite3.Error as exc:
            raise CommandFailure("STORE_ERROR", f"TLE not stored: {exc}") from None
        self._install(tle, predictor, "uplink")
        return {"norad_id": tle.catalog_number, "epoch": _iso(tle)}

    def _predictor_from(self, tle: Tle) -> EclipsePredictor:
        """A predictor with its first window computed from now; TleError if SGP4 fails in it."""
        predictor = EclipsePredictor(tle, self.horizon_s)
        predictor.at(self._clock())
        return predictor

    def _install(self, tle: Tle, predictor: EclipsePredictor, origin: str) -> None:
        with self._lock:
            self.tle, self._predictor, self._window_from = tle, predictor, self._clock()
        self._emit("ORBIT_TLE_LOADED", norad_id=tle.catalog_number, satellite=tle.name or "no name", epoch=_iso(tle),
                   age_d=round(self._age_d(tle), 2), origin=origin)

    def _renew(self, tle: Tle, t: float) -> None:
        """The next window, off the main loop; swapped in unless a new TLE came meanwhile."""
        predictor = EclipsePredictor(tle, self.horizon_s)
        try:
            predictor.at(t)
        except TleError as exc:  # the orbit fails within the next window: stop predicting now
            with self._lock:
                self._renewing = False
            self._unusable(tle, exc)
            return
        with self._lock:
            self._renewing = False
            if self.tle is tle and self._predictor is not None:
                self._predictor, self._window_from = predictor, t

    def _unusable(self, tle: Tle, exc: TleError) -> None:
        with self._lock:
            if self.tle is not tle or self._predictor is None:
                return  # replaced meanwhile, or already reported
            self._predictor = None
        self._fault(f"TLE of {tle.catalog_number} unusable from now on: {exc}")

    def _fault(self, detail: str) -> None:
        self.faults += 1
        self._on_fault("orbit", detail)

    def _age_d(self, tle: Tle) -> float:
        return (self._clock() - tle.epoch.timestamp()) / 86400.0


def _iso(tle: Tle) -> str:
    return tle.epoch.isoformat(timespec="seconds").replace("+00:00", "Z")
