"""The scheduling decision (csrc/tk_sched.c through flight.executive.scheduler) against a
reference model written here from the rules in csrc/tk_sched.h, not from the C code: the
energy projection evaluates each piece of the horizon at its midpoint against explicit dark
intervals, and the batch is a full Python sort. Hypothesis draws job tables, energy and thermal
states and power tables; the properties are the issue's: the plan never crosses the energy
floor (and takes the highest level that does not), thermal limits, batch order, no starvation,
determinism, and one-line errors for bad inputs."""
from __future__ import annotations

import math
import random
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from flight.executive import _sched
from flight.executive.scheduler import (JOB_DTYPE, MAX_BATCH, MAX_LEVELS, REASON_TEXT, REASONS,
                                        Decision, Energy, Job, PowerLevel, Scheduler, Thermal,
                                        job_table)
from flight.sensors.sim import SimConfig, SimSensors

INF = math.inf
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ------------------------------------------------------------------------------------------
# The reference model


def ref_horizon(e: Energy, horizon_min_s: float) -> float:
    """At least horizon_min_s, and through the next eclipse exit when one is ahead."""
    return max(horizon_min_s, e.eclipse_exit_s) if math.isfinite(e.eclipse_exit_s) else horizon_min_s


def ref_dark(e: Energy) -> list[tuple[float, float]]:
    """The dark intervals ahead, in seconds from now."""
    if not e.in_eclipse:
        return [(e.eclipse_entry_s, e.eclipse_exit_s)]
    dark = [(0.0, e.eclipse_exit_s)]
    if e.eclipse_entry_s > e.eclipse_exit_s:  # a later entry is known
        dark.append((e.eclipse_entry_s, INF))
    return dark


def ref_project(e: Energy, horizon: float, watts: float, compute_s: float) -> tuple[float, float]:
    """(lowest, final) charge in Wh: constant power between consecutive event times, each piece
    classified at its midpoint; the battery holds at most its capacity."""
    dark = ref_dark(e)
    times = {0.0, horizon, min(max(compute_s, 0.0), horizon)}
    for a, b in dark:
        times.update(min(max(x, 0.0), horizon) for x in (a, b))
    times = sorted(times)
    soc = min(e.soc_wh, e.capacity_wh)
    low = soc
    for a, b in zip(times, times[1:]):
        mid = (a + b) / 2
        sunlit = not any(d0 <= mid < d1 for d0, d1 in dark)
        power = (e.solar_w if sunlit else 0.0) - e.base_load_w - (watts if mid < compute_s else 0.0)
        soc = min(e.capacity_wh, soc + power * (b - a) / 3600.0)
        low = min(low, soc)
    return low, soc


def ref_level_projections(levels, jobs, e: Energy, horizon_min_s: float) -> list[tuple[float, float]]:
    """Each level's (lowest, final) projected charge, compute lasting as long as the queued work."""
    horizon = ref_horizon(e, horizon_min_s)
    work = sum(j.tokens_remaining for j in jobs if j.tokens_remaining > 0)
    return [ref_project(e, horizon, lv.watts, min(horizon, work / lv.tokens_per_s)) for lv in levels]


def ref_thermal_allowed(levels, t: Thermal) -> list[bool]:
    if t.temp_c >= t.limit_c:
        return [False] * len(levels)
    if t.margin_c > 0 and t.temp_c > t.limit_c - t.margin_c:
        lo, hi = levels[0].watts, levels[-1].watts
        cap = lo + (t.limit_c - t.temp_c) / t.margin_c * (hi - lo)
        return [lv.watts <= cap for lv in levels]
    return [True] * len(levels)


def ref_key(j: Job, now: float, aging: float, hysteresis: float) -> tuple:
    eff = j.priority + aging * max(0.0, now - j.arrival_s)
    if j.running:
        eff += hysteresis
    return (-eff, j.deadline_s if j.deadline_s > 0 else INF, j.id)


def ref_batch(jobs, now: float, n_batch: int, aging: float, hysteresis: float) -> list[int]:
    runnable = [j for j in jobs if j.tokens_remaining > 0]
    runnable.sort(key=lambda j: ref_key(j, now, aging, hysteresis))
    return [j.id for j in runnable[:n_batch]]


# ------------------------------------------------------------------------------------------
# Strategies


@st.composite
def power_tables(draw) -> list[PowerLevel]:
    n = draw(st.integers(1, 5))
    watts = draw(st.floats(0.0, 10.0))
    tps = draw(st.floats(1.0, 20.0))
    levels = []
    for i in range(n):
        levels.append(PowerLevel(f"L{i}", watts, tps))
        watts += draw(st.floats(0.5, 20.0))
        tps += draw(st.floats(1.0, 50.0))
    return levels


