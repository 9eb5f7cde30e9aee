"""The criteria (hil/criteria.py) on recorded run data: each passes on a good run and fails on the
fault it exists to catch."""
from __future__ import annotations

import math

from hil import criteria
from hil.criteria import JobRecord, ScrubEvent, Upset

BLOCK = 65536


def result(finished: float, tokens: int = 10) -> dict:
    return {"finished": finished, "tokens": tokens, "joules": 2.0, "cost_usd": 0.01, "compute_s": 0.1}


def test_job_counts_lost_duplicated_and_deadlines():
    jobs = [JobRecord(1, 0.0, 100.0, result(90.0)), JobRecord(2, 0.0, 100.0, result(110.0)),
            JobRecord(3, 0.0, 0.0, result(500.0)), JobRecord(4, 0.0, 100.0, None)]
    counts = criteria.job_counts(jobs, completed_onboard=3)
    assert counts == {"submitted": 4, "delivered": 3, "lost": 1, "duplicated": 0, "with_deadline": 3,
                      "deadline_hit_rate": 1 / 3}
    lost, duplicated = criteria.results(counts, None)
    assert not lost.passed and duplicated.passed
    assert criteria.results(counts, 3)[0].passed  # a scenario that only asks for 3 delivered
    unsent = {**criteria.job_counts(jobs[:3], 3), "not_submitted": 1}
    assert not criteria.results(unsent, None)[0].passed  # a job the ground never got up is lost too
    assert not criteria.results(criteria.job_counts(jobs, completed_onboard=6), None)[1].passed
    assert not criteria.deadline_rate(counts, 0.5).passed and criteria.deadline_rate(counts, 0.3).passed


def test_no_deadline_means_a_full_hit_rate():
    assert criteria.job_counts([JobRecord(1, 0.0, 0.0, result(1.0))], 1)["deadline_hit_rate"] == 1.0


def test_battery_and_temperature():
    assert criteria.battery(0.0, 30.0).passed and not criteria.battery(-0.01, 30.0).passed
    assert criteria.battery(5.0, 30.0).value == 35.0  # the lowest charge seen
    assert criteria.temperature(85.0, 85.0).passed and not criteria.temperature(85.01, 85.0).passed


def test_fdir_fails_on_a_late_firing_only():
    on_time = {"rule": "BATTERY_LOW", "action": "SAFE", "latency_ms": 400, "late": ""}
    late = {"rule": "OVER_TEMP_STOP", "action": "STANDBY", "latency_ms": 1300, "late": ", LATE"}
    assert criteria.fdir([on_time]).passed and criteria.fdir([]).passed
    verdict = criteria.fdir([on_time, late])
    assert not verdict.passed and verdict.value["late"] == ["OVER_TEMP_STOP 1300 ms"]


def test_seu_detected_and_repaired_within_a_scrub_period():
    upsets = [Upset(100.0, 5 * BLOCK + 7, 42), Upset(100.0, 9 * BLOCK, 42)]
    events = [ScrubEvent("SCRUB_UPSET_DETECTED", 5, 120.0), ScrubEvent("SCRUB_UPSET_REPAIRED", 5, 120.1),
              ScrubEvent("SCRUB_UPSET_DETECTED", 9, 150.0), ScrubEvent("SCRUB_UPSET_REPAIRED", 9, 170.5)]
    outcomes = criteria.seu_outcomes(upsets, events, [], scrub_period_s=60.0)
    assert [o["repaired_after_s"] for o in outcomes] == [20.1, 70.5]
    verdict = criteria.seu(outcomes, 60.0)
    assert not verdict.passed and verdict.value["missed"] == 1
    assert criteria.seu(criteria.seu_outcomes(upsets, events, [], scrub_period_s=80.0), 80.0).passed


def test_an_earlier_repair_of_the_same_block_does_not_count_for_a_later_upset():
    events = [ScrubEvent("SCRUB_UPSET_DETECTED", 3, 50.0), ScrubEvent("SCRUB_UPSET_REPAIRED", 3, 50.1)]
    outcomes = criteria.seu_outcomes([Upset(100.0, 3 * BLOCK, 42)], events, [], 60.0)
    assert not criteria.seu(outcomes, 60.0).passed


def test_an_upset_wiped_by_an_engine_restart_is_void():
    outcomes = criteria.seu_outcomes([Upset(100.0, BLOCK, 42)], [], [(105.0, 43)], 60.0)
    assert outcomes[0]["void"] and criteria.seu(outcomes, 60.0).passed


def test_brownout_needs_safe_while_it_lasts():
    window = [(100.0, 200.0)]
    assert criteria.brownout(window, [(90.0, 3), (150.0, 1)]).passed
    assert not criteria.brownout(window, [(90.0, 3), (150.0, 3), (250.0, 1)]).passed


def test_cost_must_be_finite():
    assert criteria.cost(0.2, 1e-4).passed
    assert not criteria.cost(None, 1e-4).passed and not criteria.cost(math.inf, 1e-4).passed
