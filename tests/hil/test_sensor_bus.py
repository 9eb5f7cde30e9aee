"""The rig's end of the sensor bus (hil/sensor_bus.py) against the node's own `hil` backend over
a real pty: the environment's state arrives as the node's SensorReading, compute power comes back,
and the injected bus faults (silent, garbled, brownout) look to the node as a failing board would."""
from __future__ import annotations

import time
from dataclasses import dataclass

import pytest

from flight.sensors.hil import HilSensors
from hil.sensor_bus import FAR_S, RigSensorBus, reading_fields


@dataclass(frozen=True)
class State:
    t: float = 5400.0
    battery_wh: float = 70.0
    battery_capacity_wh: float = 100.0
    solar_w: float = 40.0
    bus_load_w: float = 9.0
    in_eclipse: bool = False
    eclipse_entry_in_s: float = 1200.0
    eclipse_exit_in_s: float = 3300.0
    board_c: float = 35.0
    radiator_c: float = 10.0


def wait(predicate, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "condition not met"
        time.sleep(0.01)


@pytest.fixture
def joined():
    faults: list[str] = []
    with RigSensorBus() as rig:
        node = HilSensors(rig.node_path, stale_after_s=0.5, on_fault=lambda kind, detail: faults.append(kind))
        node.start()
        yield rig, node, faults
        node.stop()


def test_the_environment_reaches_the_node_and_compute_power_comes_back(joined):
    rig, node, faults = joined
    rig.serve(State())
    wait(lambda: node.read().battery_wh == 70.0)
    r = node.read()
    assert (r.time_s, r.solar_w, r.in_eclipse, r.eclipse_entry_in_s, r.eclipse_exit_in_s) == (5400.0, 40.0, False,
                                                                                             1200.0, 3300.0)
    assert r.board_temperature_c == 35.0  # the hottest sensor
    node.report_compute_power(12.5)
    wait(lambda: rig.compute_w == 12.5)
    assert faults == [] and rig.counters["FRAMES_OK"] == 1


def test_no_eclipse_ahead_is_sent_as_a_finite_far_time_and_eclipse_has_no_entry():
    fields = reading_fields(State(in_eclipse=True, eclipse_entry_in_s=0.0, eclipse_exit_in_s=float("inf")))
    assert fields["entry_s"] == 0.0 and fields["exit_s"] == FAR_S


def test_a_brownout_reports_the_sagging_supply_and_ends(joined):
    rig, node, _ = joined
    rig.brownout_wh = 5.0
    rig.serve(State())
    wait(lambda: node.read().battery_wh == 5.0)
    rig.brownout_wh = None
    rig.serve(State())
    wait(lambda: node.read().battery_wh == 70.0)


def test_a_garbled_bus_costs_the_node_its_frames_and_a_silent_one_goes_stale(joined):
    rig, node, faults = joined
    rig.garbled = True
    rig.serve(State())
    wait(lambda: faults == ["garbled"])
    assert node.read().battery_wh == 0.0  # nothing good arrived: the node assumes an empty battery
    rig.garbled = False
    rig.serve(State())
    wait(lambda: node.read().battery_wh == 70.0)
    rig.silent = True
    rig.serve(State())
    wait(lambda: node.read().battery_wh == 0.0)
    assert faults == ["garbled", "silent"]
