"""The node's configuration: a TOML file (read with tomllib), then command-line flags on top.

Every key has a documented default, so `flight run --port P --keys K --data-dir D` needs no file;
flight/node.example.toml lists every key with its default and meaning. A bad file or value is
one ConfigError line naming the file, the key and what was expected: an unknown key (a typo
that would silently leave a default in force) included.

The schema below is the one place the keys, their types, ranges and defaults are written down.
"""
from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, as a package
    import tomli as tomllib

from flight.executive.scheduler import (
    DEFAULT_AGING_PER_S, DEFAULT_HORIZON_MIN_S, DEFAULT_HYSTERESIS, MAX_BATCH, MAX_LEVELS, PowerLevel,
)
from flight.executive.cost_model import CONFIG_KEYS as COST_KEYS
from flight.executive.fdir import ACTIONS, DEFAULT_RULES, FdirConfigError, Rule, parse_rules, rules_for
from flight.link.service import LinkConfig
from flight.store.recorder import DEFAULT_CAPACITY_OCTETS, DEFAULT_CAPACITY_RECORDS, DEFAULT_FLUSH_PERIOD_S


class ConfigError(ValueError):
    """A configuration file or value is wrong; the message is one line."""


Check = Callable[[Any], str | None]  # None: fine; else what was expected


def _number(low: float, high: float, integer: bool = False) -> Check:
    def check(value: Any) -> str | None:
        kinds = (int,) if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds) or not low <= value <= high:
            return f"{'an integer' if integer else 'a number'} from {low:g} to {high:g}"
        return None
    return check


def _choice(*choices: str) -> Check:
    return lambda value: None if value in choices else f"one of {', '.join(choices)}"


def _text(value: Any) -> str | None:
    return None if isinstance(value, str) and value else "a non-empty string"


def _flag(value: Any) -> str | None:
    return None if isinstance(value, bool) else "true or false"


def _optional(check: Check) -> Check:
    return lambda value: None if value is None else check(value)


