"""The sensor bus (flight/sensors/bus.py) and the `hil` backend over a real pty pair, against a
test double of the rig that speaks the documented frames: values arrive, compute power goes back,
a garbling board costs only its bad frames, a silent board is reported once and read() turns
conservative (no energy to plan with) until READINGs come back."""
from __future__ import annotations

import os
import threading
import time

import pytest
from hypothesis import given, settings, strategies as st

from flight.sensors.bus import COMPUTE, READING, FrameError, SensorFrameReader, decode_frame, encode_frame
from flight.sensors.hil import HilSensors

GOOD = {"t": 120.0, "battery_wh": 61.5, "capacity_wh": 100.0, "solar_w": 48.0, "bus_w": 11.0, "in_eclipse": False,
        "entry_s": 300.0, "exit_s": 2400.0, "temps": {"board": 41.5, "gpu": 47.25}}


def test_a_frame_round_trips_and_every_corruption_is_refused():
    wire = encode_frame(READING, 7, GOOD)
    frame = decode_frame(wire[:-1])
    assert (frame.kind, frame.seq, frame.fields) == (READING, 7, GOOD)
    body = bytearray(wire[:-1])
    for i in range(len(body)):
        corrupt = bytearray(body)
        corrupt[i] ^= 0x40
        with pytest.raises(FrameError):
            decode_frame(bytes(corrupt).replace(b"\x00", b"\x01"))


@pytest.mark.parametrize("field, value", [("battery_wh", float("nan")), ("battery_wh", 150.0), ("capacity_wh", 0),
                                          ("in_eclipse", 1), ("temps", {"board": "hot"}), ("t", None)])
def test_bad_fields_are_refused(field, value):
    with pytest.raises(FrameError) as refused:
        encode_frame(READING, 1, {**GOOD, field: value})
    assert refused.value.reason == "BAD_BODY" and len(str(refused.value).splitlines()) == 1


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_the_reader_never_raises_on_garbage_and_resynchronises(noise):
    reader = SensorFrameReader()
    frames = reader.feed(noise + b"\x00" + encode_frame(READING, 3, GOOD))
    assert frames and frames[-1].fields == GOOD


class Rig:
    """The test double: the rig's end of the sensor line."""

    def __init__(self, fd: int):
        self.fd = fd
        self.compute: list[float] = []
        self.reader = SensorFrameReader()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, daemon=True)
        self._thread.start()

    def send(self, data: bytes) -> None:
        os.write(self.fd, data)

    def _listen(self) -> None:
        import select
        while not self._stop.is_set():
            if select.select([self.fd], [], [], 0.1)[0]:
                for frame in self.reader.feed(os.read(self.fd, 4096)):
                    if frame.kind == COMPUTE:
                        self.compute.append(frame.fields["compute_w"])

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture
def bus():
    master, slave = os.openpty()
    import tty
    tty.setraw(master)
    tty.setraw(slave)
    faults: list[tuple[str, str]] = []
    sensors = HilSensors(os.ttyname(slave), stale_after_s=0.5, on_fault=lambda kind, detail: faults.append((kind, detail)))
    sensors.start()
    rig = Rig(master)
    yield sensors, rig, faults
    rig.stop()
    sensors.stop()
    os.close(master)
    os.close(slave)


def wait(predicate, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "condition not met"
        time.sleep(0.01)


def test_readings_arrive_and_compute_power_goes_back(bus):
    sensors, rig, faults = bus
    rig.send(encode_frame(READING, 1, GOOD))
    wait(lambda: sensors.read().battery_wh == 61.5)
    sensors.report_compute_power(15.0)
    r = sensors.read()
    assert (r.time_s, r.solar_w, r.in_eclipse, r.eclipse_entry_in_s, r.eclipse_exit_in_s) == (120.0, 48.0, False, 300.0,
                                                                                             2400.0)
    assert r.board_temperature_c == 47.25 and r.compute_w == 15.0 and r.load_w == 26.0
    wait(lambda: rig.compute == [15.0])
    assert faults == []


def test_a_garbling_board_costs_its_bad_frames_only_and_is_reported_once(bus):
    sensors, rig, faults = bus
    good = encode_frame(READING, 1, GOOD)
    flipped = bytearray(good)
    flipped[5] ^= 0x01
    rig.send(bytes(flipped) * 3 + b"\xff\xfe garbage \x00" + good)
    wait(lambda: sensors.read().battery_wh == 61.5)
    assert sensors.faults["garbled"] == 4 and [k for k, _ in faults] == ["garbled"]
    assert sensors.counters["BAD_CRC"] + sensors.counters["BAD_FRAME"] == 4


def test_a_silent_board_is_reported_once_and_reads_turn_conservative(bus):
    sensors, rig, faults = bus
    rig.send(encode_frame(READING, 1, GOOD))
    wait(lambda: sensors.read().battery_wh == 61.5)
    time.sleep(0.7)
    for _ in range(3):
        r = sensors.read()
        assert r.battery_wh == 0.0 and r.in_eclipse and r.board_temperature_c == 47.25
    assert [k for k, _ in faults] == ["silent"] and sensors.faults["silent"] == 1
    rig.send(encode_frame(READING, 2, {**GOOD, "battery_wh": 60.0}))
    wait(lambda: sensors.read().battery_wh == 60.0)
    assert [k for k, _ in faults] == ["silent", "recovered"]


def test_before_the_first_reading_nothing_is_planned(bus):
    sensors, _, faults = bus
    r = sensors.read()
    assert r.battery_wh == 0.0 and r.battery_capacity_wh > 0 and faults == []
