"""What a Jetson can tell about itself: compute power, temperatures, power mode.

This is the measuring half of the `jetson` sensor backend. Battery, solar and eclipse timing do
not come from the Jetson (they come from the EPS board and onboard SGP4), so this is a component
that a SensorBackend combines with those, not a SensorBackend itself.

Where the numbers come from (every path is under `root`, so tests point it at a fake tree):

- power: the INA3221 monitors, one hwmon directory per chip,
  sys/bus/i2c/drivers/ina3221/*/hwmon/hwmon*/ with inN_label, inN_input (bus voltage, mV) and
  currN_input (mA) for channels N = 1..3 (kernel Documentation/hwmon/ina3221.rst; in4..in7 are
  shunt voltages and their sum, not rails). A channel without a label, or labelled "NC" (not
  connected: AGX Orin's second INA3221 under Jetson Linux), is no rail. Rail watts = V * I,
  clamped at 0 (the INA3221 is bidirectional; an idle rail can read a few mA below zero).
  The older JetPack 4 layout, sys/bus/i2c/drivers/ina3221x/*/iio:device*/ with rail_name_N,
  in_voltageN_input (mV) and in_currentN_input (mA), is read the same way.
  The module's input power is VDD_IN where a rail of that name exists (Orin Nano / NX: VDD_IN,
  VDD_CPU_GPU_CV, VDD_SOC on one chip; POM_5V_IN on older modules); otherwise (AGX Orin:
  VDD_GPU_SOC, VDD_CPU_CV, VIN_SYS_5V0 and VDDQ_VDD2_1V8AO, no VDD_IN) the sum of the rails, which
  misses regulator losses and the carrier board. Either is None when one of its rails could not
  be read this time: a partial sum would understate the load.
- temperatures: sys/devices/virtual/thermal/thermal_zone*/{type,temp}, temp in millidegrees C;
  -256000 means the zone is offline (JetPack 6 on an Orin Nano reports its GPU and CV zones so).
  Zone names differ by release: JetPack 6 cpu-thermal, gpu-thermal, cv0..2-thermal,
  soc0..2-thermal, tj-thermal; JetPack 5 CPU-therm, GPU-therm, CV0-therm, SOC0-therm, tj-therm,
  and on AGX Tboard_tegra, Tdiode_tegra. Names are reported as the kernel gives them.
  board_temperature_c is the maximum over the online zones: tj is itself the maximum of the die
  sensors, so this equals tj where tj is online and is hotter only if a board sensor is, and it
  still works where tj is absent or disabled (some Orin Nano device trees). PMIC die zones of
  older modules (a constant 100 C on a TX2) are left out of that maximum.
- power mode: var/lib/nvpmodel/status, which nvpmodel writes when it sets a mode ("pmode:0002");
  the names from etc/nvpmodel.conf lines "< POWER_MODEL ID=2 NAME=MAXN_SUPER >".

Rails, zones and mode names are discovered once (call discover() again after a driver rebind);
values are re-read on every read(). A missing, unreadable, empty, non-numeric or absurd file is
never fatal: its value is left out, on_fault(kind, path, detail) is called the first time that
(path, kind) happens, and every occurrence is counted in `faults` by kind. Paths in faults are
as on the board ("/sys/..."), whatever the root.
"""
from __future__ import annotations

import errno
import glob
import os
import re
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Callable

FaultHandler = Callable[[str, str, str], None]  # (kind, path, detail)

# Fault kinds
MISSING, UNREADABLE, EMPTY, GARBAGE, ABSURD, OFFLINE, INTERNAL = (
    "missing", "unreadable", "empty", "garbage", "absurd", "offline", "internal")

INPUT_RAILS = ("VDD_IN", "POM_5V_IN")  # the module's own input, where measured
OFFLINE_MILLI_C = -256000
TEMPERATURE_RANGE_MILLI_C = (-80_000, 150_000)  # outside it (other than offline) is absurd
VOLTAGE_RANGE_MV = (0, 26_000)  # the INA3221's bus-voltage range
CURRENT_RANGE_MA = (-1_000, 50_000)
MAX_FILE_BYTES = 4096

_STATUS_RE = re.compile(r"pmode\s*:\s*(\d+)")
_MODEL_RE = re.compile(r"<\s*POWER_MODEL\s+ID\s*=\s*(\d+)\s+NAME\s*=\s*([^\s>]+)\s*>")


