"""The jetson sensor component against fake sysfs trees laid out as an Orin Nano's and an AGX
Orin's: exact watts and temperatures, and whatever is wrong with a file, read() never raises, the
value is left out, the fault is reported once per (path, kind) and counted every time."""
import math
import os
import shutil

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from flight.sensors.jetson import JetsonSysfs
from tests.sensors import jetson_trees as trees

BOARDS = {"orin_nano": trees.orin_nano, "agx_orin": trees.agx_orin}


class Faults:
    def __init__(self):
        self.calls = []

    def __call__(self, kind, path, detail):
        assert isinstance(detail, str) and detail
        self.calls.append((kind, path))

    @property
    def unique(self):
        return len(set(self.calls)) == len(self.calls)


def make(tree, **kwargs):
    faults = Faults()
    return JetsonSysfs(str(tree.root), on_fault=faults, **kwargs), faults


def check_invariants(reading, sensors):
    for watts in reading.rails.values():
        assert math.isfinite(watts) and watts >= 0
    for celsius in reading.temperatures_c.values():
        assert -80 <= celsius <= 150
    online = [t for n, t in reading.temperatures_c.items() if "PMIC" not in n]
    assert reading.board_temperature_c == (max(online) if online else None)
    names = [r.name for r in sensors.rails]
    total = next((n for n in names if n in ("VDD_IN", "POM_5V_IN")), None)
    if total:
        assert reading.input_w == reading.rails.get(total)
    elif reading.input_w is not None:
        assert set(reading.rails) == set(names) and reading.input_w == pytest.approx(sum(reading.rails.values()))
    assert (reading.power_mode_name is None) or sensors.mode_names[reading.power_mode] == reading.power_mode_name


@pytest.mark.parametrize("board", BOARDS)
def test_a_healthy_board_reads_exactly(tmp_path, board):
    tree = BOARDS[board](tmp_path)
    sensors, faults = make(tree, clock=lambda: 123.5)
    for _ in range(3):
        reading = sensors.read()
        check_invariants(reading, sensors)
        assert reading.time_s == 123.5
        assert reading.rails == pytest.approx(tree.rails, rel=1e-12)
        assert reading.input_w == pytest.approx(tree.input_w, rel=1e-12)
        assert reading.temperatures_c == pytest.approx(tree.temperatures_c, rel=1e-12)
        assert reading.board_temperature_c == max(tree.temperatures_c.values())
        assert (reading.power_mode, reading.power_mode_name) == (tree.power_mode, tree.power_mode_name)
    # the only faults on a healthy board are the offline zones, each reported once, counted each read
    assert sorted(p for _, p in faults.calls) == sorted("/" + tree.files[f"temp:{n}"] for n in tree.offline)
    assert {k for k, _ in faults.calls} <= {"offline"}
    assert sensors.faults == ({"offline": 3 * len(tree.offline)} if tree.offline else {})


def test_orin_nano_input_is_vdd_in_and_agx_input_is_the_sum(tmp_path):
    nano = JetsonSysfs(str(trees.orin_nano(tmp_path / "nano").root)).read()
    agx = JetsonSysfs(str(trees.agx_orin(tmp_path / "agx").root)).read()
    assert nano.input_w == nano.rails["VDD_IN"] == 5008 * 1232 / 1e6
    assert nano.input_w < sum(nano.rails.values())  # VDD_IN already includes the others
    assert "NC" not in agx.rails and "sum of shunt voltages" not in agx.rails
    assert set(agx.rails) == {"VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0", "VDDQ_VDD2_1V8AO"}
    assert agx.input_w == pytest.approx(sum(agx.rails.values()), rel=1e-12)


def test_the_older_iio_layout_and_pmic_zones(tmp_path):
    tree = trees.legacy_nano(tmp_path)
    reading = JetsonSysfs(str(tmp_path)).read()
    assert reading.rails == pytest.approx(tree.rails) and reading.input_w == pytest.approx(4.0)
    assert reading.temperatures_c["PMIC-Die"] == 100.0 and reading.board_temperature_c == 30.5


