"""A HIL scenario: one TOML file that says what world the node flies in, what the ground and the
faults do to it and when, and what it must achieve. `hil run` plays it (hil/run.py).

Every time in a scenario is in simulated seconds from the scenario's start (the environment
runs K simulated seconds per wall second, `accel`). The tables:

    [scenario]
    name = "nominal"              # required; names the report
    description = "..."           # one line for the report
    duration_s = 11400            # required: simulated seconds to run (> 0)
    accel = 60                    # K: simulated seconds per wall second (default 1; --accel overrides)
    seed = 1                      # random parts: SEU offsets, fault jitter, the link's errors (--seed overrides)
    model = "real"                # "real": the packaged model (or --model); "synthetic": a small random one
    start = "2026-03-20T00:00:00Z"  # the simulated UTC start (default 2026-03-20T00:00:00Z)

    [environment]                 # handed as it is to hil.env.environment.EnvConfig.from_dict

    [link]                        # the link emulator's radio (hil/radio.py Impairments)
    baud = 115200                 # line rate; the emulator scales the byte rate by K
    ber = 0.0                     # bit error rate
    latency_s = 0.0               # one-way latency, simulated seconds
    burst = { mean_interval_s = 300, mean_duration_s = 0.5, ber = 1e-2 }  # optional: burst errors
    dropout = { mean_interval_s = 600, mean_duration_s = 5 }              # optional: dropouts

    [flight]                      # overrides of the node's config (the tables of flight/node.example.toml)
    [flight.engine]               # but [sensors], which the rig sets, and [scheduler] battery_floor_wh,
    scrub_period_s = 60.0         # environment.battery_floor's; [link] timers are simulated seconds
                                  # (hil/flight_config.py); scrub_period_s is wall seconds

    [[timeline]]                  # what the ground does, in order of at_s, each once in contact
    at_s = 120
    action = "submit"             # a job: prompt, max_tokens (default 32), priority (0), deadline_s
    prompt = "Why orbit?"         #   (simulated s after submission; 0: none), chat (false),
    count = 4                     #   count (1) jobs, every_s (0) apart
    every_s = 600

    [[timeline]]
    at_s = 3000
    action = "command"            # a telecommand: name, args (a table), confirm_hazardous (false)
    name = "MODE_SET"
    args = { mode = 3 }

    [[faults]]                    # what goes wrong: at_s, kind, jitter_s (0: the seed moves at_s by up
                                  #   to this either way, within the run), and per kind:
    at_s = 1800
    kind = "kill9"                # kill9: SIGKILL the flight process; it restarts restart_after_s later
    restart_after_s = 30          #   (as a watchdog would); count (1) times, every_s apart
    #  brownout:    the supply sags: the EPS reports the battery at level_wh (default half the floor)
    #               for duration_s; the node must go SAFE (left only by command: add a MODE_SET)
    #  link_outage: no contact for duration_s, whatever the geometry
    #  seu_burst:   count bit flips written into the engine's weights at once (random offset and bit)
    #  sensor_fail: the sensor bus falls silent (mode = "silent") or garbles (mode = "garbled")
    #               for duration_s
    #  hot_case:    the board is heated by extra_w more watts for duration_s (a neighbouring
    #               payload's dissipation, drawn from the bus as well)

    [criteria]                    # thresholds; every criterion is always checked
    deadline_hit_rate_min = 0.9   # default 1.0
    min_delivered = 1             # results that must reach the ground (default: every job submitted)
    temperature_limit_c = 85.0    # default: the flight's [scheduler] thermal_limit_c
    safe_after_brownout = true    # a brownout must put the node in SAFE (default true when one is scheduled)

A file that cannot be read, is not TOML or breaks a rule above is a ScenarioError with a one-line
message naming the key; `hil run` prints it and exits 2.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flight.link.cli_support import MAX_BAUD
from hil.env.environment import EnvConfig
from hil.radio import BurstModel, DropoutModel, Impairments

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_START = "2026-03-20T00:00:00Z"
ACTIONS = ("submit", "command")
FAULT_KINDS = ("kill9", "brownout", "link_outage", "seu_burst", "sensor_fail", "hot_case")
MODELS = ("real", "synthetic")
CRITERIA_KEYS = ("deadline_hit_rate_min", "min_delivered", "temperature_limit_c", "safe_after_brownout")
MAX_ACCEL = 100_000.0


class ScenarioError(ValueError):
    """A scenario that cannot be run; the message is one line."""


@dataclass(frozen=True)
class Submit:
    at_s: float
    prompt: str
    max_tokens: int = 32
    priority: int = 0
    deadline_s: float = 0.0
    chat: bool = False


@dataclass(frozen=True)
class Command:
    at_s: float
    name: str
    args: dict[str, Any] = field(default_factory=dict)
    confirm_hazardous: bool = False


@dataclass(frozen=True)
class Fault:
    at_s: float
    kind: str
    duration_s: float = 0.0
    params: dict[str, Any] = field(default_factory=dict)
    jitter_s: float = 0.0  # the run's seed moves at_s by up to this, either way (campaigns vary it)


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    duration_s: float
    accel: float
    seed: int
    model: str
    start_unix: float
    environment: dict[str, Any]
    link: dict[str, Any]
    flight: dict[str, Any]
    submits: tuple[Submit, ...]
    commands: tuple[Command, ...]
    faults: tuple[Fault, ...]
    criteria: dict[str, Any]
    path: Path | None = None

    def with_overrides(self, overrides: dict[str, Any]) -> Scenario:
        """The scenario with tables' keys replaced (a campaign's draw: {"link": {"ber": 1e-5}}, a
        short form: {"scenario": {"duration_s": 900, "accel": 50, "model": "synthetic"}}). Timeline
        entries and faults after a shortened duration_s are left out."""
        raw = {"scenario": {"name": self.name, "description": self.description, "duration_s": self.duration_s,
                            "accel": self.accel, "seed": self.seed, "model": self.model,
                            "start": _iso(self.start_unix)},
               "environment": self.environment, "link": self.link, "flight": self.flight, "criteria": self.criteria}
        for table, values in overrides.items():
            if table not in raw or not isinstance(values, dict):
                raise ScenarioError(f"override {table!r}: expected a table of scenario, environment, link, flight "
                                    "or criteria")
            raw[table] = {**raw[table], **values}
        again = parse(raw, self.path)
        return dataclasses.replace(
            again, submits=tuple(s for s in self.submits if s.at_s <= again.duration_s),
            commands=tuple(c for c in self.commands if c.at_s <= again.duration_s),
            faults=tuple(f for f in self.faults if f.at_s <= again.duration_s))


def load(path: str | Path) -> Scenario:
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            raw = tomllib.load(handle)
    except OSError as exc:
        raise ScenarioError(f"cannot read {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: not TOML: {exc}") from None
    return parse(raw, path)


def parse(raw: dict[str, Any], path: Path | None = None) -> Scenario:
    where = f"{path}: " if path else ""
    try:
        return _parse(raw, path)
    except ScenarioError as exc:
        raise ScenarioError(f"{where}{exc}") from None


def _parse(raw: dict[str, Any], path: Path | None) -> Scenario:
    unknown = set(raw) - {"scenario", "environment", "link", "flight", "timeline", "faults", "criteria"}
    if unknown:
        raise ScenarioError(f"unknown table(s) {sorted(unknown)}")
    head = _table(raw, "scenario")
    _only(head, "scenario", {"name", "description", "duration_s", "accel", "seed", "model", "start"})
    name = _str(head, "name", "scenario", required=True)
    duration = _number(head, "duration_s", "scenario", required=True, low=0.0, strict=True)
    accel = _number(head, "accel", "scenario", default=1.0, low=0.0, strict=True, high=MAX_ACCEL)
    seed = _int(head, "seed", "scenario", default=0, low=0)
    model = _str(head, "model", "scenario", default="real")
    if model not in MODELS:
        raise ScenarioError(f"scenario.model must be one of {', '.join(MODELS)}, got {model!r}")
    start = _start(head.get("start", DEFAULT_START))
    link = _link(_table(raw, "link", required=False))
    environment = _table(raw, "environment", required=False)
    try:
        EnvConfig.from_dict(environment)
    except ValueError as exc:
        raise ScenarioError(str(exc)) from None
    flight = _table(raw, "flight", required=False)
    if "sensors" in flight:
        raise ScenarioError("flight.sensors is the rig's to set: leave it out")
    submits, commands = _timeline(raw.get("timeline", []), duration)
    faults = tuple(_faults(raw.get("faults", []), duration))
    criteria = _table(raw, "criteria", required=False)
    _only(criteria, "criteria", set(CRITERIA_KEYS))
    checked: dict[str, Any] = {}
    if "deadline_hit_rate_min" in criteria:
        checked["deadline_hit_rate_min"] = _number(criteria, "deadline_hit_rate_min", "criteria", low=0.0, high=1.0)
    if "min_delivered" in criteria:
        checked["min_delivered"] = _int(criteria, "min_delivered", "criteria", low=0)
    if "temperature_limit_c" in criteria:
        checked["temperature_limit_c"] = _number(criteria, "temperature_limit_c", "criteria", low=-273.15)
    if "safe_after_brownout" in criteria:
        checked["safe_after_brownout"] = _bool(criteria, "safe_after_brownout", "criteria")
    return Scenario(name=name, description=_str(head, "description", "scenario", default=""), duration_s=duration,
                    accel=accel, seed=seed, model=model, start_unix=start,
                    environment=environment, link=link, flight=flight,
                    submits=submits, commands=commands, faults=faults, criteria=checked, path=path)


def _link(table: dict[str, Any]) -> dict[str, Any]:
    _only(table, "link", {"baud", "ber", "latency_s", "burst", "dropout"})
    link: dict[str, Any] = {"baud": _int(table, "baud", "link", default=115200, low=1, high=MAX_BAUD),
                            "ber": _number(table, "ber", "link", default=0.0, low=0.0),
                            "latency_s": _number(table, "latency_s", "link", default=0.0, low=0.0)}
    for key, keys in (("burst", {"mean_interval_s", "mean_duration_s", "ber"}),
                      ("dropout", {"mean_interval_s", "mean_duration_s"})):
        if key in table:
            sub = table[key]
            if not isinstance(sub, dict):
                raise ScenarioError(f"link.{key} must be a table")
            _only(sub, f"link.{key}", keys)
            link[key] = {name: _number(sub, name, f"link.{key}", required=name != "ber", default=1e-2, low=0.0)
                         for name in keys if name in sub or name != "ber"}
    try:
        impairments(link, seed=0)
    except ValueError as exc:
        raise ScenarioError(f"link: {exc}") from None
    return link


def impairments(link: dict[str, Any], seed: int) -> Impairments:
    """The radio of a scenario's [link] table, its random draws from seed."""
    return Impairments(ber=link["ber"], latency_s=link["latency_s"], seed=seed,
                       burst=BurstModel(**link["burst"]) if "burst" in link else None,
                       dropout=DropoutModel(**link["dropout"]) if "dropout" in link else None)