@dataclass(frozen=True)
class JetsonReading:
    time_s: float  # clock() at the reading, s
    input_w: float | None  # the module's input power (VDD_IN, or the sum of the rails), W
    rails: dict[str, float] = field(default_factory=dict)  # W per rail that read well
    temperatures_c: dict[str, float] = field(default_factory=dict)  # °C per online zone
    board_temperature_c: float | None = None  # max of the online zones, °C
    power_mode: int | None = None  # nvpmodel mode id
    power_mode_name: str | None = None  # its name in nvpmodel.conf


@dataclass(frozen=True)
class _Rail:
    name: str
    volt: str  # mV
    curr: str  # mA


@dataclass(frozen=True)
class _Zone:
    name: str
    temp: str  # m°C


class JetsonSysfs:
    def __init__(self, root: str = "/", on_fault: FaultHandler | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.root = os.path.abspath(root)
        self._on_fault = on_fault
        self._clock = clock
        self.faults: dict[str, int] = {}
        self._reported: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self.rails: list[_Rail] = []
        self.zones: list[_Zone] = []
        self.mode_names: dict[int, str] = {}
        self.discover()

    # --- discovery (once) ---

    def discover(self) -> None:
        with self._lock:
            for part in (self._discover_rails, self._discover_zones, self._discover_modes):
                try:
                    part()
                except Exception as e:  # never fatal, whatever the tree looks like
                    self._fault(INTERNAL, self.root, f"{part.__name__}: {e!r}")

    def _discover_rails(self) -> None:
        rails: list[_Rail] = []
        hwmon = sorted(glob.glob(self._path("sys/bus/i2c/drivers/ina3221/*/hwmon/hwmon*")))
        iio = sorted(glob.glob(self._path("sys/bus/i2c/drivers/ina3221x/*/iio:device*")))
        for d in hwmon:
            for n in (1, 2, 3):
                label = self._label(os.path.join(d, f"in{n}_label"))
                if label:
                    rails.append(_Rail(label, os.path.join(d, f"in{n}_input"), os.path.join(d, f"curr{n}_input")))
        for d in iio:
            names = os.listdir(d) if os.path.isdir(d) else []
            for n in sorted(int(m.group(1)) for f in names if (m := re.fullmatch(r"rail_name_(\d+)", f))):
                label = self._label(os.path.join(d, f"rail_name_{n}"))
                if label:
                    rails.append(_Rail(label, os.path.join(d, f"in_voltage{n}_input"), os.path.join(d, f"in_current{n}_input")))
        if not hwmon and not iio:
            self._fault(MISSING, self._path("sys/bus/i2c/drivers/ina3221"), "no INA3221 power monitor")
        self.rails = _unique(rails)

    def _label(self, path: str) -> str | None:
        if not os.path.lexists(path):
            return None  # an unlabelled channel is no rail
        text = self._read_text(path)
        if text is None or text.upper() == "NC":
            return None
        return text

    def _discover_zones(self) -> None:
        zones: list[_Zone] = []
        dirs = sorted(glob.glob(self._path("sys/devices/virtual/thermal/thermal_zone*")),
                      key=lambda d: (len(d), d))  # thermal_zone2 before thermal_zone10
        for d in dirs:
            name = self._read_text(os.path.join(d, "type"))
            if name is not None:
                zones.append(_Zone(name, os.path.join(d, "temp")))
        if not dirs:
            self._fault(MISSING, self._path("sys/devices/virtual/thermal"), "no thermal zone")
        self.zones = _unique(zones)

    def _discover_modes(self) -> None:
        self.mode_names = {}
        path = self._path("etc/nvpmodel.conf")
        text = self._read_text(path, limit=1 << 20)
        if text is None:
            return
        for line in text.splitlines():
            m = _MODEL_RE.search(line)
            if m and not line.lstrip().startswith("#"):
                self.mode_names.setdefault(int(m.group(1)), m.group(2))
        if not self.mode_names:
            self._fault(GARBAGE, path, "no POWER_MODEL line")

    # --- reading (every time) ---

    def read(self) -> JetsonReading:
        with self._lock:
            now = self._clock()
            rails, input_w = self._guarded(self._read_power, ({}, None))
            temperatures = self._guarded(self._read_temperatures, {})
            mode, name = self._guarded(self._read_mode, (None, None))
            hot = [t for n, t in temperatures.items() if "PMIC" not in n.upper()]
            return JetsonReading(time_s=now, input_w=input_w, rails=rails, temperatures_c=temperatures,
                                 board_temperature_c=max(hot) if hot else None,
                                 power_mode=mode, power_mode_name=name)

    def _guarded(self, part, default):
        try:
            return part()
        except Exception as e:  # a bug here must not take the executive down
            self._fault(INTERNAL, self.root, f"{part.__name__}: {e!r}")
            return default

    def _read_power(self) -> tuple[dict[str, float], float | None]:
        rails: dict[str, float] = {}
        for r in self.rails:
            mv = self._read_int(r.volt, *VOLTAGE_RANGE_MV)
            ma = self._read_int(r.curr, *CURRENT_RANGE_MA)
            if mv is not None and ma is not None:
                rails[r.name] = max(0.0, mv * ma / 1e6)
        total = next((r.name for r in self.rails if r.name in INPUT_RAILS), None)
        if total is not None:
            input_w = rails.get(total)
        elif self.rails and len(rails) == len(self.rails):
            input_w = sum(rails.values())
        else:
            input_w = None
        return rails, input_w

    def _read_temperatures(self) -> dict[str, float]:
        temperatures: dict[str, float] = {}
        for z in self.zones:
            milli = self._read_int(z.temp, OFFLINE_MILLI_C, TEMPERATURE_RANGE_MILLI_C[1])
            if milli is None:
                continue
            if milli == OFFLINE_MILLI_C:
                self._fault(OFFLINE, z.temp, f"{z.name} reads -256 C (offline)")
            elif milli < TEMPERATURE_RANGE_MILLI_C[0]:
                self._fault(ABSURD, z.temp, f"{milli} m°C")
            else:
                temperatures[z.name] = milli / 1000.0
        return temperatures

    def _read_mode(self) -> tuple[int | None, str | None]:
        path = self._path("var/lib/nvpmodel/status")
        text = self._read_text(path)
        if text is None:
            return None, None
        m = _STATUS_RE.search(text)
        if not m:
            self._fault(GARBAGE, path, f"no pmode in {text[:40]!r}")
            return None, None
        mode = int(m.group(1))
        name = self.mode_names.get(mode)
        if name is None and self.mode_names:
            self._fault(ABSURD, path, f"mode {mode} is not in nvpmodel.conf")
        return mode, name

    # --- files and faults ---

    def _path(self, relative: str) -> str:
        return os.path.join(self.root, relative)

    def _read_text(self, path: str, limit: int = MAX_FILE_BYTES) -> str | None:
        """The stripped text of a small file, or None after reporting why not."""
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                data = os.read(fd, limit)  # one read: sysfs attributes come whole
                while len(data) < limit and (more := os.read(fd, limit - len(data))):
                    data += more
            finally:
                os.close(fd)
        except (FileNotFoundError, NotADirectoryError):
            self._fault(MISSING, path, "no such file")
            return None
        except OSError as e:  # permission, EAGAIN (a disabled zone), a directory, a dead device
            self._fault(UNREADABLE, path, f"{errno.errorcode.get(e.errno, e.errno)}: {e.strerror}")
            return None
        try:
            text = data.decode("ascii").strip()
        except UnicodeDecodeError:
            self._fault(GARBAGE, path, f"not text: {data[:20]!r}")
            return None
        if not text:
            self._fault(EMPTY, path, "empty")
            return None
        return text

    def _read_int(self, path: str, lo: int, hi: int) -> int | None:
        text = self._read_text(path)
        if text is None:
            return None
        try:
            value = int(text)
        except ValueError:
            self._fault(GARBAGE, path, f"not an integer: {text[:40]!r}")
            return None
        if not lo <= value <= hi:
            self._fault(ABSURD, path, f"{value} outside [{lo}, {hi}]")
            return None
        return value

    def _fault(self, kind: str, path: str, detail: str) -> None:
        self.faults[kind] = self.faults.get(kind, 0) + 1
        shown = self._board_path(path)
        if (shown, kind) in self._reported:
            return
        self._reported.add((shown, kind))
        if self._on_fault is not None:
            try:
                self._on_fault(kind, shown, detail)
            except Exception:  # a broken reporter must not break the reading
                pass

    def _board_path(self, path: str) -> str:
        relative = os.path.relpath(path, self.root)
        return "/" if relative == "." else "/" + relative


def _unique(items: list) -> list:
    """Same-named rails or zones get "#2", "#3" so that none hides another."""
    seen: dict[str, int] = {}
    out = []
    for item in items:
        seen[item.name] = seen.get(item.name, 0) + 1
        out.append(item if seen[item.name] == 1 else replace(item, name=f"{item.name}#{seen[item.name]}"))
    return out