def test_a_hotter_board_sensor_sets_the_board_temperature(tmp_path):
    tree = trees.agx_orin(tmp_path)
    trees.write(tmp_path, tree.files["temp:Tboard_tegra"], "61500\n")
    assert JetsonSysfs(str(tmp_path)).read().board_temperature_c == 61.5


# --- odd files ---

def gone(path):
    os.remove(path)


def garbage(path):
    path.write_text("N/A\n")


def empty(path):
    path.write_text("")


def binary(path):
    path.write_bytes(b"\xff\xfe\x00\x81")


def directory(path):  # reading it fails with EISDIR: an unreadable file, even for root
    os.remove(path)
    path.mkdir()


ABSURD = {"volt": "30000\n", "curr": "-99999\n", "temp": "200000\n", "status": "pmode:0042\n"}

CORRUPTIONS = {"missing": gone, "garbage": garbage, "empty": empty, "binary": binary, "directory": directory,
               "absurd": None}
KIND = {"missing": "missing", "garbage": "garbage", "empty": "empty", "binary": "garbage",
        "directory": "unreadable", "absurd": "absurd"}

# (board, file handle, what must be left out of the reading, what must stay)
TARGETS = [
    ("orin_nano", "volt:VDD_IN", lambda r: "VDD_IN" not in r.rails and r.input_w is None),
    ("orin_nano", "curr:VDD_SOC", lambda r: "VDD_SOC" not in r.rails and r.input_w == r.rails["VDD_IN"]),
    ("agx_orin", "curr:VDDQ_VDD2_1V8AO", lambda r: "VDDQ_VDD2_1V8AO" not in r.rails and r.input_w is None
     and len(r.rails) == 3),
    ("orin_nano", "temp:tj-thermal", lambda r: "tj-thermal" not in r.temperatures_c
     and r.board_temperature_c == 46.25),
    ("agx_orin", "temp:Tboard_tegra", lambda r: "Tboard_tegra" not in r.temperatures_c
     and r.board_temperature_c == 52.343),
    ("agx_orin", "status", lambda r: r.power_mode_name is None and r.power_mode in (None, 42)),
]


@pytest.mark.parametrize("corruption", CORRUPTIONS)
@pytest.mark.parametrize("board, handle, left_out", TARGETS, ids=[t[1] for t in TARGETS])
def test_an_odd_file_is_left_out_reported_once_and_counted(tmp_path, board, handle, left_out, corruption):
    tree = BOARDS[board](tmp_path)
    sensors, faults = make(tree)
    healthy = sensors.read()
    path = tmp_path / tree.files[handle]
    if corruption == "absurd":
        path.write_text(ABSURD[handle.split(":")[0]])
    else:
        CORRUPTIONS[corruption](path)
    before = dict(sensors.faults)
    kind = KIND[corruption]
    for _ in range(4):
        reading = sensors.read()
        check_invariants(reading, sensors)
        assert left_out(reading)
        # everything else is as it was
        assert {k: v for k, v in reading.rails.items()} == {k: v for k, v in healthy.rails.items() if k in reading.rails}
        assert len(reading.rails) >= len(healthy.rails) - 1
        assert len(reading.temperatures_c) >= len(healthy.temperatures_c) - 1
    assert faults.unique
    assert faults.calls.count((kind, "/" + tree.files[handle])) == 1
    assert sensors.faults.get(kind, 0) - before.get(kind, 0) == 4


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a chmod 000 file (the EISDIR case covers the path)")
def test_a_file_without_read_permission_is_unreadable(tmp_path):
    tree = trees.orin_nano(tmp_path)
    sensors, faults = make(tree)
    path = tmp_path / tree.files["volt:VDD_SOC"]
    path.chmod(0)
    try:
        reading = sensors.read()
        reading = sensors.read()
    finally:
        path.chmod(0o644)
    assert "VDD_SOC" not in reading.rails
    assert faults.calls.count(("unreadable", "/" + tree.files["volt:VDD_SOC"])) == 1