def _timeline(entries: Any, duration: float) -> tuple[tuple[Submit, ...], tuple[Command, ...]]:
    if not isinstance(entries, list):
        raise ScenarioError("timeline must be an array of tables ([[timeline]])")
    submits: list[Submit] = []
    commands: list[Command] = []
    for n, entry in enumerate(entries, 1):
        where = f"timeline entry {n}"
        if not isinstance(entry, dict):
            raise ScenarioError(f"{where} must be a table")
        at = _number(entry, "at_s", where, required=True, low=0.0, high=duration)
        action = entry.get("action")
        if action == "submit":
            _only(entry, where, {"at_s", "action", "prompt", "max_tokens", "priority", "deadline_s", "chat", "count",
                                 "every_s"})
            count = _int(entry, "count", where, default=1, low=1)
            every = _number(entry, "every_s", where, default=0.0, low=0.0)
            job = dict(prompt=_str(entry, "prompt", where, required=True),
                       max_tokens=_int(entry, "max_tokens", where, default=32, low=1),
                       priority=_int(entry, "priority", where, default=0, low=-100, high=100),
                       deadline_s=_number(entry, "deadline_s", where, default=0.0, low=0.0),
                       chat=_bool(entry, "chat", where, default=False))
            for k in range(count):
                if at + k * every > duration:
                    raise ScenarioError(f"{where}: job {k + 1} of {count} falls after duration_s")
                submits.append(Submit(at_s=at + k * every, **job))
        elif action == "command":
            _only(entry, where, {"at_s", "action", "name", "args", "confirm_hazardous"})
            args = entry.get("args", {})
            if not isinstance(args, dict):
                raise ScenarioError(f"{where}: args must be a table")
            commands.append(Command(at, _str(entry, "name", where, required=True), dict(args),
                                    _bool(entry, "confirm_hazardous", where, default=False)))
        else:
            raise ScenarioError(f"{where}: action must be one of {', '.join(ACTIONS)}, got {action!r}")
    return tuple(sorted(submits, key=lambda s: s.at_s)), tuple(sorted(commands, key=lambda c: c.at_s))