@st.composite
def energies(draw) -> Energy:
    capacity = draw(st.floats(10.0, 500.0))
    in_eclipse = draw(st.booleans())
    if draw(st.integers(0, 9)) == 0:  # no eclipse ahead
        entry = exit_ = INF
    elif in_eclipse:
        exit_ = draw(st.floats(0.0, 3000.0))
        entry = draw(st.sampled_from([0.0, exit_ + draw(st.floats(0.0, 4000.0))]))
    else:
        entry = draw(st.floats(0.0, 6000.0))
        exit_ = entry + draw(st.floats(0.0, 3000.0))
    return Energy(soc_wh=capacity * draw(st.floats(0.0, 1.05)), capacity_wh=capacity,
                  floor_wh=capacity * draw(st.floats(0.0, 0.9)), solar_w=draw(st.floats(0.0, 150.0)),
                  eclipse_entry_s=entry, eclipse_exit_s=exit_, in_eclipse=in_eclipse,
                  base_load_w=draw(st.floats(0.0, 40.0)))


@st.composite
def thermals(draw) -> Thermal:
    limit = draw(st.floats(50.0, 100.0))
    kind = draw(st.integers(0, 9))  # mostly below the limit, sometimes at or above it
    offset = 0.0 if kind == 0 else draw(st.floats(0.0, 5.0)) if kind == 1 else draw(st.floats(-40.0, -1e-6))
    return Thermal(temp_c=limit + offset, limit_c=limit,
                   margin_c=draw(st.sampled_from([0.0, 2.0, 10.0, 30.0])))


NOW = 10_000.0


@st.composite
def job_lists(draw, max_jobs: int = 40) -> list[Job]:
    n = draw(st.integers(0, max_jobs))
    ids = draw(st.lists(st.integers(0, 2**32 - 1), min_size=n, max_size=n, unique=True))
    jobs = []
    for job_id in ids:
        jobs.append(Job(
            id=job_id, priority=draw(st.integers(-3, 9)),
            tokens_remaining=draw(st.sampled_from([0, 1, 7, 50, 400, 3000, 100_000])),
            tokens_done=draw(st.integers(0, 500)),
            # whole and half seconds make equal effective priorities (ties) common
            # (a few in the future: clock skew; they have not waited, so they do not age)
            arrival_s=NOW - draw(st.integers(-200, 4000)) / 2,
            deadline_s=draw(st.sampled_from([0.0, 0.0, 5_000.0, 12_000.0, 12_500.0, 20_000.0])),
            running=draw(st.booleans())))
    return jobs


params = st.fixed_dictionaries({
    "n_batch": st.integers(1, 8),
    "aging_per_s": st.sampled_from([0.0, 0.001, 0.01, 0.5]),
    "hysteresis": st.sampled_from([0.0, 0.5, 2.0]),
    "horizon_min_s": st.sampled_from([1.0, 600.0, 4000.0]),
})

PLENTY = Energy(soc_wh=100.0, capacity_wh=100.0, floor_wh=10.0, solar_w=1000.0,
                eclipse_entry_s=INF, eclipse_exit_s=INF, in_eclipse=False, base_load_w=5.0)
COOL = Thermal(temp_c=20.0, limit_c=80.0, margin_c=10.0)
LEVELS = [PowerLevel("7W", 7.0, 10.0), PowerLevel("15W", 15.0, 25.0), PowerLevel("25W", 25.0, 40.0)]


def tol(e: Energy) -> float:
    return 1e-9 * max(1.0, e.capacity_wh)


# ------------------------------------------------------------------------------------------
# Energy and thermal


