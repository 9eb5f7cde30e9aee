"""The `hil` sensor backend: battery, solar, eclipse timing, temperatures and bus power read from
the HIL rig (or the satellite's EPS board) over a serial line in the sensor-bus frames
(flight/sensors/bus.py), and the node's compute power reported back, which the rig's battery
model needs.

The rig sends a READING whenever its state changes (at least once a second); the latest one is
what read() returns, with the compute power this node last reported. Faults are reported once
through on_fault(kind, detail) and counted in faults, never raised:
  silent   no READING for stale_after_s (a board that stopped or a cable pulled); reported
           again only after READINGs came back (kind "recovered");
  garbled  frames dropped for bad COBS, CRC, kind or fields (counted per frame; reported once
           per burst, i.e. again only after a good frame).
Until the first READING arrives, and while the board is silent, read() gives what the node must
assume knowing nothing: an empty battery, so the scheduler plans no compute (its energy floor
rule), in eclipse with no exit known; the temperature is the last one known (UNKNOWN_C before
any), which plans nothing since the battery already idles compute, and keeps housekeeping finite.
"""
from __future__ import annotations

import itertools
import logging
import threading
import time
from typing import Callable

import serial

from flight.sensors.bus import COMPUTE, READING, Frame, SensorFrameReader, encode_frame
from flight.sensors.reading import SensorReading

log = logging.getLogger(__name__)

FaultListener = Callable[[str, str], object]
UNKNOWN_C = 20.0  # board temperature reported before the first READING (housekeeping needs a number)


class HilSensors:
    def __init__(self, port: str, baud: int = 115200, *, stale_after_s: float = 3.0,
                 on_fault: FaultListener | None = None, clock: Callable[[], float] = time.monotonic):
        self.port = port
        self.baud = baud
        self.stale_after_s = stale_after_s
        self._on_fault = on_fault or (lambda kind, detail: None)
        self._clock = clock
        self._reader = SensorFrameReader()
        self._lock = threading.Lock()
        self._latest: dict | None = None
        self._latest_at = 0.0
        self._compute_w = 0.0
        self._seq = itertools.count()
        self._silent = False
        self._garbled = False
        self.faults = {"silent": 0, "garbled": 0}
        self._serial: serial.SerialBase | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Open the port (serial.SerialException or ValueError if it cannot) and start reading."""
        self._serial = serial.serial_for_url(self.port, baudrate=self.baud, timeout=0.2)
        self._thread = threading.Thread(target=self._receive, name=f"sensors {self.port}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        if self._serial is not None:
            self._serial.close()

    def report_compute_power(self, watts: float) -> None:
        if not watts >= 0:  # also refuses NaN
            raise ValueError(f"compute power must be 0 W or more, got {watts!r}")
        with self._lock:
            self._compute_w = watts
        frame = encode_frame(COMPUTE, next(self._seq), {"t": self._clock(), "compute_w": float(watts)})
        try:
            if self._serial is not None:
                self._serial.write(frame)
        except (serial.SerialException, OSError) as exc:  # the next READING tells the rig's view
            log.warning("sensor bus write failed: %s", exc)

    def read(self) -> SensorReading:
        now = self._clock()
        with self._lock:
            latest, at, compute_w = self._latest, self._latest_at, self._compute_w
        stale = latest is None or now - at > self.stale_after_s
        if stale and latest is not None:
            self._fault_once("silent", f"no READING from {self.port} for {now - at:.1f} s")
        if stale:
            capacity = latest["capacity_wh"] if latest is not None else 1.0
            temps = latest["temps"] if latest is not None else {}
            return SensorReading(time_s=now, battery_wh=0.0, battery_capacity_wh=capacity, solar_w=0.0,
                                 load_w=compute_w, compute_w=compute_w, in_eclipse=True, eclipse_entry_in_s=0.0,
                                 eclipse_exit_in_s=float("inf"),
                                 board_temperature_c=max(temps.values(), default=UNKNOWN_C))
        return SensorReading(
            time_s=latest["t"], battery_wh=latest["battery_wh"], battery_capacity_wh=latest["capacity_wh"],
            solar_w=latest["solar_w"], load_w=latest["bus_w"] + compute_w, compute_w=compute_w,
            in_eclipse=latest["in_eclipse"], eclipse_entry_in_s=latest["entry_s"], eclipse_exit_in_s=latest["exit_s"],
            board_temperature_c=max(latest["temps"].values(), default=UNKNOWN_C))

    def fresh(self) -> bool:
        """A READING arrived within stale_after_s: what read() returns is the board's, not the
        stand-in for a silent one."""
        with self._lock:
            latest, at = self._latest, self._latest_at
        return latest is not None and self._clock() - at <= self.stale_after_s

    @property
    def counters(self) -> dict[str, int]:
        return dict(self._reader.counters)

    def _receive(self) -> None:
        assert self._serial is not None
        while not self._stop.is_set():
            try:
                data = self._serial.read(4096)
            except (serial.SerialException, OSError) as exc:
                log.warning("sensor bus read failed: %s", exc)
                self._stop.wait(0.5)
                continue
            if data:
                self._take(data)

    def _take(self, data: bytes) -> None:
        bad_before = sum(v for k, v in self._reader.counters.items() if k != "FRAMES_OK")
        frames: list[Frame] = self._reader.feed(data)
        bad = sum(v for k, v in self._reader.counters.items() if k != "FRAMES_OK") - bad_before
        if bad:
            self.faults["garbled"] += bad
            if not self._garbled:
                self._garbled = True
                self._on_fault("garbled", f"{bad} bad sensor frame(s) from {self.port}")
        for frame in frames:
            self._garbled = False
            if frame.kind == READING:
                with self._lock:
                    self._latest, self._latest_at = frame.fields, self._clock()
                if self._silent:
                    self._silent = False
                    self._on_fault("recovered", f"READINGs from {self.port} again")

    def _fault_once(self, kind: str, detail: str) -> None:
        if kind == "silent" and not self._silent:
            self._silent = True
            self.faults["silent"] += 1
            self._on_fault(kind, detail)
