"""FDIR evaluation per tick with the shipped rules (issue 8): Fdir.evaluate alone, the part of
the executive's tick that test_executive_bench.py times together with everything else.

The rules are the node's default table (rules_for at the default battery floor and thermal
limits, so the config's [scheduler] values make no difference to the cost). The channels are a
whole tick's housekeeping: every channel of the dictionary plus the link's LINK_SILENCE_S, as
the executive hands them over. Two cases:
- nominal: no condition holds (what almost every tick sees): each rule is one lookup and one
  comparison that resets nothing new;
- all holding: every rule's condition holds at once and stays so; each fires once, when its
  persistence is reached (within the first ten ticks), and then only counts on, tick after tick.
The watched channels' values are derived from each rule's own threshold and operator, so the
cases stay what they say whatever rules the table gains.

`make test` runs each body once (benchmarks disabled) and checks the firings; assertions are
never on time. evaluate_us (median of TIMED ticks timed with perf_counter, so filled with
benchmarks disabled too) and its share of the 100 ms tick go into extra_info.
"""
from __future__ import annotations

import statistics
import time
from typing import Any

import pytest

from flight.executive.fdir import Fdir, Rule, rules_for
from flight.link.dictionary import load_dictionary

TIMED = 2000
TICK_S = 0.1
HOLDS = {"<": -1.0, "<=": 0.0, ">": 1.0, ">=": 0.0, "==": 0.0, "!=": 1.0}  # threshold + this: true
CLEARS = {"<": 1.0, "<=": 1.0, ">": -1.0, ">=": -1.0, "==": 1.0, "!=": 0.0}  # threshold + this: false


def _channels(rules: tuple[Rule, ...], holding: bool) -> dict[str, Any]:
    """A tick's housekeeping in which every rule's condition is `holding` (rules that share a
    channel, as the two over-temperature ones do, get a value that suits them all)."""
    channels: dict[str, Any] = {c.name: 0 for c in load_dictionary().channels}
    channels["LINK_SILENCE_S"] = 0.0
    shift = HOLDS if holding else CLEARS
    for channel in {rule.channel for rule in rules}:
        watching = [rule for rule in rules if rule.channel == channel]
        channels[channel] = next(rule.threshold + shift[rule.op] for rule in watching
                                 if all(other.holds(rule.threshold + shift[rule.op]) == holding for other in watching))
    return channels


@pytest.mark.parametrize("case", ["nominal", "all holding"])
def test_fdir_evaluate_shipped_rules(benchmark, case: str) -> None:
    rules = rules_for(20.0, 85.0, 10.0)
    fdir = Fdir(rules)
    channels = _channels(rules, holding=case == "all holding")
    clock = [0.0]

    def tick() -> list:
        clock[0] += TICK_S
        return fdir.evaluate(clock[0], channels)

    first = tick()  # untimed: with every condition true, the rules of persistence 1 fire here
    benchmark.pedantic(tick, rounds=1000, warmup_rounds=10, iterations=1)
    times = []
    for _ in range(TIMED):
        t0 = time.perf_counter()
        tick()
        times.append(time.perf_counter() - t0)
    evaluate_us = statistics.median(times) * 1e6
    if case == "nominal":
        assert first == [] and sum(fdir.firings.values()) == 0
    else:  # each rule fired exactly once over all those ticks: once per episode
        assert fdir.firings == dict.fromkeys(fdir.rules, 1)
    benchmark.extra_info.update(case=case, rules=len(rules), channels=len(channels), evaluate_us=round(evaluate_us, 2),
                                share_of_tick_pct=round(evaluate_us / (TICK_S * 1e6) * 100, 4))