@SETTINGS
@given(levels=power_tables(), jobs=job_lists(), e=energies(), t=thermals(), p=params)
def test_the_plan_never_crosses_the_floor_and_takes_the_highest_level_that_does_not(levels, jobs, e, t, p):
    d = Scheduler(levels, **p).decide(NOW, jobs, e, t)
    projections = ref_level_projections(levels, jobs, e, p["horizon_min_s"])
    lows = [low for low, _ in projections]
    allowed = ref_thermal_allowed(levels, t)
    eps = tol(e)
    assert d.horizon_s == ref_horizon(e, p["horizon_min_s"])
    if d.level >= 0:
        assert lows[d.level] >= e.floor_wh - eps, "the chosen level crosses the floor"
        assert allowed[d.level]
        assert d.soc_min_wh == pytest.approx(lows[d.level], abs=eps) and d.soc_min_wh >= e.floor_wh
        assert d.soc_end_wh == pytest.approx(projections[d.level][1], abs=eps)
        # no higher level that the thermal rule allows keeps above the floor
        for lv in range(d.level + 1, len(levels)):
            assert not allowed[lv] or lows[lv] < e.floor_wh + eps
        assert d.tokens_per_s == levels[d.level].tokens_per_s
    else:
        assert d.batch_ids == () and d.tokens_per_s == 0.0
        work = sum(j.tokens_remaining for j in jobs)
        if work == 0:
            assert d.reason == "IDLE_NO_JOBS"
        elif d.reason == "IDLE_ENERGY_FLOOR":
            assert all(low < e.floor_wh + eps for low in lows)
            assert d.energy_level == -1
        else:
            assert d.reason == "IDLE_THERMAL"
            assert not any(a and low >= e.floor_wh - eps for a, low in zip(allowed, lows))
        idle_low, idle_end = ref_project(e, d.horizon_s, 0.0, 0.0)
        assert d.soc_min_wh == pytest.approx(idle_low, abs=eps)
        assert d.soc_end_wh == pytest.approx(idle_end, abs=eps)


@SETTINGS
@given(levels=power_tables(), jobs=job_lists(), e=energies(), t=thermals(), p=params)
def test_reason_codes(levels, jobs, e, t, p):
    d = Scheduler(levels, **p).decide(NOW, jobs, e, t)
    assert REASONS[d.reason_code] == d.reason and d.reason in REASON_TEXT
    top = len(levels) - 1
    if not any(j.tokens_remaining > 0 for j in jobs):
        assert d.reason == "IDLE_NO_JOBS"
    elif t.temp_c >= t.limit_c:
        assert d.reason == "IDLE_THERMAL" and d.thermal_level == -1
    elif d.level == top:
        assert d.reason == "RUN"
    elif d.level >= 0:
        # thermal binds when it excluded a level energy allowed; energy otherwise
        expected = "THROTTLED_THERMAL" if d.energy_level > d.thermal_level else "THROTTLED_ENERGY"
        assert d.reason == expected
        if d.reason == "THROTTLED_ENERGY":  # thermal allows the energy rule's best: it is chosen
            assert d.level == d.energy_level
        else:
            assert d.level <= d.thermal_level < d.energy_level


@pytest.mark.parametrize("temp", [80.0, 80.000001, 95.0])
def test_at_or_above_the_thermal_limit_the_node_idles(temp):
    jobs = [Job(1, tokens_remaining=10, running=True)]
    d = Scheduler(LEVELS, 2).decide(NOW, jobs, PLENTY, Thermal(temp, 80.0, 10.0))
    assert (d.level, d.reason, d.batch_ids, d.n_preempted) == (-1, "IDLE_THERMAL", (), 1)


@pytest.mark.parametrize("temp, level, reason", [
    (60.0, 2, "RUN"),                 # below the band
    (70.0, 2, "RUN"),                 # at its lower edge: cap = 25 W
    (70.5, 1, "THROTTLED_THERMAL"),   # cap = 7 + 0.95 * 18 = 24.1 W
    (75.0, 1, "THROTTLED_THERMAL"),   # cap = 7 + 0.5 * 18 = 16 W
    (79.9, 0, "THROTTLED_THERMAL"),   # cap just above 7 W: the lowest level still runs
])
def test_inside_the_margin_the_level_is_capped(temp, level, reason):
    d = Scheduler(LEVELS, 2).decide(NOW, [Job(1, tokens_remaining=10)], PLENTY, Thermal(temp, 80.0, 10.0))
    assert (d.level, d.reason) == (level, reason)


def test_the_horizon_runs_through_the_coming_eclipse():
    """Sunlit with an eclipse 100 s ahead lasting 2100 s: the top level (30 W) would keep above
    the floor for ten minutes, but not through the eclipse; 15 W does (worked by hand)."""
    levels = [PowerLevel("5W", 5.0, 10.0), PowerLevel("15W", 15.0, 30.0), PowerLevel("30W", 30.0, 60.0)]
    e = Energy(soc_wh=50.0, capacity_wh=100.0, floor_wh=30.0, solar_w=60.0, eclipse_entry_s=100.0,
               eclipse_exit_s=2200.0, in_eclipse=False, base_load_w=10.0)
    jobs = [Job(1, tokens_remaining=1_000_000)]
    d = Scheduler(levels, 1, horizon_min_s=600.0).decide(NOW, jobs, e, COOL)
    assert (d.level, d.reason, d.horizon_s) == (1, "THROTTLED_ENERGY", 2200.0)
    # 50 + 100 s at +35 W, then 2100 s at -25 W
    assert d.soc_min_wh == pytest.approx(50 + 35 * 100 / 3600 - 25 * 2100 / 3600)
    # the same battery with no eclipse ahead runs at the top level
    d = Scheduler(levels, 1, horizon_min_s=600.0).decide(
        NOW, jobs, replace(e, eclipse_entry_s=INF, eclipse_exit_s=INF), COOL)
    assert (d.level, d.reason, d.horizon_s) == (2, "RUN", 600.0)


