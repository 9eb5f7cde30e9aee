"""The `jetson` sensor backend against fake sysfs trees laid out as an Orin Nano's and an AGX
Orin's and a test double of the EPS board on a pty pair speaking the sensor-bus frames: every
value from where it is measured, eclipse timing by its precedence (TLE, EPS, none), a silent or
garbling EPS and odd sysfs files reported once and never fatal."""
from __future__ import annotations

import math
import os
import shutil
import tty

import pytest

from flight.sensors.bus import READING, encode_frame
from flight.sensors.hil import HilSensors
from flight.sensors.jetson_backend import JetsonSensors
from tests.sensors import jetson_trees as trees
from tests.sensors.test_hil_bus import GOOD, Rig, wait

BOARDS = {"orin_nano": trees.orin_nano, "agx_orin": trees.agx_orin}
EPS_HOTTEST_C = max(GOOD["temps"].values())


class Eps:
    """The EPS board's end of the sensor line, and the node's HilSensors on the other end."""

    def __init__(self, stale_after_s: float):
        self.master, self.slave = os.openpty()
        tty.setraw(self.master)
        tty.setraw(self.slave)
        self.faults: list[tuple[str, str]] = []
        self.sensors = HilSensors(os.ttyname(self.slave), stale_after_s=stale_after_s,
                                  on_fault=lambda kind, detail: self.faults.append((kind, detail)))
        self.sensors.start()
        self.rig = Rig(self.master)

    def close(self) -> None:
        self.rig.stop()
        self.sensors.stop()
        os.close(self.master)
        os.close(self.slave)


class Predictor:
    """The node's OrbitService as the backend sees it: None until a TLE is loaded."""

    def __init__(self):
        self.timing: tuple[bool, float, float] | None = None

    def __call__(self, t: float) -> tuple[bool, float, float] | None:
        return self.timing


@pytest.fixture
def eps():
    e = Eps(stale_after_s=0.5)
    yield e
    e.close()


def make(tree, eps: Eps, **kwargs):
    faults: list[tuple[str, str]] = []
    predictor = Predictor()
    sensors = JetsonSensors(str(tree.root), eps.sensors, eclipse=predictor,
                            on_fault=lambda kind, detail: faults.append((kind, detail)), clock=lambda: 1.8e9, **kwargs)
    return sensors, faults, predictor


def fed(sensors: JetsonSensors, eps: Eps, fields: dict = GOOD) -> None:
    eps.rig.send(encode_frame(READING, 1, fields))
    wait(lambda: sensors.read().battery_wh == fields["battery_wh"])


@pytest.mark.parametrize("board", BOARDS)
def test_each_value_comes_from_where_it_is_measured(tmp_path, eps, board):
    tree = BOARDS[board](tmp_path)
    sensors, faults, _ = make(tree, eps)
    fed(sensors, eps)
    sensors.report_compute_power(25.0)  # the plan: a measuring backend keeps its measurement
    r = sensors.read()
    assert (r.time_s, r.battery_wh, r.battery_capacity_wh, r.solar_w) == (1.8e9, 61.5, 100.0, 48.0)
    assert r.compute_w == pytest.approx(tree.input_w, rel=1e-12)
    assert r.load_w == pytest.approx(GOOD["bus_w"] + tree.input_w, rel=1e-12)
    assert r.board_temperature_c == max(tree.temperatures_c.values())  # the Jetson's, not the EPS's 47.25
    assert (r.in_eclipse, r.eclipse_entry_in_s, r.eclipse_exit_in_s) == (False, 300.0, 2400.0)
    assert sensors.eclipse_source == "EPS" and sensors.power_mode == tree.power_mode
    wait(lambda: eps.rig.compute[:1] == [pytest.approx(tree.input_w)])  # the measured draw, told to the EPS
    # a healthy board: only the offline zones are reported (once each), and nothing is counted
    assert sorted(d.split(":")[0] for k, d in faults) == sorted("/" + tree.files[f"temp:{n}"] for n in tree.offline)
    assert {k for k, _ in faults} <= {"offline"}
    assert sum(sensors.faults.values()) == 0 and eps.faults == []


def test_measured_power_goes_to_the_eps_once_a_second_not_every_read(tmp_path, eps):
    tree = trees.orin_nano(tmp_path)
    now = [1.8e9]
    sensors = JetsonSensors(str(tree.root), eps.sensors, clock=lambda: now[0])
    for _ in range(25):  # 2.5 s of 10 Hz ticks
        sensors.read()
        now[0] += 0.1
    wait(lambda: len(eps.rig.compute) == 3)
    assert eps.rig.compute == [pytest.approx(tree.input_w)] * 3


def test_eclipse_timing_precedence_tle_then_eps_then_none(tmp_path):
    tree = trees.orin_nano(tmp_path)
    eps = Eps(stale_after_s=0.3)
    try:
        sensors, faults, predictor = make(tree, eps)
        r = sensors.read()  # nothing yet: no TLE, no READING
        assert (r.in_eclipse, r.eclipse_entry_in_s, r.eclipse_exit_in_s, sensors.eclipse_source) == (True, 0.0, math.inf,
                                                                                                     "NONE")
        assert r.battery_wh == 0.0  # nothing to plan with
        fed(sensors, eps)
        assert sensors.eclipse_source == "EPS"
        predictor.timing = (True, 0.0, 1234.5)  # a TLE is loaded: it wins over the EPS
        r = sensors.read()
        assert (r.in_eclipse, r.eclipse_entry_in_s, r.eclipse_exit_in_s, sensors.eclipse_source) == (True, 0.0, 1234.5,
                                                                                                     "TLE")
        assert r.battery_wh == 61.5
        wait(lambda: not eps.sensors.fresh())  # the EPS falls silent: the TLE still times eclipses
        r = sensors.read()
        assert (r.eclipse_exit_in_s, sensors.eclipse_source, r.battery_wh) == (1234.5, "TLE", 0.0)
        predictor.timing = None  # and without a usable TLE either: none
        r = sensors.read()
        assert (r.in_eclipse, r.eclipse_exit_in_s, sensors.eclipse_source) == (True, math.inf, "NONE")
        assert [k for k, _ in eps.faults] == ["silent"]
    finally:
        eps.close()