_LINK = LinkConfig()
# section -> key -> (default, check, meaning). None as a default: "not set" (see the meaning).
SCHEMA: dict[str, dict[str, tuple[Any, Check, str]]] = {
    "link": {
        "port": ("/dev/ttyTHS1", _text, "serial device or pyserial URL of the radio"),
        "baud": (115200, _number(1, 20_000_000, integer=True), "line rate, 8N1"),
        "hk_period_s": (_LINK.hk_period_s, _number(0.1, 3600), "seconds between housekeeping packets"),
        "contact_timeout_s": (_LINK.contact_timeout_s, _number(0.1, 3600), "uplink silence before contact is lost, s"),
        "rto_s": (_LINK.rto_s, _number(0.1, 3600), "result segment retransmission timeout, s"),
        "arsn_window": (_LINK.arsn_window, _number(1, 2**64 - 1, integer=True), "anti-replay window"),
    },
    "engine": {
        "model": (None, _optional(_text), "llama GGUF file; unset: the packaged SmolLM2-135M-Instruct Q4_1"),
        "threads": (None, _optional(_number(1, 256, integer=True)), "engine threads; unset: cores - 1, at least 1"),
        "n_ctx": (2048, _number(16, 131072, integer=True), "context per sequence (prompt plus output), tokens"),
        "n_batch": (8, _number(1, MAX_BATCH, integer=True), "sequences decoded together"),
        "simd": ("auto", _choice("auto", "avx2", "neon", "scalar"), "kernel path"),
        "scrub_period_s": (60.0, _number(0.5, 86400),
                           "every weight block is checked against the model's manifest within this, s"),
    },
    "executive": {
        "tick_hz": (10.0, _number(1, 100), "main loop rate"),
        "auto_inference": (True, _flag, "go from STANDBY to INFERENCE by itself when energy allows"),
    },
    "scheduler": {
        "aging_per_s": (DEFAULT_AGING_PER_S, _number(0, 1), "priority gained per second waited"),
        "hysteresis": (DEFAULT_HYSTERESIS, _number(0, 1000), "lead a waiting job needs over a running one"),
        "horizon_min_s": (DEFAULT_HORIZON_MIN_S, _number(0, 86400), "shortest energy planning horizon, s"),
        "battery_floor_wh": (20.0, _number(0, 1e6), "charge never planned below, Wh"),
        "thermal_limit_c": (85.0, _number(-100, 200), "board temperature at which compute stops, °C"),
        "thermal_margin_c": (10.0, _number(0, 100), "band below the limit in which power is capped, °C"),
    },
    "sensors": {
        "backend": ("sim", _choice("sim", "hil", "jetson"), "where power, battery, eclipse and temperatures come from"),
        "port": (None, _optional(_text), "serial device or URL of the sensor bus: the rig's (hil) or the EPS board's (jetson)"),
        "sysfs_root": ("/", _text, "jetson: directory holding the board's sys/, var/lib/nvpmodel/status and etc/nvpmodel.conf"),
        "board_zone": (None, _optional(_text), "jetson: thermal zone type read as the board temperature; unset: the hottest"),
    },
    # The onboard recorder (flight/store/recorder.py) and its playback (flight/link/playback.py).
    "recorder": {
        "enabled": (True, _flag, "record events and housekeeping onboard; play back what the ground missed"),
        "capacity_records": (DEFAULT_CAPACITY_RECORDS, _number(100, 100_000_000, integer=True),
                             "records kept; beyond, the oldest are dropped"),
        "capacity_octets": (DEFAULT_CAPACITY_OCTETS, _number(65536, 2**40, integer=True),
                            "octets of recorded packet bodies kept; beyond, the oldest are dropped"),
        "hk_period_s": (_LINK.record_hk_period_s, _number(1, 86400),
                        "seconds between recorded housekeeping snapshots (the live rate is [link] hk_period_s)"),
        "flush_period_s": (DEFAULT_FLUSH_PERIOD_S, _number(0.1, 60),
                           "seconds between commits of the recorder: what a kill -9 can lose"),
    },
    # The cost model's keys (flight/executive/cost_model.py holds their defaults' sources).
    "cost": {key: (default, _number(0.001, 1) if key == "duty_cycle" else _number(0.01, 100) if key == "lifetime_years"
                   else _number(0, 1e12), meaning) for key, (default, meaning) in COST_KEYS.items()},
}
# The power levels (lowest first: watts and tokens/s increasing); for a Jetson, its nvpmodel modes.
# The defaults are the Orin Nano Super's 7, 15 and 25 W modes; their tokens/s are rough guesses
# for the default model scaled from one third-party report (about 165 tok/s at 25 W, see
# ../shared/REFERENCE.md): measure them on the board before trusting a plan.
DEFAULT_POWER_LEVELS = (PowerLevel("LOW", 7.0, 40.0), PowerLevel("MID", 15.0, 90.0), PowerLevel("HIGH", 25.0, 160.0))


@dataclass(frozen=True)
class NodeConfig:
    values: dict[str, dict[str, Any]]  # section -> key -> value, every key present
    power_levels: tuple[PowerLevel, ...]
    fdir_rules: tuple[Rule, ...]  # the [[fdir]] table, else the shipped rules at the configured limits

    def __getitem__(self, section: str) -> dict[str, Any]:
        return self.values[section]