def test_idle_thermal_when_energy_allows_only_levels_too_hot():
    """The slow level would compute for 1000 s and cross the floor, the fast one for 1 s and not;
    near the thermal limit only the slow one is allowed: idle, for thermal reasons."""
    levels = [PowerLevel("slow", 5.0, 1.0), PowerLevel("fast", 50.0, 1000.0)]
    e = Energy(soc_wh=31.0, capacity_wh=100.0, floor_wh=30.0, solar_w=0.0, eclipse_entry_s=0.0,
               eclipse_exit_s=INF, in_eclipse=True, base_load_w=0.0)
    s = Scheduler(levels, 1, horizon_min_s=3600.0)
    jobs = [Job(1, tokens_remaining=1000)]
    assert s.decide(NOW, jobs, e, COOL).level == 1
    d = s.decide(NOW, jobs, e, Thermal(79.0, 80.0, 10.0))
    assert (d.level, d.reason, d.energy_level, d.thermal_level) == (-1, "IDLE_THERMAL", 1, 0)


def test_compute_lasts_only_as_long_as_the_work():
    """A short job at a high level costs little energy: it is counted for its own duration."""
    e = Energy(soc_wh=32.0, capacity_wh=100.0, floor_wh=30.0, solar_w=0.0, eclipse_entry_s=0.0,
               eclipse_exit_s=INF, in_eclipse=True, base_load_w=0.0)
    s = Scheduler(LEVELS, 1, horizon_min_s=3600.0)
    short = s.decide(NOW, [Job(1, tokens_remaining=40)], e, COOL)  # 1 s at 25 W
    assert (short.level, short.reason) == (2, "RUN")
    assert short.soc_end_wh == pytest.approx(32.0 - 25.0 / 3600)
    long = s.decide(NOW, [Job(1, tokens_remaining=10**6)], e, COOL)  # the whole hour: 7 W x 1 h > 2 Wh
    assert (long.level, long.reason) == (-1, "IDLE_ENERGY_FLOOR")


@pytest.mark.parametrize("in_eclipse, entry, exit_, expected_low, expected_end", [
    # sunlit: +90 W for 1000 s, -10 W for 1000 s (dark), +90 W for 2000 s
    (False, 1000.0, 2000.0, 50.0, 50 + 25 - 10 * 1000 / 3600 + 50),
    # in eclipse: -10 W until the exit at 1000 s, +90 W to the next entry at 2000 s, -10 W after
    (True, 2000.0, 1000.0, 50 - 10 * 1000 / 3600, 50 - 10 * 1000 / 3600 + 25 - 10 * 2000 / 3600),
    # in eclipse with no later entry known (the sensors report 0): sun from the exit on
    (True, 0.0, 1000.0, 50 - 10 * 1000 / 3600, 50 - 10 * 1000 / 3600 + 75),
    # no eclipse ahead
    (False, INF, INF, 50.0, 50 + 100),
])
def test_projection_by_hand(in_eclipse, entry, exit_, expected_low, expected_end):
    e = Energy(soc_wh=50.0, capacity_wh=200.0, floor_wh=0.0, solar_w=100.0, eclipse_entry_s=entry,
               eclipse_exit_s=exit_, in_eclipse=in_eclipse, base_load_w=10.0)
    assert _sched.project(e, 4000.0, 0.0, 0.0) == pytest.approx((expected_low, expected_end))
    assert ref_project(e, 4000.0, 0.0, 0.0) == pytest.approx((expected_low, expected_end))
    # 36 W of compute for the first 500 s: 5 Wh less at the end (no segment reaches capacity)
    _, end = _sched.project(e, 4000.0, 36.0, 500.0)
    assert end == pytest.approx(expected_end - 5.0)


