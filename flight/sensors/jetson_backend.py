"""The `jetson` sensor backend: the node on its flight board.

Each value from where it is measured:
- compute_w: the Jetson module's input power from its INA3221 monitors (jetson.py: VDD_IN, or
  the sum of the rails on an AGX Orin). Measured, so report_compute_power does not set it; the
  executive's planned power stands in only while the rails cannot all be read (a fault jetson.py
  reports), being the best estimate there is then.
- board_temperature_c: the configured thermal zone (board_zone) while it reads, else the hottest
  online zone (jetson.py); if no zone reads at all, the EPS board's hottest sensor.
- battery, solar and bus load: the satellite's EPS board on the sensor bus, in the frames of
  the hil backend (bus.py), read by HilSensors: the EPS speaks the rig's protocol, and on the
  bench the rig stands in for it. A silent EPS gives HilSensors' stand-in, an empty battery, so
  nothing is planned. load_w is the EPS's bus load (without compute, as the frame defines it)
  plus the measured compute_w, which goes back to the EPS once a second in COMPUTE frames (the
  rig's battery model needs it; an EPS board may ignore them).
- eclipse timing, first of:
    TLE   onboard SGP4 from the TLE the ground uplinked (TLE_UPLOAD; the node's OrbitService),
    EPS   the EPS's READING, while it is fresh,
    NONE  in eclipse with no exit known: the conservative stand-in a silent EPS gives too.
  The TLE comes first because it gives the timing ahead (entry and exit) from the orbit itself,
  where an EPS board knows at best whether its arrays see the Sun now; the EPS covers the time
  before the first upload and a TLE that SGP4 can no longer propagate.
  eclipse_source names the one in use (the ORBIT_ECLIPSE_SOURCE channel).
- power_mode: the nvpmodel mode the board is in (jetson.py), for housekeeping.

Faults go to on_fault(kind, detail). The Jetson's files (jetson.py) and a configured zone that
does not exist are reported once each and counted once each in faults: counting every read at
10 Hz would turn the count into a clock. An offline zone (-256 °C) is reported but not counted:
JetPack 6 keeps an Orin Nano's GPU and CV zones offline on a healthy board, whose SENSOR_FAULTS
must read 0. The EPS's faults (silent, garbled) are HilSensors', which reports them itself.
"""
from __future__ import annotations

import math
import time
from typing import Callable

from flight.sensors.hil import FaultListener, HilSensors
from flight.sensors.jetson import MISSING, OFFLINE, JetsonReading, JetsonSysfs
from flight.sensors.reading import SensorReading

# Unix s -> (in eclipse, s to the next entry, s to the next exit), or None without a usable TLE
EclipseTiming = Callable[[float], tuple[bool, float, float] | None]
COMPUTE_REPORT_PERIOD_S = 1.0


class JetsonSensors:
    def __init__(self, root: str, eps: HilSensors, *, eclipse: EclipseTiming = lambda t: None,
                 board_zone: str | None = None, on_fault: FaultListener | None = None,
                 clock: Callable[[], float] = time.time):
        """root: the directory holding the board's sys/, var/lib/nvpmodel/ and etc/ (/ on the
        board); eps: the EPS board's sensor bus, started; clock: UTC, Unix seconds."""
        self._eps = eps
        self._eclipse = eclipse
        self._zone = board_zone
        self._on_fault = on_fault or (lambda kind, detail: None)
        self._clock = clock
        self._board_faults: dict[str, int] = {}  # replaced, never changed in place: housekeeping reads it
        self._planned_w = 0.0
        self._reported_at = -math.inf
        self.eclipse_source = "NONE"
        self.power_mode: int | None = None
        self.board = JetsonSysfs(root, on_fault=self._board_fault)
        if board_zone is not None and board_zone not in {zone.name for zone in self.board.zones}:
            self._board_fault(MISSING, "/sys/devices/virtual/thermal",
                              f"no thermal zone of type {board_zone!r} (board_zone); the hottest zone is used")

    @property
    def faults(self) -> dict[str, int]:
        return {**self._eps.faults, **self._board_faults}

    def stop(self) -> None:
        self._eps.stop()

    def report_compute_power(self, watts: float) -> None:
        if not watts >= 0:  # also refuses NaN
            raise ValueError(f"compute power must be 0 W or more, got {watts!r}")
        self._planned_w = watts

    def read(self) -> SensorReading:
        now = self._clock()
        board = self.board.read()
        self.power_mode = board.power_mode
        eps = self._eps.read()
        compute_w = board.input_w if board.input_w is not None else self._planned_w
        if abs(now - self._reported_at) >= COMPUTE_REPORT_PERIOD_S:  # abs: a clock set back still reports
            self._reported_at = now
            self._eps.report_compute_power(compute_w)
        (in_eclipse, entry_s, exit_s), self.eclipse_source = self._eclipse_timing(now, eps)
        return SensorReading(
            time_s=now, battery_wh=eps.battery_wh, battery_capacity_wh=eps.battery_capacity_wh, solar_w=eps.solar_w,
            load_w=eps.load_w - eps.compute_w + compute_w, compute_w=compute_w, in_eclipse=in_eclipse,
            eclipse_entry_in_s=entry_s, eclipse_exit_in_s=exit_s, board_temperature_c=self._temperature(board, eps))

    def _eclipse_timing(self, now: float, eps: SensorReading) -> tuple[tuple[bool, float, float], str]:
        predicted = self._eclipse(now)
        if predicted is not None:
            return predicted, "TLE"
        if self._eps.fresh():
            return (eps.in_eclipse, eps.eclipse_entry_in_s, eps.eclipse_exit_in_s), "EPS"
        return (True, 0.0, math.inf), "NONE"

    def _temperature(self, board: JetsonReading, eps: SensorReading) -> float:
        if self._zone is not None and self._zone in board.temperatures_c:
            return board.temperatures_c[self._zone]
        if board.board_temperature_c is not None:
            return board.board_temperature_c
        return eps.board_temperature_c

    def _board_fault(self, kind: str, path: str, detail: str) -> None:
        if kind != OFFLINE:
            self._board_faults = {**self._board_faults, kind: self._board_faults.get(kind, 0) + 1}
        self._on_fault(kind, f"{path}: {detail}")