_FAULT_PARAMS: dict[str, set[str]] = {
    "kill9": {"restart_after_s", "count", "every_s"},
    "brownout": {"duration_s", "level_wh"},
    "link_outage": {"duration_s"},
    "seu_burst": {"count"},
    "sensor_fail": {"duration_s", "mode"},
    "hot_case": {"duration_s", "extra_w"},
}


def _faults(entries: Any, duration: float) -> list[Fault]:
    if not isinstance(entries, list):
        raise ScenarioError("faults must be an array of tables ([[faults]])")
    out: list[Fault] = []
    for n, entry in enumerate(entries, 1):
        where = f"fault {n}"
        if not isinstance(entry, dict):
            raise ScenarioError(f"{where} must be a table")
        kind = entry.get("kind")
        if kind not in FAULT_KINDS:
            raise ScenarioError(f"{where}: kind must be one of {', '.join(FAULT_KINDS)}, got {kind!r}")
        _only(entry, where, {"at_s", "kind", "jitter_s"} | _FAULT_PARAMS[kind])
        at = _number(entry, "at_s", where, required=True, low=0.0, high=duration)
        jitter = _number(entry, "jitter_s", where, default=0.0, low=0.0, high=duration)
        length = _number(entry, "duration_s", where, default=0.0, low=0.0)
        if "duration_s" in _FAULT_PARAMS[kind] and not length > 0:
            raise ScenarioError(f"{where}: {kind} needs duration_s > 0")
        params: dict[str, Any] = {}
        if kind == "kill9":
            params["restart_after_s"] = _number(entry, "restart_after_s", where, default=0.0, low=0.0)
            count = _int(entry, "count", where, default=1, low=1)
            every = _number(entry, "every_s", where, default=0.0, low=0.0)
            if count > 1 and not every > params["restart_after_s"] + 2 * jitter:
                raise ScenarioError(f"{where}: every_s must exceed restart_after_s + 2 jitter_s when count > 1")
            for k in range(count):
                if at + k * every > duration:
                    raise ScenarioError(f"{where}: kill {k + 1} of {count} falls after duration_s")
                out.append(Fault(at + k * every, kind, 0.0, params, jitter))
            continue
        if kind == "brownout" and "level_wh" in entry:
            params["level_wh"] = _number(entry, "level_wh", where, low=0.0)
        if kind == "seu_burst":
            params["count"] = _int(entry, "count", where, default=1, low=1, high=10_000)
        if kind == "sensor_fail":
            params["mode"] = _str(entry, "mode", where, default="silent")
            if params["mode"] not in ("silent", "garbled"):
                raise ScenarioError(f"{where}: mode must be silent or garbled, got {params['mode']!r}")
        if kind == "hot_case":
            params["extra_w"] = _number(entry, "extra_w", where, required=True, low=0.0, strict=True)
        out.append(Fault(at, kind, length, params, jitter))
    return sorted(out, key=lambda f: f.at_s)