def test_charge_above_capacity_reads_as_full_and_surplus_solar_is_shed():
    e = replace(PLENTY, soc_wh=120.0, eclipse_entry_s=0.0, eclipse_exit_s=600.0)
    d = Scheduler(LEVELS, 1, horizon_min_s=600.0).decide(NOW, [], e, COOL)
    assert d.soc_min_wh == pytest.approx(100.0 - 5.0 * 600 / 3600) and d.reason == "IDLE_NO_JOBS"
    assert _sched.project(PLENTY, 3600.0, 0.0, 0.0) == (100.0, 100.0)


def test_energy_from_a_sim_reading_in_eclipse():
    """The sensors report entry 0 and solar 0 in eclipse: the plan counts sun after the exit
    from the sunlit value given, and nothing is counted before it."""
    clock = [0.0]
    sensors = SimSensors(SimConfig(), clock=lambda: clock[0])
    clock[0] = SimConfig().period_s - 600.0  # ten minutes before the eclipse exit
    r = sensors.read()
    assert r.in_eclipse and r.eclipse_entry_in_s == 0.0
    e = Energy.from_reading(r, floor_wh=20.0, compute_w=0.0, sunlit_solar_w=60.0)
    assert (e.solar_w, e.base_load_w) == (60.0, 12.0)
    d = Scheduler(LEVELS, 2).decide(r.time_s, [Job(1, tokens_remaining=10**6)], e, COOL)
    assert d.horizon_s == 600.0 and d.level >= 0
    low, _ = ref_project(e, 600.0, LEVELS[d.level].watts, 600.0)
    assert d.soc_min_wh == pytest.approx(low)


# ------------------------------------------------------------------------------------------
# The batch


@SETTINGS
@given(jobs=job_lists(), p=params, now=st.sampled_from([NOW, NOW + 0.5, NOW + 7200.0]))
def test_the_batch_is_the_top_n_by_priority_deadline_and_id(jobs, p, now):
    d = Scheduler(LEVELS, **p).decide(now, jobs, PLENTY, COOL)
    expected = ref_batch(jobs, now, p["n_batch"], p["aging_per_s"], p["hysteresis"])
    if not expected:
        assert d.reason == "IDLE_NO_JOBS" and d.batch_ids == ()
        return
    assert d.reason == "RUN"
    assert list(d.batch_ids) == expected
    assert [jobs[i].id for i in d.batch_rows] == expected
    assert len(d.batch_ids) <= p["n_batch"]
    assert all(jobs[i].tokens_remaining > 0 for i in d.batch_rows)
    assert d.n_runnable == sum(j.tokens_remaining > 0 for j in jobs)
    assert d.work_tokens == sum(j.tokens_remaining for j in jobs)
    running = {j.id for j in jobs if j.running and j.tokens_remaining > 0}
    assert d.n_preempted == len(running - set(d.batch_ids))


@SETTINGS
@given(deadlines=st.lists(st.sampled_from([0.0, 100.0, 200.0, 300.0]), min_size=1, max_size=30),
       n_batch=st.integers(1, 10), aging=st.sampled_from([0.0, 0.1]))
def test_equal_priorities_run_in_deadline_order_then_lowest_id(deadlines, n_batch, aging):
    # same priority, same arrival: aging adds the same to all, so deadlines decide
    ids = random.Random(len(deadlines)).sample(range(1000), len(deadlines))
    jobs = [Job(i, priority=3, tokens_remaining=5, arrival_s=NOW - 50, deadline_s=dl)
            for i, dl in zip(ids, deadlines)]
    d = Scheduler(LEVELS, n_batch, aging_per_s=aging).decide(NOW, jobs, PLENTY, COOL)
    order = sorted(jobs, key=lambda j: (j.deadline_s if j.deadline_s else INF, j.id))
    assert list(d.batch_ids) == [j.id for j in order[:n_batch]]


def test_zero_tokens_and_empty_tables():
    s = Scheduler(LEVELS, 4)
    d = s.decide(NOW, [], PLENTY, COOL)
    assert (d.level, d.reason, d.batch_ids, d.n_runnable, d.level_name) == (-1, "IDLE_NO_JOBS", (), 0, None)
    done = [Job(i, priority=9, tokens_remaining=0, tokens_done=10, running=True) for i in range(5)]
    d = s.decide(NOW, done, PLENTY, COOL)
    assert (d.reason, d.batch_ids, d.n_preempted) == ("IDLE_NO_JOBS", (), 0)
    d = s.decide(NOW, done + [Job(99, priority=-5, tokens_remaining=1)], PLENTY, COOL)
    assert (d.reason, d.batch_ids, d.level_name) == ("RUN", (99,), "25W")
    d = s.decide(NOW, job_table([]), PLENTY, COOL)
    assert d.reason == "IDLE_NO_JOBS"