def test_a_rail_that_disappears_and_comes_back(tmp_path):
    tree = trees.agx_orin(tmp_path)
    sensors, faults = make(tree)
    assert sensors.read().input_w == pytest.approx(tree.input_w)
    second = tmp_path / "sys/bus/i2c/drivers/ina3221/1-0041"
    shutil.move(second, tmp_path / "unbound")  # driver unbound: the whole device goes
    for _ in range(3):
        reading = sensors.read()
        assert "VDDQ_VDD2_1V8AO" not in reading.rails and reading.input_w is None
        assert reading.rails == pytest.approx({k: v for k, v in tree.rails.items() if k != "VDDQ_VDD2_1V8AO"})
    assert sorted(faults.calls) == [("missing", "/sys/bus/i2c/drivers/ina3221/1-0041/hwmon/hwmon4/curr2_input"),
                                    ("missing", "/sys/bus/i2c/drivers/ina3221/1-0041/hwmon/hwmon4/in2_input")]
    assert sensors.faults == {"missing": 6}
    shutil.move(tmp_path / "unbound", second)  # rebound at the same place: values come back
    assert sensors.read().input_w == pytest.approx(tree.input_w)
    assert len(faults.calls) == 2


def test_a_whole_board_disappearing_never_raises(tmp_path):
    tree = trees.orin_nano(tmp_path)
    sensors, faults = make(tree)
    shutil.rmtree(tmp_path / "sys")
    shutil.rmtree(tmp_path / "var")
    for _ in range(2):
        reading = sensors.read()
        assert reading.rails == {} and reading.input_w is None and reading.temperatures_c == {}
        assert reading.board_temperature_c is None and reading.power_mode is None
    assert faults.unique and {k for k, _ in faults.calls} == {"missing"}
    assert len(faults.calls) == 2 * 3 + 9 + 1  # volt and curr of 3 rails, 9 zones, the status
    assert sensors.faults == {"missing": 2 * len(faults.calls)}


def test_an_empty_root_is_reported_not_fatal(tmp_path):
    sensors, faults = make(trees.Tree(tmp_path, {}, 0, {}, [], 0, ""))
    reading = sensors.read()
    assert (reading.input_w, reading.rails, reading.temperatures_c, reading.board_temperature_c,
            reading.power_mode, reading.power_mode_name) == (None, {}, {}, None, None, None)
    assert sorted(faults.calls) == [("missing", "/etc/nvpmodel.conf"), ("missing", "/sys/bus/i2c/drivers/ina3221"),
                                    ("missing", "/sys/devices/virtual/thermal"), ("missing", "/var/lib/nvpmodel/status")]


def test_a_broken_fault_reporter_does_not_break_the_reading(tmp_path):
    tree = trees.orin_nano(tmp_path)

    def explode(*_):
        raise RuntimeError("reporter down")

    sensors = JetsonSysfs(str(tmp_path), on_fault=explode)
    assert sensors.read().input_w == pytest.approx(tree.input_w)
    assert sensors.faults["offline"] == 4


def test_unlabelled_channels_and_odd_labels_at_discovery(tmp_path):
    trees.ina3221(tmp_path, "1-0040", "hwmon1", [("VDD_IN", 5000, 1000), None, ("", 5000, 100)])
    trees.write(tmp_path, "sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon1/in3_label", b"\xff\xff")
    sensors, faults = make(trees.Tree(tmp_path, {}, 0, {}, [], 0, ""))
    assert [r.name for r in sensors.rails] == ["VDD_IN"]
    assert ("garbage", "/sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon1/in3_label") in faults.calls
    assert sensors.read().input_w == 5.0


def test_duplicate_names_do_not_hide_each_other(tmp_path):
    trees.ina3221(tmp_path, "1-0040", "hwmon1", [("VDD_X", 5000, 100), None, None])
    trees.ina3221(tmp_path, "1-0041", "hwmon2", [("VDD_X", 5000, 300), None, None])
    trees.zones(tmp_path, [("soc-thermal", 40000)] * 11)
    sensors = JetsonSysfs(str(tmp_path))
    reading = sensors.read()
    assert reading.rails == pytest.approx({"VDD_X": 0.5, "VDD_X#2": 1.5}) and reading.input_w == pytest.approx(2.0)
    assert len(reading.temperatures_c) == 11 and "soc-thermal#11" in reading.temperatures_c