def jittered(fault: Fault, rng: np.random.Generator, duration_s: float) -> Fault:
    """The fault at its instant for one run: at_s moved by rng within ±jitter_s, kept in the run."""
    if not fault.jitter_s:
        return fault
    shift = float(rng.uniform(-fault.jitter_s, fault.jitter_s))
    return dataclasses.replace(fault, at_s=min(max(fault.at_s + shift, 0.0), duration_s))


def _iso(unix: float) -> str:
    return dt.datetime.fromtimestamp(unix, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _start(value: Any) -> float:
    if isinstance(value, dt.datetime):  # TOML's own date-time type
        stamp = value
    elif isinstance(value, str):
        try:
            stamp = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ScenarioError(f"scenario.start must be an ISO-8601 UTC time, got {value!r}") from None
    else:
        raise ScenarioError(f"scenario.start must be an ISO-8601 UTC time, got {value!r}")
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.timezone.utc)
    return stamp.timestamp()


def _table(raw: dict[str, Any], key: str, required: bool = True) -> dict[str, Any]:
    value = raw.get(key)
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise ScenarioError(f"[{key}] table is {'missing' if value is None else 'not a table'}")
    return value


def _only(table: dict[str, Any], where: str, allowed: set[str]) -> None:
    unknown = set(table) - allowed
    if unknown:
        raise ScenarioError(f"{where}: unknown key(s) {sorted(unknown)}")