@pytest.mark.parametrize("lead, displaced", [(0.0, False), (0.49, False), (0.5, False), (0.51, True), (3.0, True)])
def test_hysteresis_a_running_job_keeps_its_place_unless_beaten_by_more_than_the_margin(lead, displaced):
    """A waiting job whose effective priority leads the running one's by `lead`: it takes the
    single batch place only when the lead exceeds the hysteresis (0.5); at exactly 0.5 the keys
    tie and the deadline (the running job's, earlier) keeps it."""
    aging = 0.125  # a power of two: the leads below are exact
    running = Job(1, priority=2, tokens_remaining=10, arrival_s=NOW - 8, deadline_s=500.0, running=True)
    waiting = Job(2, priority=2, tokens_remaining=10, arrival_s=NOW - 8 - lead / aging, deadline_s=600.0)
    s = Scheduler(LEVELS, 1, aging_per_s=aging, hysteresis=0.5)
    d = s.decide(NOW, [running, waiting], PLENTY, COOL)
    assert d.batch_ids == ((2,) if displaced else (1,))
    assert d.n_preempted == (1 if displaced else 0)
    # with no hysteresis any lead wins, and equal keys fall to the deadline
    d0 = Scheduler(LEVELS, 1, aging_per_s=aging, hysteresis=0.0).decide(NOW, [running, waiting], PLENTY, COOL)
    assert d0.batch_ids == ((2,) if lead > 0 else (1,))


@SETTINGS
@given(jobs=job_lists(max_jobs=20), h=st.sampled_from([0.5, 1.0, 4.0]), aging=st.sampled_from([0.0, 0.01]))
def test_hysteresis_property(jobs, h, aging):
    """No running job leaves the batch for a waiting job that does not lead it, hysteresis
    aside, by more than h."""
    d = Scheduler(LEVELS, 3, aging_per_s=aging, hysteresis=h).decide(NOW, jobs, PLENTY, COOL)
    chosen = set(d.batch_ids)

    def eff(j):  # without the bonus
        return j.priority + aging * max(0.0, NOW - j.arrival_s)

    for r in (j for j in jobs if j.running and j.tokens_remaining > 0 and j.id not in chosen):
        for w in (j for j in jobs if not j.running and j.id in chosen):
            assert eff(w) - eff(r) >= h - 1e-9


# ------------------------------------------------------------------------------------------
# No starvation


def simulate(arrivals: list[list[int]], n_batch: int, aging: float, hysteresis: float,
             tokens: int, drain_ticks: int):
    """Ticks of 1 s: at tick t the jobs of arrivals[t] (their priorities) are queued, the
    scheduler decides, and every job in the batch generates one token. Returns the jobs and the
    tick each finished at (None: never)."""
    s = Scheduler(LEVELS, n_batch, aging_per_s=aging, hysteresis=hysteresis)
    jobs: list[Job] = []
    finished: dict[int, int] = {}
    for t in range(len(arrivals) + drain_ticks):
        for p in arrivals[t] if t < len(arrivals) else []:
            jobs.append(Job(len(jobs), priority=p, tokens_remaining=tokens, arrival_s=float(t)))
        d = s.decide(float(t), jobs, PLENTY, COOL)
        chosen = set(d.batch_ids)
        for j in jobs:
            j.running = j.id in chosen
            if j.running:
                j.tokens_remaining -= 1
                j.tokens_done += 1
                if j.tokens_remaining == 0:
                    finished[j.id] = t + 1
    return jobs, finished


@settings(max_examples=40, deadline=None)
@given(arrivals=st.lists(st.lists(st.integers(0, 9), max_size=3), min_size=20, max_size=60),
       n_batch=st.integers(1, 3), aging=st.sampled_from([0.05, 0.2, 1.0]),
       hysteresis=st.sampled_from([0.0, 0.5, 2.0]), tokens=st.integers(1, 4))
def test_no_job_starves(arrivals, n_batch, aging, hysteresis, tokens):
    """A job can only be outranked by jobs that arrived no later than
    delta = (max priority - min priority + hysteresis) / aging after it; while it waits, the
    batch is full of such jobs, each doing a token a tick. So it finishes within its own tokens
    plus their tokens / n_batch ticks of arriving, however many newer jobs keep coming."""
    arrival_tick = {}
    i = 0
    for t, ps in enumerate(arrivals):
        for _ in ps:
            arrival_tick[i] = t
            i += 1
    total = i * tokens
    jobs, finished = simulate(arrivals, n_batch, aging, hysteresis, tokens, drain_ticks=total + 1)
    assert len(finished) == len(jobs)
    priorities = [j.priority for j in jobs]
    if not priorities:
        return
    delta = (max(priorities) - min(priorities) + hysteresis) / aging
    for j in jobs:
        rivals = sum(tokens for k in jobs
                     if k.id != j.id and k.arrival_s <= j.arrival_s + delta + 1e-6)
        assert finished[j.id] - arrival_tick[j.id] <= tokens + rivals // n_batch, j