def test_a_silent_eps_is_reported_once_and_leaves_the_jetson_values(tmp_path, eps):
    tree = trees.agx_orin(tmp_path)
    sensors, _, _ = make(tree, eps)
    fed(sensors, eps)
    wait(lambda: not eps.sensors.fresh())
    for _ in range(5):
        r = sensors.read()
        assert r.battery_wh == 0.0 and r.solar_w == 0.0 and r.in_eclipse
        assert r.compute_w == pytest.approx(tree.input_w) and r.load_w == pytest.approx(tree.input_w)
        assert r.board_temperature_c == max(tree.temperatures_c.values())
    assert [k for k, _ in eps.faults] == ["silent"] and sensors.faults == {"silent": 1, "garbled": 0}


def test_a_garbling_eps_costs_its_bad_frames_and_is_reported_once(tmp_path, eps):
    tree = trees.orin_nano(tmp_path)
    sensors, _, _ = make(tree, eps)
    good = encode_frame(READING, 1, GOOD)
    flipped = bytearray(good)
    flipped[5] ^= 0x01
    eps.rig.send(bytes(flipped) * 3 + b"\x13\x37 noise \x00" + good)
    wait(lambda: sensors.read().battery_wh == 61.5)
    assert sensors.read().compute_w == pytest.approx(tree.input_w)
    assert [k for k, _ in eps.faults] == ["garbled"] and sensors.faults == {"silent": 0, "garbled": 4}


def gone(path):
    os.remove(path)


def garbage(path):
    path.write_text("N/A\n")


def unreadable(path):  # EISDIR: unreadable even for root, which reads a chmod 000 file
    os.remove(path)
    path.mkdir()


@pytest.mark.parametrize("corrupt, kind", [(gone, "missing"), (garbage, "garbage"), (unreadable, "unreadable")])
@pytest.mark.parametrize("board, rail", [("orin_nano", "VDD_IN"), ("agx_orin", "VDDQ_VDD2_1V8AO")])
def test_an_odd_rail_file_puts_the_planned_power_in_and_is_one_fault(tmp_path, eps, board, rail, corrupt, kind):
    tree = BOARDS[board](tmp_path)
    sensors, faults, _ = make(tree, eps)
    fed(sensors, eps)
    corrupt(tmp_path / tree.files[f"curr:{rail}"])
    sensors.report_compute_power(15.0)
    for _ in range(5):
        r = sensors.read()
        assert r.compute_w == 15.0 and r.load_w == pytest.approx(GOOD["bus_w"] + 15.0)
    path = "/" + tree.files[f"curr:{rail}"]
    assert [(k, d.split(":")[0]) for k, d in faults if k != "offline"] == [(kind, path)]
    assert sensors.faults == {"silent": 0, "garbled": 0, kind: 1}  # once, not once a read


def test_the_configured_zone_is_the_board_temperature_while_it_reads(tmp_path, eps):
    tree = trees.orin_nano(tmp_path)
    sensors, faults, _ = make(tree, eps, board_zone="soc1-thermal")
    assert sensors.read().board_temperature_c == 46.25
    trees.write(tmp_path, tree.files["temp:soc1-thermal"], "-256000\n")  # it goes offline: the hottest
    assert sensors.read().board_temperature_c == 47.093
    assert sum(sensors.faults.values()) == 0


def test_a_configured_zone_that_does_not_exist_is_one_fault(tmp_path, eps):
    tree = trees.agx_orin(tmp_path)
    sensors, faults, _ = make(tree, eps, board_zone="tj-thermal")  # JetPack 6's name on a JetPack 5 board
    for _ in range(3):
        assert sensors.read().board_temperature_c == max(tree.temperatures_c.values())
    assert [k for k, d in faults if "tj-thermal" in d] == ["missing"]
    assert sensors.faults["missing"] == 1


def test_without_any_zone_the_eps_temperature_stands_in(tmp_path, eps):
    tree = trees.orin_nano(tmp_path)
    sensors, faults, _ = make(tree, eps)
    fed(sensors, eps)
    shutil.rmtree(tmp_path / trees.THERMAL)
    for _ in range(3):
        assert sensors.read().board_temperature_c == EPS_HOTTEST_C
    assert sensors.faults["missing"] == 9  # each zone's file, once


def test_an_empty_root_never_raises(tmp_path, eps):
    sensors, faults, _ = make(trees.Tree(tmp_path, {}, 0, {}, [], 0, ""), eps)
    fed(sensors, eps)
    sensors.report_compute_power(7.0)
    r = sensors.read()
    assert r.compute_w == 7.0 and r.board_temperature_c == EPS_HOTTEST_C and r.battery_wh == 61.5
    assert {d.split(":")[0] for _, d in faults} == {"/etc/nvpmodel.conf", "/sys/bus/i2c/drivers/ina3221",
                                                    "/sys/devices/virtual/thermal", "/var/lib/nvpmodel/status"}


def test_negative_or_nan_planned_power_is_refused(tmp_path, eps):
    sensors, _, _ = make(trees.orin_nano(tmp_path), eps)
    for bad in (-1.0, math.nan):
        with pytest.raises(ValueError):
            sensors.report_compute_power(bad)