# --- nvpmodel ---

@pytest.mark.parametrize("status, mode", [("pmode:0002\n", 2), ("pmode:0000 fmode:quiet\n", 0), ("pmode:3", 3),
                                          ("pmode: 0001\n", 1)])
def test_nvpmodel_status_is_parsed(tmp_path, status, mode):
    trees.nvpmodel(tmp_path, 0, [(0, "15W"), (1, "25W"), (2, "MAXN_SUPER"), (3, "7W")])
    trees.write(tmp_path, "var/lib/nvpmodel/status", status)
    sensors, faults = make(trees.Tree(tmp_path, {}, 0, {}, [], 0, ""))
    reading = sensors.read()
    assert reading.power_mode == mode and reading.power_mode_name == ["15W", "25W", "MAXN_SUPER", "7W"][mode]
    assert sensors.mode_names == {0: "15W", 1: "25W", 2: "MAXN_SUPER", 3: "7W"}  # the commented line is no mode


@pytest.mark.parametrize("status", ["hello\n", "mode:2\n", "pmode:\n", "0002\n"])
def test_garbage_nvpmodel_status_is_a_fault(tmp_path, status):
    trees.nvpmodel(tmp_path, 0, [(0, "15W")])
    trees.write(tmp_path, "var/lib/nvpmodel/status", status)
    sensors, faults = make(trees.Tree(tmp_path, {}, 0, {}, [], 0, ""))
    assert (sensors.read().power_mode, sensors.read().power_mode_name) == (None, None)
    assert faults.calls.count(("garbage", "/var/lib/nvpmodel/status")) == 1 and sensors.faults["garbage"] == 2


@pytest.mark.parametrize("conf", ["", "garbage\n\x00\n", "POWER_MODEL ID=0 NAME=15W\n", "# < POWER_MODEL ID=0 NAME=15W >\n"])
def test_garbage_nvpmodel_conf_leaves_the_mode_without_a_name(tmp_path, conf):
    trees.write(tmp_path, "var/lib/nvpmodel/status", "pmode:0000\n")
    trees.write(tmp_path, "etc/nvpmodel.conf", conf)
    sensors, faults = make(trees.Tree(tmp_path, {}, 0, {}, [], 0, ""))
    reading = sensors.read()
    assert (reading.power_mode, reading.power_mode_name) == (0, None)
    assert [k for k, p in faults.calls if p == "/etc/nvpmodel.conf"] == ["empty" if conf == "" else "garbage"]


def test_a_missing_nvpmodel_conf_still_gives_the_mode(tmp_path):
    trees.write(tmp_path, "var/lib/nvpmodel/status", "pmode:0001\n")
    sensors, faults = make(trees.Tree(tmp_path, {}, 0, {}, [], 0, ""))
    assert (sensors.read().power_mode, sensors.read().power_mode_name) == (1, None)
    assert ("missing", "/etc/nvpmodel.conf") in faults.calls


# --- anything in any file ---

VALUES = st.one_of(st.binary(max_size=12), st.integers(-10**12, 10**12).map(lambda i: f"{i}\n".encode()),
                   st.sampled_from([b"", b"\n", b"-256000\n", b"pmode:0002\n", b"12.5\n", b" 42 \n"]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(board=st.sampled_from(sorted(BOARDS)), data=st.data())
def test_anything_in_any_value_file_never_raises(tmp_path_factory, board, data):
    root = tmp_path_factory.mktemp(board)
    tree = BOARDS[board](root)
    sensors, faults = make(tree)
    for _ in range(3):
        for handle in data.draw(st.lists(st.sampled_from(sorted(tree.files)), max_size=6, unique=True)):
            trees.write(root, tree.files[handle], data.draw(VALUES))
        check_invariants(sensors.read(), sensors)
    assert faults.unique
    assert sum(sensors.faults.values()) >= len(faults.calls)