def test_without_aging_a_stream_of_urgent_jobs_starves_a_low_one_and_with_it_does_not():
    arrivals = [[0]] + [[9]] * 300  # one low job, then a high one every tick; each needs 2 ticks
    _, finished = simulate(arrivals, 1, 0.0, 0.0, 2, drain_ticks=0)
    assert 0 not in finished
    _, finished = simulate(arrivals, 1, 0.1, 0.0, 2, drain_ticks=0)
    assert finished[0] <= 2 + (9 / 0.1) * 2 + 2


# ------------------------------------------------------------------------------------------
# Determinism


@SETTINGS
@given(levels=power_tables(), jobs=job_lists(), e=energies(), t=thermals(), p=params,
       seed=st.integers(0, 2**32 - 1))
def test_same_inputs_same_decision_in_any_row_order(levels, jobs, e, t, p, seed):
    s = Scheduler(levels, **p)
    first = s.decide(NOW, jobs, e, t)
    raw = s.last_decision_bytes()
    assert s.decide(NOW, jobs, e, t) == first and s.last_decision_bytes() == raw
    # a fresh scheduler, and the numpy table read in place: the same bytes
    s2 = Scheduler(levels, **p)
    assert s2.decide(NOW, job_table(jobs), e, t) == first and s2.last_decision_bytes() == raw
    shuffled = jobs[:]
    random.Random(seed).shuffle(shuffled)
    again = s.decide(NOW, shuffled, e, t)
    assert replace(again, batch_rows=first.batch_rows) == first
    assert [shuffled[i].id for i in again.batch_rows] == list(first.batch_ids)


# ------------------------------------------------------------------------------------------
# Bad inputs: ValueError with one line, never a crash


def one_line_value_error(fn) -> str:
    with pytest.raises(ValueError) as info:
        fn()
    msg = str(info.value)
    assert msg and "\n" not in msg
    return msg


@pytest.mark.parametrize("kwargs, levels, needle", [
    ({"n_batch": 0}, LEVELS, "n_batch"),
    ({"n_batch": -3}, LEVELS, "n_batch"),
    ({"n_batch": MAX_BATCH + 1}, LEVELS, "n_batch"),
    ({"n_batch": 2**40}, LEVELS, "configuration"),
    ({"n_batch": 2}, [], "power levels"),
    ({"n_batch": 2}, [PowerLevel(str(i), i + 1, i + 1) for i in range(MAX_LEVELS + 1)], "power levels"),
    ({"n_batch": 2}, [LEVELS[1], LEVELS[0]], "lowest first"),
    ({"n_batch": 2}, [PowerLevel("a", 5, 10), PowerLevel("b", 6, 10)], "lowest first"),
    ({"n_batch": 2}, [PowerLevel("a", math.nan, 10)], "watts"),
    ({"n_batch": 2}, [PowerLevel("a", -1.0, 10)], "watts"),
    ({"n_batch": 2}, [PowerLevel("a", 5, 0.0)], "tokens_per_s"),
    ({"n_batch": 2}, [PowerLevel("a", 5, INF)], "tokens_per_s"),
    ({"n_batch": 2, "aging_per_s": math.nan}, LEVELS, "aging"),
    ({"n_batch": 2, "aging_per_s": -0.1}, LEVELS, "aging"),
    ({"n_batch": 2, "hysteresis": -1.0}, LEVELS, "hysteresis"),
    ({"n_batch": 2, "horizon_min_s": 0.0}, LEVELS, "horizon"),
    ({"n_batch": 2, "horizon_min_s": INF}, LEVELS, "horizon"),
])
def test_bad_configurations(kwargs, levels, needle):
    assert needle in one_line_value_error(lambda: Scheduler(levels, **kwargs))


