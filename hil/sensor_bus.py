"""The rig's end of the sensor bus (frames in flight/sensors/bus.py): it serves READINGs made
from the environment's state, as the satellite's EPS and thermal boards would, and reads the
node's COMPUTE frames back into the environment's power model.

    bus = RigSensorBus(port=None)          # None: a pty pair; the node opens bus.node_path
    bus.serve(env_state)                   # one READING now, from an EnvState
    bus.compute_w                          # the compute power the node reported last (W)

Faults the scenario injects live here, on the wire, because that is where a real board fails:
  silent     nothing is sent (a board that stopped or a cable pulled);
  garbled    every READING goes out with a flipped octet (bad CRC), so only the counters see it;
  brownout   the supply sags: the battery is reported at brownout_wh while it lasts.
"""
from __future__ import annotations

import itertools
import logging
import os
import select
import threading
from typing import Any, Protocol

import serial

from flight.sensors.bus import COMPUTE, READING, SensorFrameReader, encode_frame
from hil.link import OpenError, open_pty

log = logging.getLogger(__name__)


class EnvStateLike(Protocol):
    """The EnvState fields a READING is made of (hil/env/environment.py)."""

    t: float
    battery_wh: float
    battery_capacity_wh: float
    solar_w: float
    bus_load_w: float
    in_eclipse: bool
    eclipse_entry_in_s: float
    eclipse_exit_in_s: float
    board_c: float
    radiator_c: float


# A READING must carry finite times: "no eclipse ahead" is sent as this many seconds.
FAR_S = 1e9


def reading_fields(state: EnvStateLike, *, battery_wh: float | None = None) -> dict[str, Any]:
    """A READING's fields from an environment state (battery_wh: a brownout's reported charge)."""
    def finite(value: float) -> float:
        return float(min(value, FAR_S))

    return {"t": float(state.t), "battery_wh": float(state.battery_wh if battery_wh is None else battery_wh),
            "capacity_wh": float(state.battery_capacity_wh), "solar_w": float(state.solar_w),
            "bus_w": float(state.bus_load_w), "in_eclipse": bool(state.in_eclipse),
            "entry_s": 0.0 if state.in_eclipse else finite(state.eclipse_entry_in_s),
            "exit_s": finite(state.eclipse_exit_in_s),
            "temps": {"board": float(state.board_c), "radiator": float(state.radiator_c)}}


class RigSensorBus:
    """port: the rig's serial device to the node's sensor port, or None for a pty pair (the node
    then opens node_path). Reading COMPUTE runs on a thread of its own until close()."""

    def __init__(self, port: str | None = None, baud: int = 115200):
        self._slave: int | None = None
        self._serial: serial.SerialBase | None = None
        if port is None:
            self._fd, self._slave, self.node_path = open_pty()
            os.set_blocking(self._fd, False)
        else:
            try:
                self._serial = serial.serial_for_url(port, baudrate=baud, timeout=0.2)
            except (serial.SerialException, OSError, ValueError) as exc:
                raise OpenError(port, exc) from exc
            self.node_path = port
        self._reader = SensorFrameReader()
        self._seq = itertools.count()
        self.compute_w = 0.0
        self.readings_sent = 0
        self.silent = False
        self.garbled = False
        self.brownout_wh: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="rig sensor bus", daemon=True)
        self._thread.start()

    @property
    def counters(self) -> dict[str, int]:
        """Frames from the node: good ones and each kind of bad one."""
        return dict(self._reader.counters)

    def serve(self, state: EnvStateLike) -> None:
        """Send one READING of this state, unless the bus is failed silent."""
        if self.silent:
            return
        wire = bytearray(encode_frame(READING, next(self._seq), reading_fields(state, battery_wh=self.brownout_wh)))
        if self.garbled:
            wire[len(wire) // 2] ^= 0x20 if wire[len(wire) // 2] != 0x20 else 0x21  # never a 0x00: one bad frame
        self._write(bytes(wire))
        self.readings_sent += 1

    def _write(self, data: bytes) -> None:
        try:
            if self._serial is not None:
                self._serial.write(data)
            else:
                os.write(self._fd, data)
        except BlockingIOError:  # a node that does not read: what a UART nobody services loses
            pass
        except OSError as exc:
            log.warning("sensor bus write failed: %s", exc)

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                if self._serial is not None:
                    data = self._serial.read(4096)
                elif select.select([self._fd], [], [], 0.2)[0]:
                    data = os.read(self._fd, 4096)
                else:
                    continue
            except OSError as exc:  # the node's end closed (a kill -9): wait for it to come back
                log.debug("sensor bus read: %s", exc)
                self._stop.wait(0.2)
                continue
            for frame in self._reader.feed(data):
                if frame.kind == COMPUTE:
                    self.compute_w = float(frame.fields["compute_w"])  # one store: no lock needed

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        if self._serial is not None:
            self._serial.close()
        else:
            os.close(self._fd)
            if self._slave is not None:
                os.close(self._slave)

    def __enter__(self) -> RigSensorBus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
