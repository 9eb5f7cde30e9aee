"""Fault detection, isolation and recovery: a table of rules, evaluated once per executive tick.

Each rule watches one housekeeping channel (as cFS's Limit Checker watches a telemetry point):
its condition is a comparison of the channel's value with a threshold, and it fires its action
once the condition has held for `persistence` consecutive ticks. A rule fires once per episode:
it re-arms only after its condition has been false for one tick. A channel the node does not
publish (or publishes as None) leaves the rule's count where it was: no evidence is not evidence
of a fault, nor of its end.

The rule table is data (config [[fdir]] or DEFAULT_RULES); the actions are names the executive
maps to what it does (SAFE, STANDBY, POWER_DOWN, ENGINE_RESTART, LINK_RESET, SCRUB_REPAIR). Each firing comes
back as a Firing with the time from the condition's first true tick to the firing, which must
stay within the rule's max_response_s (the HIL rig checks it; the evaluator reports it).
"""
from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

ACTIONS = ("SAFE", "STANDBY", "POWER_DOWN", "ENGINE_RESTART", "LINK_RESET", "SCRUB_REPAIR")
OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq, "!=": operator.ne,
}


class FdirConfigError(ValueError):
    """A rule table that cannot be used; the message is one line naming the rule."""


@dataclass(frozen=True)
class Rule:
    name: str
    channel: str  # housekeeping channel watched
    op: str  # one of OPERATORS
    threshold: float
    persistence: int  # consecutive ticks the condition must hold
    action: str  # one of ACTIONS
    max_response_s: float  # condition first true -> action, at most
    enabled: bool = True

    def holds(self, value: Any) -> bool:
        return OPERATORS[self.op](value, self.threshold)


# The shipped rules (issue 8). Thresholds that depend on the node's configuration (battery floor,
# thermal limit) are given here for the default configuration; rules_for() adapts them.
DEFAULT_RULES = (
    Rule("BATTERY_LOW", "EPS_BATTERY_WH", "<", 20.0, 5, "SAFE", 1.0),
    Rule("OVER_TEMP_THROTTLE", "THERM_BOARD_C", ">=", 80.0, 10, "POWER_DOWN", 2.0),
    Rule("OVER_TEMP_STOP", "THERM_BOARD_C", ">=", 85.0, 5, "STANDBY", 1.0),
    # The engine's supervisor only reports (the node runs it with auto_restart=False): a process
    # that died is reaped and its jobs wait; whether and when the engine restarts is these rules'
    # call. Heartbeat age and token silence only grow while their fault lasts; the persistence of 3
    # rides out a tick that read them just before the supervisor's thread caught up with the pipe.
    Rule("ENGINE_DIED", "ENGINE_FAULT", "==", 1, 1, "ENGINE_RESTART", 0.5),  # ENGINE_FAULT DIED
    Rule("ENGINE_HUNG", "ENGINE_HEARTBEAT_AGE_S", ">", 2.0, 3, "ENGINE_RESTART", 0.5),  # stopped, frozen
    # no token for N s while a job is in the engine: a C loop stuck with the GIL released (its
    # heartbeats go on); N is generous because a long prefill makes no token either
    Rule("ENGINE_SILENT", "ENGINE_TOKEN_SILENCE_S", ">", 120.0, 3, "ENGINE_RESTART", 0.5),
    Rule("ENGINE_FAILED", "ENGINE_STATE", "==", 3, 10, "ENGINE_RESTART", 2.0),  # ENGINE_STATE FAILED
    Rule("COMMAND_LOSS", "LINK_SILENCE_S", ">", 86400.0, 10, "LINK_RESET", 2.0),
    # the scrubber found weights that disagree with the manifest: rewrite them from flash
    Rule("WEIGHT_UPSET", "SCRUB_UPSETS_PENDING", ">", 0, 1, "SCRUB_REPAIR", 1.0),
)


def rules_for(battery_floor_wh: float, thermal_limit_c: float, thermal_margin_c: float,
              rules: Sequence[Rule] = DEFAULT_RULES) -> tuple[Rule, ...]:
    """The shipped rules with the configuration's floor and thermal limits."""
    thresholds = {"BATTERY_LOW": battery_floor_wh, "OVER_TEMP_THROTTLE": thermal_limit_c - thermal_margin_c / 2,
                  "OVER_TEMP_STOP": thermal_limit_c}
    return tuple(replace(r, threshold=thresholds[r.name]) if r.name in thresholds else r for r in rules)