@pytest.mark.parametrize("change, needle", [
    ({"capacity_wh": -1.0}, "capacity"),
    ({"capacity_wh": 0.0}, "capacity"),
    ({"capacity_wh": math.nan}, "capacity"),
    ({"soc_wh": math.nan}, "charge"),
    ({"soc_wh": -1.0}, "charge"),
    ({"floor_wh": 101.0}, "floor"),
    ({"floor_wh": -1.0}, "floor"),
    ({"solar_w": math.nan}, "solar"),
    ({"solar_w": INF}, "solar"),
    ({"base_load_w": -2.0}, "base load"),
    ({"eclipse_entry_s": math.nan}, "eclipse"),
    ({"eclipse_exit_s": -1.0}, "eclipse"),
    ({"eclipse_entry_s": 500.0, "eclipse_exit_s": 100.0}, "exit"),
])
def test_bad_energy(change, needle):
    s = Scheduler(LEVELS, 2)
    msg = one_line_value_error(lambda: s.decide(NOW, [Job(1, tokens_remaining=3)], replace(PLENTY, **change), COOL))
    assert needle in msg


@pytest.mark.parametrize("thermal", [Thermal(math.nan, 80.0), Thermal(20.0, INF), Thermal(20.0, 80.0, -1.0),
                                     Thermal(20.0, 80.0, math.nan)])
def test_bad_thermal(thermal):
    one_line_value_error(lambda: Scheduler(LEVELS, 2).decide(NOW, [Job(1, tokens_remaining=3)], PLENTY, thermal))


@pytest.mark.parametrize("job", [
    Job(1, tokens_remaining=-1), Job(1, tokens_remaining=3, tokens_done=-1),
    Job(1, tokens_remaining=3, arrival_s=math.nan), Job(1, tokens_remaining=3, arrival_s=-INF),
    Job(1, tokens_remaining=3, deadline_s=math.nan), Job(1, tokens_remaining=3, deadline_s=-5.0),
    Job(1, tokens_remaining=3, deadline_s=INF),
    Job(1, priority=2**40, tokens_remaining=3), Job(-1, tokens_remaining=3), Job(2**32, tokens_remaining=3),
    Job(1, tokens_remaining=2**31),
])
def test_bad_jobs(job):
    s = Scheduler(LEVELS, 2)
    jobs = [Job(7, tokens_remaining=5), job]
    one_line_value_error(lambda: s.decide(NOW, jobs, PLENTY, COOL))
    try:
        table = job_table(jobs)
    except ValueError:
        return  # an integer out of range is refused while building the table
    one_line_value_error(lambda: s.decide(NOW, table, PLENTY, COOL))


def test_bad_times_and_tables():
    s = Scheduler(LEVELS, 2)
    jobs = [Job(1, tokens_remaining=3)]
    for now in (math.nan, INF):
        one_line_value_error(lambda: s.decide(now, jobs, PLENTY, COOL))
    table = job_table(jobs * 4)
    one_line_value_error(lambda: s.decide(NOW, np.zeros(4, [("id", "<u4")]), PLENTY, COOL))
    one_line_value_error(lambda: s.decide(NOW, np.zeros(160, np.uint8), PLENTY, COOL))
    one_line_value_error(lambda: s.decide(NOW, table.reshape(2, 2), PLENTY, COOL))
    with pytest.raises((ValueError, BufferError)):
        s.decide(NOW, table[::2], PLENTY, COOL)  # not contiguous
    assert s.decide(NOW, table[::2].copy(), PLENTY, COOL).reason == "RUN"  # and still usable


# ------------------------------------------------------------------------------------------
# The binding


def test_reason_names_come_from_the_c_table():
    assert REASONS == _sched.REASONS and len(set(REASONS)) == len(REASONS)
    assert {"RUN", "IDLE_NO_JOBS", "IDLE_THERMAL", "IDLE_ENERGY_FLOOR", "THROTTLED_ENERGY",
            "THROTTLED_THERMAL"} <= set(REASONS)
    assert all(REASON_TEXT[r] for r in REASONS)


def test_job_dtype_matches_the_c_struct():
    assert JOB_DTYPE.itemsize == 40
    table = job_table([Job(5, priority=-2, tokens_remaining=9, tokens_done=4, arrival_s=1.5,
                           deadline_s=7.0, running=True)])
    row = table[0]
    assert (row["id"], row["priority"], row["tokens_remaining"], row["tokens_done"],
            row["arrival_s"], row["deadline_s"], row["running"]) == (5, -2, 9, 4, 1.5, 7.0, 1)


def test_housekeeping_values():
    d = Scheduler(LEVELS, 2).decide(NOW, [Job(1, tokens_remaining=3)], PLENTY, COOL)
    hk = d.housekeeping()
    assert hk["SCHED_REASON"] == REASONS.index("RUN") and hk["SCHED_LEVEL"] == 2 and hk["SCHED_BATCH"] == 1
    assert isinstance(d, Decision) and not d.idle