def load_config(path: str | os.PathLike[str] | None = None,
                overrides: dict[str, dict[str, Any]] | None = None) -> NodeConfig:
    """Defaults, then the file at path (if any), then overrides (the command line's flags that
    were given). Raises ConfigError."""
    where = f"config {os.fspath(path)}" if path is not None else "config"
    raw = _read(path) if path is not None else {}
    values = {section: {key: spec[0] for key, spec in keys.items()} for section, keys in SCHEMA.items()}
    levels = raw.pop("power_levels", None)
    fdir = raw.pop("fdir", None)
    for layer, origin in ((raw, where), (overrides or {}, "command line")):
        for section, keys in layer.items():
            if section not in SCHEMA:
                raise ConfigError(f"{origin}: unknown section [{section}]; sections are {', '.join(SCHEMA)}")
            if not isinstance(keys, dict):
                raise ConfigError(f"{origin}: [{section}] must be a table of keys")
            for key, value in keys.items():
                spec = SCHEMA[section].get(key)
                if spec is None:
                    raise ConfigError(f"{origin}: unknown key {key!r} in [{section}]; known: {', '.join(SCHEMA[section])}")
                problem = spec[1](value)
                if problem is not None:
                    raise ConfigError(f"{origin}: [{section}] {key}: expected {problem}, got {value!r}")
                values[section][key] = value
    sched = values["scheduler"]
    try:
        rules = (parse_rules(fdir, where) if fdir is not None else
                 rules_for(sched["battery_floor_wh"], sched["thermal_limit_c"], sched["thermal_margin_c"]))
    except FdirConfigError as exc:
        raise ConfigError(str(exc)) from None
    return NodeConfig(values, _power_levels(levels, where) if levels is not None else DEFAULT_POWER_LEVELS, rules)


def _read(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        with open(Path(path), "rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"cannot read config {os.fspath(path)}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config {os.fspath(path)} is not valid TOML: {exc}") from None


def _power_levels(raw: Any, where: str) -> tuple[PowerLevel, ...]:
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_LEVELS:
        raise ConfigError(f"{where}: [[power_levels]] must list 1 to {MAX_LEVELS} levels")
    levels = []
    for i, entry in enumerate(raw):
        if not isinstance(entry, dict) or set(entry) != {"name", "watts", "tokens_per_s"}:
            raise ConfigError(f"{where}: power level {i + 1} needs exactly name, watts and tokens_per_s")
        if _text(entry["name"]) or any(_number(0, 1e4)(entry[k]) or entry[k] <= 0 for k in ("watts", "tokens_per_s")):
            raise ConfigError(f"{where}: power level {i + 1}: a name, and watts and tokens_per_s above 0")
        levels.append(PowerLevel(entry["name"], float(entry["watts"]), float(entry["tokens_per_s"])))
    for low, high in zip(levels, levels[1:]):
        if not (low.watts < high.watts and low.tokens_per_s < high.tokens_per_s):
            raise ConfigError(f"{where}: power levels go lowest first, watts and tokens_per_s both increasing "
                              f"({low.name} then {high.name} does not)")
    return tuple(levels)


def render_example() -> str:
    """flight/node.example.toml: every key at its default, with its meaning."""
    lines = ["# tokensat node configuration: every key, at its default. `flight run --config FILE`;",
             "# command-line flags override the file. Generated by flight.config.render_example().", ""]
    for section, keys in SCHEMA.items():
        lines.append(f"[{section}]")
        for key, (default, _, meaning) in keys.items():
            lines.append(f"# {meaning}")
            lines.append(f"# {key} = (unset)" if default is None else f"{key} = {_toml(default)}")
        lines.append("")
    lines += ["# FDIR rules: without an [[fdir]] table the node runs these (thresholds from [scheduler]).",
              "# A table given here replaces them all (the engine is restarted only by its rules and by",
              f"# ENGINE_RESTART). Actions: {', '.join(ACTIONS)}.", ""]
    for rule in DEFAULT_RULES:
        lines += ["# [[fdir]]", f'# name = "{rule.name}"', f'# channel = "{rule.channel}"', f'# op = "{rule.op}"',
                  f"# threshold = {_toml(rule.threshold)}", f"# persistence = {rule.persistence}  # ticks",
                  f'# action = "{rule.action}"', f"# max_response_s = {_toml(rule.max_response_s)}", ""]
    for level in DEFAULT_POWER_LEVELS:
        lines += ["[[power_levels]]  # lowest first", f'name = "{level.name}"', f"watts = {_toml(level.watts)}",
                  f"tokens_per_s = {_toml(level.tokens_per_s)}", ""]
    return "\n".join(lines)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    return str(value)