def _number(table: dict[str, Any], key: str, where: str, *, default: float | None = None, required: bool = False,
            low: float = -math.inf, high: float = math.inf, strict: bool = False) -> float:
    if key not in table:
        if required or default is None:
            raise ScenarioError(f"{where}.{key} is required")
        return default
    value = table[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ScenarioError(f"{where}.{key} must be a finite number, got {value!r}")
    if value < low or value > high or (strict and value == low):
        bound = f"above {low:g}" if strict else f"at least {low:g}"
        raise ScenarioError(f"{where}.{key} must be {bound}" + (f" and at most {high:g}" if high < math.inf else "")
                            + f", got {value!r}")
    return float(value)


def _int(table: dict[str, Any], key: str, where: str, *, default: int | None = None, low: int = 0,
         high: int = 2**31) -> int:
    if key not in table:
        if default is None:
            raise ScenarioError(f"{where}.{key} is required")
        return default
    value = table[key]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ScenarioError(f"{where}.{key} must be an integer from {low} to {high}, got {value!r}")
    return value


def _str(table: dict[str, Any], key: str, where: str, *, default: str | None = None, required: bool = False) -> str:
    if key not in table:
        if required or default is None:
            raise ScenarioError(f"{where}.{key} is required")
        return default
    value = table[key]
    if not isinstance(value, str) or (required and not value.strip()):
        raise ScenarioError(f"{where}.{key} must be a non-empty string, got {value!r}")
    return value


def _bool(table: dict[str, Any], key: str, where: str, *, default: bool | None = None) -> bool:
    if key not in table:
        if default is None:
            raise ScenarioError(f"{where}.{key} is required")
        return default
    value = table[key]
    if not isinstance(value, bool):
        raise ScenarioError(f"{where}.{key} must be true or false, got {value!r}")
    return value
