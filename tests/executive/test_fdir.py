"""The FDIR rule evaluator (flight/executive/fdir.py): persistence, one firing per episode,
re-arming, missing channels, enable/disable, latency against max_response_s, and the rule
table's parsing with one-line errors. Invariants over hypothesis-drawn channel histories."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from flight.executive.fdir import (
    ACTIONS, DEFAULT_RULES, Fdir, FdirConfigError, OPERATORS, Rule, parse_rules, rules_for,
)
from flight.link.dictionary import load_dictionary

TICK = 0.1
LOW = Rule("LOW", "EPS_BATTERY_WH", "<", 20.0, 5, "SAFE", 1.0)


def run(fdir: Fdir, values: list, channel: str = "EPS_BATTERY_WH") -> list[tuple[int, str, float]]:
    out = []
    for i, value in enumerate(values):
        for firing in fdir.evaluate(i * TICK, {channel: value} if value is not None else {}):
            out.append((i, firing.rule, round(firing.latency_s, 6)))
    return out


def test_fires_after_its_persistence_once_per_episode_and_rearms():
    fdir = Fdir([LOW])
    assert run(fdir, [25, 19, 19, 19, 19, 19, 19, 19, 25, 19, 19, 19, 19, 19]) == [
        (5, "LOW", 0.4), (13, "LOW", 0.4)]
    assert fdir.firings["LOW"] == 2


def test_a_blip_shorter_than_the_persistence_never_fires():
    assert run(Fdir([LOW]), [19, 19, 19, 19, 25] * 5) == []


def test_a_missing_channel_neither_counts_nor_resets():
    assert run(Fdir([LOW]), [19, 19, None, None, 19, 19, 19]) == [(6, "LOW", 0.6)]


def test_disabled_rules_do_not_fire_and_enabling_starts_a_fresh_episode():
    fdir = Fdir([LOW])
    fdir.enable("LOW", False)
    assert run(fdir, [19] * 10) == []
    fdir.enable("LOW", True)
    assert [f.rule for f in fdir.evaluate(0.0, {"EPS_BATTERY_WH": 19})] == []
    with pytest.raises(KeyError):
        fdir.enable("NOPE", True)


def test_latency_beyond_max_response_is_flagged():
    slow = Rule("SLOW", "THERM_BOARD_C", ">=", 85.0, 20, "STANDBY", 1.0)
    fdir = Fdir([slow])
    firings = [f for i in range(20) for f in fdir.evaluate(i * TICK, {"THERM_BOARD_C": 90})]
    assert len(firings) == 1 and firings[0].latency_s == pytest.approx(1.9) and firings[0].late


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), st.floats(0, 40)), max_size=200), st.integers(1, 10))
def test_firings_are_never_early_and_at_most_one_per_episode(values, persistence):
    rule = Rule("R", "EPS_BATTERY_WH", "<", 20.0, persistence, "SAFE", 100.0)
    fdir = Fdir([rule])
    held = 0  # consecutive true evaluations, missing values skipped
    fired_in_episode = False
    for i, value in enumerate(values):
        firings = fdir.evaluate(i * TICK, {} if value is None else {"EPS_BATTERY_WH": value})
        if value is None:
            assert firings == []
            continue
        if value < 20.0:
            held += 1
        else:
            held, fired_in_episode = 0, False
        expect = held >= persistence and not fired_in_episode
        assert bool(firings) == expect
        fired_in_episode = fired_in_episode or expect


def test_the_shipped_rules_watch_channels_the_dictionary_has_or_the_next_work_adds():
    channels = set(load_dictionary().channel_by_name)
    for rule in DEFAULT_RULES:
        assert rule.action in ACTIONS and rule.op in OPERATORS
        assert rule.channel in channels or rule.channel == "LINK_SILENCE_S", rule  # LINK_SILENCE_S: with the wiring
    adapted = {r.name: r.threshold for r in rules_for(30.0, 70.0, 10.0)}
    assert (adapted["BATTERY_LOW"], adapted["OVER_TEMP_THROTTLE"], adapted["OVER_TEMP_STOP"]) == (30.0, 65.0, 70.0)


def test_the_engine_rules_restart_it_on_each_report_of_its_supervisor():
    """The supervisor restarts nothing by itself in the node: these rules are the response."""
    rules = {r.name: r for r in DEFAULT_RULES}
    d = load_dictionary()
    assert rules["ENGINE_DIED"].threshold == d.enum_value("ENGINE_FAULT", "DIED")
    assert rules["ENGINE_FAILED"].threshold == d.enum_value("ENGINE_STATE", "FAILED")
    watched = {rules[name].channel for name in ("ENGINE_DIED", "ENGINE_HUNG", "ENGINE_SILENT")}
    assert watched == {"ENGINE_FAULT", "ENGINE_HEARTBEAT_AGE_S", "ENGINE_TOKEN_SILENCE_S"}
    assert all(rules[name].action == "ENGINE_RESTART" for name in ("ENGINE_DIED", "ENGINE_HUNG", "ENGINE_SILENT"))
    assert rules["ENGINE_SILENT"].threshold == 120.0  # N, the table's


GOOD = {"name": "HOT", "channel": "THERM_BOARD_C", "op": ">=", "threshold": 80, "persistence": 3, "action": "STANDBY",
        "max_response_s": 1.0}


def test_a_rule_table_parses():
    [rule] = parse_rules([GOOD])
    assert rule == Rule("HOT", "THERM_BOARD_C", ">=", 80.0, 3, "STANDBY", 1.0, True)


@pytest.mark.parametrize("change, words", [
    ({"op": "=>"}, "op"), ({"action": "REBOOT"}, "action"), ({"threshold": float("nan")}, "threshold"),
    ({"threshold": True}, "threshold"), ({"persistence": 0}, "persistence"), ({"persistence": 1.5}, "persistence"),
    ({"max_response_s": 0}, "max_response_s"), ({"enabled": "yes"}, "enabled"), ({"extra": 1}, "needs"),
    ({"name": ""}, "name"),
])
def test_a_bad_rule_is_one_line_naming_it(change, words):
    with pytest.raises(FdirConfigError) as bad:
        parse_rules([{**GOOD, **change}], "node.toml")
    text = str(bad.value)
    assert len(text.splitlines()) == 1 and text.startswith("node.toml: fdir rule 1") and words in text


def test_rule_names_are_unique_and_a_table_is_not_empty():
    with pytest.raises(FdirConfigError, match="unique"):
        parse_rules([GOOD, GOOD])
    with pytest.raises(FdirConfigError, match="at least one"):
        parse_rules([])
