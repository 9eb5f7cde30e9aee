"""Fake sysfs trees laid out as a Jetson's, for flight.sensors.jetson.

Layouts follow what the boards show (kernel Documentation/hwmon/ina3221.rst; the tegra234 device
trees' INA3221 labels; jetson_stats' readers; tegrastats output):
- Orin Nano / NX (p3767, JetPack 6): one INA3221 at 1-0040 with VDD_IN, VDD_CPU_GPU_CV, VDD_SOC;
  zones cpu-, gpu-, cv0..2-, soc0..2-, tj-thermal, the GPU and CV zones offline (-256000).
- AGX Orin (p3701, JetPack 5): INA3221 1-0040 VDD_GPU_SOC, VDD_CPU_CV, VIN_SYS_5V0 and 1-0041
  NC, VDDQ_VDD2_1V8AO, NC (no VDD_IN); zones CPU-therm ... tj-therm, Tboard_tegra, Tdiode_tegra.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

INA = "sys/bus/i2c/drivers/ina3221"
THERMAL = "sys/devices/virtual/thermal"


@dataclass
class Tree:
    root: Path
    rails: dict[str, float]  # expected W
    input_w: float
    temperatures_c: dict[str, float]  # expected, online zones only
    offline: list[str]  # zone types reading -256000
    power_mode: int
    power_mode_name: str
    files: dict[str, str] = field(default_factory=dict)  # handle -> path relative to root


def write(root: Path, relative: str, text: str | bytes) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def ina3221(root: Path, device: str, hwmon: str, channels: list[tuple[str, int, int] | None]) -> dict[str, tuple[str, int]]:
    """channels 1..3 as (label, mV, mA); None for an unlabelled channel. Returns rail -> (dir, channel)."""
    d = f"{INA}/{device}/hwmon/{hwmon}"
    write(root, f"{d}/name", "ina3221\n")
    for n, channel in enumerate(channels, start=1):
        label, mv, ma = channel or ("", 0, 0)
        if channel is not None:
            write(root, f"{d}/in{n}_label", f"{label}\n")
        write(root, f"{d}/in{n}_input", f"{mv}\n")
        write(root, f"{d}/curr{n}_input", f"{ma}\n")
        write(root, f"{d}/in{n + 3}_input", "1234\n")  # shunt voltage, µV: no rail
        write(root, f"{d}/curr{n}_crit", "7784\n")
    write(root, f"{d}/in7_label", "sum of shunt voltages\n")
    write(root, f"{d}/in7_input", "3702\n")
    return {c[0]: (d, n) for n, c in enumerate(channels, start=1) if c and c[0] != "NC"}


def rail_files(channels: dict[str, tuple[str, int]]) -> dict[str, str]:
    files = {}
    for rail, (d, n) in channels.items():
        files[f"volt:{rail}"] = f"{d}/in{n}_input"
        files[f"curr:{rail}"] = f"{d}/curr{n}_input"
    return files


def zones(root: Path, temps: list[tuple[str, int]]) -> dict[str, str]:
    out = {}
    for i, (name, milli) in enumerate(temps):
        d = f"{THERMAL}/thermal_zone{i}"
        write(root, f"{d}/type", f"{name}\n")
        write(root, f"{d}/temp", f"{milli}\n")
        out[name] = f"{d}/temp"
    write(root, f"{THERMAL}/cooling_device0/type", "pwm-fan\n")  # not a zone
    return out


def nvpmodel(root: Path, mode: int, models: list[tuple[int, str]], default: int = 0) -> None:
    write(root, "var/lib/nvpmodel/status", f"pmode:{mode:04d}\n")
    lines = ["#", "# Copyright (c) NVIDIA CORPORATION.", "# < POWER_MODEL ID=99 NAME=COMMENTED >", "#"]
    for model_id, name in models:
        lines += [f"< POWER_MODEL ID={model_id} NAME={name} >", "CPU_ONLINE CORE_0 1", "GPU MAX_FREQ 624750000", ""]
    lines += [f"< PM_CONFIG DEFAULT={default} >"]
    write(root, "etc/nvpmodel.conf", "\n".join(lines) + "\n")


def orin_nano(root: Path) -> Tree:
    channels = ina3221(root, "1-0040", "hwmon1", [("VDD_IN", 5008, 1232), ("VDD_CPU_GPU_CV", 5000, 412),
                                                  ("VDD_SOC", 5000, 296)])
    temps = [("cpu-thermal", 45500), ("gpu-thermal", -256000), ("cv0-thermal", -256000), ("cv1-thermal", -256000),
             ("cv2-thermal", -256000), ("soc0-thermal", 44031), ("soc1-thermal", 46250), ("soc2-thermal", 43000),
             ("tj-thermal", 47093)]
    z = zones(root, temps)
    nvpmodel(root, 2, [(0, "15W"), (1, "25W"), (2, "MAXN_SUPER"), (3, "7W")], default=2)
    files = rail_files(channels)
    files.update({f"temp:{k}": v for k, v in z.items()})
    files["status"] = "var/lib/nvpmodel/status"
    rails = {"VDD_IN": 5008 * 1232 / 1e6, "VDD_CPU_GPU_CV": 5000 * 412 / 1e6, "VDD_SOC": 5000 * 296 / 1e6}
    online = {n: t / 1000 for n, t in temps if t != -256000}
    return Tree(root, rails, rails["VDD_IN"], online, [n for n, t in temps if t == -256000], 2, "MAXN_SUPER", files)


def agx_orin(root: Path) -> Tree:
    c1 = ina3221(root, "1-0040", "hwmon3", [("VDD_GPU_SOC", 4984, 632), ("VDD_CPU_CV", 4984, 2872),
                                            ("VIN_SYS_5V0", 4968, 1012)])
    c2 = ina3221(root, "1-0041", "hwmon4", [("NC", 0, 0), ("VDDQ_VDD2_1V8AO", 4976, 219), ("NC", 0, 0)])
    temps = [("CPU-therm", 52343), ("GPU-therm", 49875), ("CV0-therm", 48593), ("CV1-therm", 48062),
             ("CV2-therm", 47812), ("SOC0-therm", 49218), ("SOC1-therm", 48500), ("SOC2-therm", 48968),
             ("tj-therm", 52343), ("Tboard_tegra", 38000), ("Tdiode_tegra", 40250)]
    z = zones(root, temps)
    nvpmodel(root, 3, [(0, "MAXN"), (1, "MODE_15W"), (2, "MODE_30W"), (3, "MODE_50W")])
    files = rail_files({**c1, **c2})
    files.update({f"temp:{k}": v for k, v in z.items()})
    files["status"] = "var/lib/nvpmodel/status"
    rails = {"VDD_GPU_SOC": 4984 * 632 / 1e6, "VDD_CPU_CV": 4984 * 2872 / 1e6, "VIN_SYS_5V0": 4968 * 1012 / 1e6,
             "VDDQ_VDD2_1V8AO": 4976 * 219 / 1e6}
    return Tree(root, rails, sum(rails.values()), {n: t / 1000 for n, t in temps}, [], 3, "MODE_50W", files)


def legacy_nano(root: Path) -> Tree:
    """JetPack 4 (original Nano): ina3221x under iio:device0 with rail_name_N."""
    d = "sys/bus/i2c/drivers/ina3221x/6-0040/iio:device0"
    for n, (name, mv, ma) in enumerate([("POM_5V_IN", 5000, 800), ("POM_5V_GPU", 5000, 100), ("POM_5V_CPU", 5000, 300)]):
        write(root, f"{d}/rail_name_{n}", f"{name}\n")
        write(root, f"{d}/in_voltage{n}_input", f"{mv}\n")
        write(root, f"{d}/in_current{n}_input", f"{ma}\n")
        write(root, f"{d}/in_power{n}_input", f"{mv * ma // 1000}\n")
    rails = {"POM_5V_IN": 4.0, "POM_5V_GPU": 0.5, "POM_5V_CPU": 1.5}
    temps = [("CPU-therm", 30500), ("GPU-therm", 29000), ("PMIC-Die", 100000), ("thermal-fan-est", 30100)]
    zones(root, temps)
    return Tree(root, rails, 4.0, {n: t / 1000 for n, t in temps}, [], 0, "", {})