def parse_rules(raw: Any, where: str = "config") -> tuple[Rule, ...]:
    """Rules from a config's [[fdir]] array of tables; FdirConfigError (one line) if any is bad."""
    if not isinstance(raw, list) or not raw:
        raise FdirConfigError(f"{where}: [[fdir]] must list at least one rule")
    keys = {"name", "channel", "op", "threshold", "persistence", "action", "max_response_s"}
    rules = []
    for i, entry in enumerate(raw):
        label = f"{where}: fdir rule {i + 1}"
        if not isinstance(entry, dict) or not keys <= set(entry) <= keys | {"enabled"}:
            raise FdirConfigError(f"{label} needs {', '.join(sorted(keys))} (and optionally enabled)")
        if not isinstance(entry["name"], str) or not entry["name"] or not isinstance(entry["channel"], str):
            raise FdirConfigError(f"{label}: name and channel must be non-empty strings")
        if entry["op"] not in OPERATORS:
            raise FdirConfigError(f"{label} ({entry['name']}): op must be one of {' '.join(OPERATORS)}")
        if entry["action"] not in ACTIONS:
            raise FdirConfigError(f"{label} ({entry['name']}): action must be one of {', '.join(ACTIONS)}")
        threshold, persistence, response = entry["threshold"], entry["persistence"], entry["max_response_s"]
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
            raise FdirConfigError(f"{label} ({entry['name']}): threshold must be a finite number")
        if isinstance(persistence, bool) or not isinstance(persistence, int) or not 1 <= persistence <= 100_000:
            raise FdirConfigError(f"{label} ({entry['name']}): persistence must be 1 to 100000 ticks")
        if isinstance(response, bool) or not isinstance(response, (int, float)) or not 0 < response <= 86400:
            raise FdirConfigError(f"{label} ({entry['name']}): max_response_s must be above 0 and at most 86400")
        if not isinstance(entry.get("enabled", True), bool):
            raise FdirConfigError(f"{label} ({entry['name']}): enabled must be true or false")
        rules.append(Rule(entry["name"], entry["channel"], entry["op"], float(threshold), persistence,
                          entry["action"], float(response), entry.get("enabled", True)))
    names = [r.name for r in rules]
    if len(set(names)) != len(names):
        raise FdirConfigError(f"{where}: fdir rule names must be unique")
    return tuple(rules)


@dataclass(frozen=True)
class Firing:
    rule: str
    action: str
    value: Any  # the channel's value at the firing
    latency_s: float  # condition first true -> firing
    late: bool  # latency beyond the rule's max_response_s


class Fdir:
    """The evaluator. Not thread-safe: the executive's loop calls evaluate(); commands that enable
    or disable rules go through the executive, which holds its lock."""

    def __init__(self, rules: Sequence[Rule]):
        self.rules = {r.name: r for r in rules}
        self._count = dict.fromkeys(self.rules, 0)  # consecutive ticks the condition held
        self._since: dict[str, float] = {}  # when the current episode's condition was first true
        self._fired = dict.fromkeys(self.rules, False)  # fired in the current episode
        self.firings = dict.fromkeys(self.rules, 0)  # lifetime count per rule (this start)

    def enable(self, name: str, enabled: bool) -> None:
        """FDIR_RULE_ENABLE; KeyError for an unknown rule. Disabling forgets the episode."""
        self.rules[name] = replace(self.rules[name], enabled=enabled)
        self._count[name] = 0
        self._fired[name] = False
        self._since.pop(name, None)

    def holding(self, name: str) -> bool:
        """The rule has fired and its condition has not cleared since."""
        return self._fired.get(name, False)

    def holding_action(self, action: str) -> bool:
        """An enabled rule with this action has fired and its condition has not cleared since."""
        return any(r.enabled and r.action == action and self._fired.get(r.name, False) for r in self.rules.values())

    @property
    def disabled(self) -> int:
        return sum(1 for r in self.rules.values() if not r.enabled)

    def evaluate(self, now_s: float, channels: Mapping[str, Any]) -> list[Firing]:
        """One tick: the firings it brings, in table order."""
        out = []
        for name, rule in self.rules.items():
            if not rule.enabled:
                continue
            value = channels.get(rule.channel)
            if value is None:
                continue
            if not rule.holds(value):
                self._count[name] = 0
                self._fired[name] = False
                self._since.pop(name, None)
                continue
            self._since.setdefault(name, now_s)
            self._count[name] += 1
            if self._count[name] >= rule.persistence and not self._fired[name]:
                self._fired[name] = True
                self.firings[name] += 1
                latency = now_s - self._since[name]
                out.append(Firing(name, rule.action, value, latency, latency > rule.max_response_s))
        return out
