"""The node's config for a HIL run: the scenario's [flight] overrides, the rig's own settings and
the link timers converted from simulated to wall seconds, written as the TOML `flight run
--config` reads and checked by the node's own loader first (so a bad override is one line, exit 2,
before anything starts)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flight.config import ConfigError, NodeConfig, load_config
from hil.scenario import ScenarioError

# [link] timers in simulated seconds (the flight's defaults) and the least wall time each can be:
# below it the ptys and the processes' threads cannot keep up, so K does not shorten them further.
LINK_TIMERS_SIM_S = {"hk_period_s": 1.0, "contact_timeout_s": 10.0, "rto_s": 3.0}
LINK_TIMER_FLOOR_S = {"hk_period_s": 0.2, "contact_timeout_s": 2.0, "rto_s": 0.5}


def wall_link_timers(flight: dict[str, Any], accel: float) -> dict[str, float]:
    """The [link] timers in wall seconds: the scenario's (or the defaults) in simulated seconds / K,
    each at least its floor."""
    given = flight.get("link", {})
    if not isinstance(given, dict):
        raise ScenarioError("flight.link must be a table")
    timers = {}
    for key, default in LINK_TIMERS_SIM_S.items():
        value = given.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ScenarioError(f"flight.link.{key} must be simulated seconds above 0, got {value!r}")
        timers[key] = max(value / accel, LINK_TIMER_FLOOR_S[key])
    return timers


def compose(flight: dict[str, Any], accel: float, battery_floor_wh: float) -> dict[str, Any]:
    """The config tables: the scenario's, with the link timers in wall seconds and the energy floor
    the environment's (one floor for the battery model and the scheduler)."""
    tables: dict[str, Any] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in flight.items()}
    timers = wall_link_timers(flight, accel)
    tables.setdefault("link", {}).update(timers)
    scheduler = tables.setdefault("scheduler", {})
    if not isinstance(scheduler, dict):
        raise ScenarioError("flight.scheduler must be a table")
    if "battery_floor_wh" in scheduler:
        raise ScenarioError("flight.scheduler.battery_floor_wh comes from environment.battery_floor: leave it out")
    scheduler["battery_floor_wh"] = round(battery_floor_wh, 6)
    return tables


def write(tables: dict[str, Any], path: Path) -> NodeConfig:
    """Write the tables as TOML and load them as flight run will; ScenarioError if it refuses."""
    lines: list[str] = []
    for name, value in tables.items():
        if isinstance(value, dict):
            lines.append(f"[{name}]")
            lines += [f"{key} = {_value(v, f'{name}.{key}')}" for key, v in value.items()]
        elif isinstance(value, list) and all(isinstance(v, dict) for v in value):
            for row in value:
                lines.append(f"[[{name}]]")
                lines += [f"{key} = {_value(v, f'{name}.{key}')}" for key, v in row.items()]
        else:
            raise ScenarioError(f"flight.{name} must be a table or an array of tables")
        lines.append("")
    path.write_text("\n".join(lines))
    try:
        return load_config(path)
    except ConfigError as exc:
        raise ScenarioError(f"flight: {exc}") from None


def _value(value: Any, where: str) -> str:
    # JSON's strings, numbers and booleans are TOML's too (finite numbers: TOML has no NaN literal
    # in JSON's spelling, and the config refuses non-finite values anyway)
    if isinstance(value, (bool, int, float, str)):
        return json.dumps(value)
    raise ScenarioError(f"flight.{where} must be a string, number or boolean")
