"""The accountant (flight.executive.accounting) against a reference written here from the rules
in its docstring, over hypothesis-drawn sequences of token reports and charges: energy and time
are conserved (jobs + idle + carried = the integral of power), each charge is split by tokens,
prefill energy is carried to the next tokens and dropped as idle on a dead tick, a restored
account continues as if there had been no restart, cost is compute time at the model's rate,
the totals are the ACCT_* channels; plus one-line errors and a threaded smoke test."""
from __future__ import annotations

import json
import math
import threading
from collections import defaultdict

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from flight.config import DEFAULT_POWER_LEVELS
from flight.executive.accounting import Accountant, JobAccount
from flight.executive.cost_model import CostModel
from flight.link.dictionary import DICTIONARY_PATH

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MODEL = CostModel()
RATE = MODEL.usd_per_compute_second
ACCT = {c["name"]: c for c in json.loads(DICTIONARY_PATH.read_text())["channels"] if c["name"].startswith("ACCT_")}
RESULT_FIELDS = {f["name"] for f in json.loads(DICTIONARY_PATH.read_text())["result"]["fields"]}


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


# An operation: ("tok", job, n) or ("charge", dt, watts). Zero watts is drawn often: it is the idle rule.
JOBS = st.integers(0, 5)
ops = st.lists(st.one_of(
    st.tuples(st.just("tok"), JOBS, st.integers(0, 20)),
    st.tuples(st.just("charge"), st.floats(0, 1.0), st.one_of(st.just(0.0), st.floats(0, 60.0)))), max_size=80)


class Reference:
    """The rules, written out plainly: per charge, the carry (plus this tick) goes to the
    pending jobs by token share, or stays (power > 0), or is dropped (power == 0)."""

    def __init__(self):
        self.pending: dict[int, int] = defaultdict(int)
        self.joules: dict[int, float] = defaultdict(float)
        self.seconds: dict[int, float] = defaultdict(float)
        self.tokens: dict[int, int] = defaultdict(int)
        self.carry_j = self.carry_s = self.idle_j = self.idle_s = self.measured_j = self.measured_s = 0.0

    def apply(self, op):
        if op[0] == "tok":
            if op[2]:
                self.pending[op[1]] += op[2]
            return
        _, dt, w = op
        self.measured_j += dt * w
        self.measured_s += dt
        self.carry_j += dt * w
        self.carry_s += dt
        total = sum(self.pending.values())
        if total:
            for job, n in self.pending.items():
                self.joules[job] += self.carry_j * n / total
                self.seconds[job] += self.carry_s * n / total
                self.tokens[job] += n
            self.pending.clear()
            self.carry_j = self.carry_s = 0.0
        elif w == 0:
            self.idle_j += self.carry_j
            self.idle_s += self.carry_s
            self.carry_j = self.carry_s = 0.0


def run(acct: Accountant, sequence) -> Reference:
    ref = Reference()
    for op in sequence:
        ref.apply(op)
        if op[0] == "tok":
            acct.tokens(op[1], op[2])
        else:
            acct.charge(op[1], op[2])
    return ref


@SETTINGS
@given(ops)
def test_energy_and_time_are_conserved(sequence):
    acct = Accountant(MODEL)
    run(acct, sequence)
    t = acct.totals()
    measured = sum(dt * w for kind, dt, w in (op for op in sequence if op[0] == "charge"))
    elapsed = sum(op[1] for op in sequence if op[0] == "charge")
    assert close(acct.measured_joules, measured)
    assert close(t["ACCT_JOULES"] + acct.idle_joules + acct.carried_joules, measured)
    assert close(acct.compute_s + acct.idle_s + acct.carried_s, elapsed)
    jobs = [acct.job(j) for j in range(6)]
    assert close(sum(j.joules for j in jobs), t["ACCT_JOULES"])
    assert close(sum(j.compute_s for j in jobs), acct.compute_s)
    assert sum(j.tokens for j in jobs) == t["ACCT_TOKENS"]
    assert t["ACCT_TOKENS"] + acct.pending_tokens == sum(op[2] for op in sequence if op[0] == "tok")


@SETTINGS
@given(ops)
def test_every_job_is_charged_as_the_rules_say(sequence):
    acct = Accountant(MODEL)
    ref = run(acct, sequence)
    for j in range(6):
        a = acct.job(j)
        assert a.tokens == ref.tokens[j]
        assert close(a.joules, ref.joules[j]) and close(a.compute_s, ref.seconds[j])
    assert close(acct.idle_joules, ref.idle_j) and close(acct.idle_s, ref.idle_s)
    assert close(acct.carried_joules, ref.carry_j) and close(acct.carried_s, ref.carry_s)


@SETTINGS
@given(st.dictionaries(JOBS, st.integers(1, 1000), min_size=1), st.floats(0.001, 10), st.floats(0.001, 100))
def test_one_charge_is_split_in_proportion_to_tokens(made, dt, watts):
    acct = Accountant(MODEL)
    for job, n in made.items():
        acct.tokens(job, n)
    acct.charge(dt, watts)
    total = sum(made.values())
    for job, n in made.items():
        a = acct.job(job)
        assert close(a.joules, dt * watts * n / total)
        assert close(a.compute_s, dt * n / total)
        # every batch row costs the same: one J/token, one $/token, one tok/s for all
        assert close(a.joules_per_token, dt * watts / total)
        assert close(a.usd_per_token, dt * RATE / total)
        assert close(a.tokens_per_s, total / dt)
    assert acct.carried_joules == 0 and acct.idle_joules == 0


@pytest.mark.parametrize("prefill_ticks", [1, 3, 10])
def test_prefill_is_carried_to_the_jobs_that_follow(prefill_ticks):
    acct = Accountant(MODEL)
    for _ in range(prefill_ticks):
        acct.charge(0.1, 20.0)  # prefill: power, no tokens
    assert close(acct.carried_joules, prefill_ticks * 2.0) and acct.totals()["ACCT_JOULES"] == 0
    acct.tokens(1, 3)
    acct.tokens(2, 1)
    acct.charge(0.1, 20.0)
    assert close(acct.job(1).joules, (prefill_ticks + 1) * 2.0 * 3 / 4)
    assert close(acct.job(2).joules, (prefill_ticks + 1) * 2.0 / 4)
    assert close(acct.job(1).compute_s + acct.job(2).compute_s, (prefill_ticks + 1) * 0.1)
    assert acct.carried_joules == 0 and acct.idle_joules == 0


def test_a_dead_tick_drops_the_carry_as_idle():
    acct = Accountant(MODEL)
    acct.charge(0.1, 20.0)
    acct.charge(0.1, 20.0)
    acct.charge(0.1, 0.0)  # nothing drawn, nothing made: the prefill was abandoned
    assert close(acct.idle_joules, 4.0) and close(acct.idle_s, 0.3)
    assert acct.carried_joules == 0 and acct.carried_s == 0
    acct.tokens(1, 1)
    acct.charge(0.1, 10.0)
    assert close(acct.job(1).joules, 1.0)  # the dropped energy is not charged to later tokens


def test_tokens_made_at_zero_power_still_take_the_time():
    acct = Accountant(MODEL)
    acct.tokens(1, 2)
    acct.charge(0.5, 0.0)
    a = acct.job(1)
    assert a.tokens == 2 and a.joules == 0 and close(a.compute_s, 0.5) and close(a.tokens_per_s, 4.0)


@SETTINGS
@given(ops, ops)
def test_a_restored_account_continues_as_if_there_was_no_restart(before, after):
    # the restart falls after a charge with nothing carried: the executive persists at ticks
    before = before + [("charge", 0.1, 0.0)]
    straight = Accountant(MODEL)
    run(straight, before + after)

    first = Accountant(MODEL)
    run(first, before)
    persisted = {j: first.job(j) for j in range(6)}
    second = Accountant(MODEL)
    for j, a in persisted.items():
        second.restore(j, a.tokens, a.joules, a.compute_s)
    run(second, after)
    for j in range(6):
        a, b = straight.job(j), second.job(j)
        assert a.tokens == b.tokens
        assert close(a.joules, b.joules) and close(a.compute_s, b.compute_s) and close(a.cost_usd, b.cost_usd)
    # the totals are this start's only
    fresh = Accountant(MODEL)
    run(fresh, after)
    assert second.totals() == fresh.totals()


def test_restore_replaces_and_later_charges_add():
    acct = Accountant(MODEL)
    acct.tokens(7, 1)
    acct.charge(0.1, 10.0)
    acct.restore(7, 100, 50.0, 5.0)
    assert (acct.job(7).tokens, acct.job(7).joules, acct.job(7).compute_s) == (100, 50.0, 5.0)
    acct.tokens(7, 10)
    acct.charge(1.0, 10.0)
    a = acct.job(7)
    assert a.tokens == 110 and close(a.joules, 60.0) and close(a.compute_s, 6.0)
    assert close(a.cost_usd, 6.0 * RATE) and close(a.joules_per_token, 60.0 / 110)
    assert acct.totals()["ACCT_TOKENS"] == 11  # 1 + 10 charged this start; the restored 100 are not


@SETTINGS
@given(ops)
def test_cost_is_compute_time_at_the_model_rate(sequence):
    acct = Accountant(MODEL)
    run(acct, sequence)
    for j in range(6):
        a = acct.job(j)
        assert close(a.cost_usd, MODEL.cost_usd(a.compute_s))
        assert close(a.usd_per_token, a.cost_usd / a.tokens if a.tokens else 0.0)
        assert close(a.joules_per_token, a.joules / a.tokens if a.tokens else 0.0)
    t = acct.totals()
    assert close(t["ACCT_USD"], acct.compute_s * RATE)
    if t["ACCT_TOKENS"]:
        assert close(t["ACCT_USD_PER_TOKEN"], t["ACCT_USD"] / t["ACCT_TOKENS"])
        assert close(t["ACCT_J_PER_TOKEN"], t["ACCT_JOULES"] / t["ACCT_TOKENS"])


def test_totals_are_the_acct_channels():
    acct = Accountant(MODEL)
    t = acct.totals()
    assert set(t) == set(ACCT)
    assert t == {"ACCT_JOULES": 0.0, "ACCT_TOKENS": 0, "ACCT_J_PER_TOKEN": 0.0, "ACCT_USD": 0.0, "ACCT_USD_PER_TOKEN": 0.0}
    acct.charge(1.0, 10.0)  # carried, not charged: still no tokens
    assert acct.totals()["ACCT_J_PER_TOKEN"] == 0.0
    acct.tokens(1, 4)
    acct.charge(1.0, 10.0)
    t = acct.totals()
    assert isinstance(t["ACCT_TOKENS"], int) and ACCT["ACCT_TOKENS"]["type"] == "u64"
    assert all(isinstance(t[k], float) for k in t if k != "ACCT_TOKENS")
    assert t["ACCT_TOKENS"] == 4 and close(t["ACCT_JOULES"], 20.0) and close(t["ACCT_J_PER_TOKEN"], 5.0)


def test_job_account_gives_the_result_fields():
    acct = Accountant(MODEL)
    acct.tokens(3, 5)
    acct.charge(0.5, 8.0)
    a = acct.job(3)
    assert isinstance(a, JobAccount) and a.job_id == 3
    fields = a.result_fields()
    assert set(fields) <= RESULT_FIELDS
    assert fields == {"compute_s": 0.5, "tokens_per_s": 10.0, "joules": 4.0, "joules_per_token": 0.8,
                      "cost_usd": 0.5 * RATE, "usd_per_token": 0.1 * RATE}
    assert acct.job(99) == JobAccount(99, 0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


def test_forget_drops_the_account_and_its_uncharged_tokens_but_not_the_totals():
    acct = Accountant(MODEL)
    acct.tokens(1, 2)
    acct.charge(1.0, 10.0)
    before = acct.totals()
    acct.forget(1)
    acct.forget(12345)  # unknown: ignored
    assert acct.job(1).tokens == 0 and acct.totals() == before
    acct.tokens(1, 5)  # cancelled: these are never charged...
    acct.tokens(2, 5)
    acct.forget(1)
    acct.charge(1.0, 10.0)
    assert close(acct.job(2).joules, 10.0)  # ...the others take the whole tick; energy conserved
    assert acct.job(1).tokens == 0


@pytest.mark.parametrize("call", [
    lambda a: a.tokens(1, -1), lambda a: a.tokens(1, 1.5), lambda a: a.tokens(1, True),
    lambda a: a.charge(-0.1, 1.0), lambda a: a.charge(0.1, -1.0), lambda a: a.charge(math.nan, 1.0),
    lambda a: a.charge(0.1, math.inf), lambda a: a.restore(1, -1, 0.0, 0.0), lambda a: a.restore(1, 1, -1.0, 0.0),
    lambda a: a.restore(1, 1, 0.0, math.nan)])
def test_bad_inputs_are_one_line_errors_and_change_nothing(call):
    acct = Accountant(MODEL)
    acct.tokens(1, 1)
    acct.charge(0.1, 5.0)
    before = (acct.totals(), acct.job(1), acct.measured_joules, acct.pending_tokens)
    with pytest.raises(ValueError) as err:
        call(acct)
    assert "\n" not in str(err.value)
    assert (acct.totals(), acct.job(1), acct.measured_joules, acct.pending_tokens) == before


@pytest.mark.parametrize("level", DEFAULT_POWER_LEVELS, ids=lambda lv: lv.name)
@pytest.mark.parametrize("batch", [1, 4, 8])
def test_steady_decode_at_the_default_levels(level, batch, capsys):
    """10 Hz ticks at a level's power and throughput, shared by a batch: J/token is watts over
    tokens/s, $/token the model's rate over tokens/s, for every job alike."""
    acct = Accountant(MODEL)
    per_tick = level.tokens_per_s * 0.1 / batch  # tokens per job per tick (fractional rates: accumulate)
    owed = [0.0] * batch
    for _ in range(600):  # one minute
        for j in range(batch):
            owed[j] += per_tick
            n = int(owed[j])
            owed[j] -= n
            acct.tokens(j, n)
        acct.charge(0.1, level.watts)
    t = acct.totals()
    tol = 0.02  # the tokens still owed at the end
    assert math.isclose(t["ACCT_J_PER_TOKEN"], level.watts / level.tokens_per_s, rel_tol=tol)
    assert math.isclose(t["ACCT_USD_PER_TOKEN"], RATE / level.tokens_per_s, rel_tol=tol)
    for j in range(batch):
        assert math.isclose(acct.job(j).joules_per_token, t["ACCT_J_PER_TOKEN"], rel_tol=tol)
    if batch == 1:
        with capsys.disabled():
            print(f"\n{level.name}: {t['ACCT_J_PER_TOKEN']:.3f} J/token, ${t['ACCT_USD_PER_TOKEN']:.3g}/token "
                  f"({t['ACCT_TOKENS']} tokens, {t['ACCT_JOULES']:.0f} J, ${t['ACCT_USD']:.2f} in one minute)")


def test_threads_smoke():
    """Token callbacks on several threads while the main loop charges: nothing lost, nothing
    double-counted, energy conserved."""
    acct = Accountant(MODEL)
    n_threads, per_thread = 4, 20_000
    stop = threading.Event()

    def callback(job: int):
        for _ in range(per_thread):
            acct.tokens(job, 1)

    threads = [threading.Thread(target=callback, args=(j,)) for j in range(n_threads)]
    reader = threading.Thread(target=lambda: [acct.totals() or acct.job(0) for _ in iter(stop.is_set, True)])
    reader.start()
    for th in threads:
        th.start()
    ticks = 0
    while any(th.is_alive() for th in threads):
        acct.charge(0.001, 10.0)
        ticks += 1
    for th in threads:
        th.join()
    acct.charge(0.001, 10.0)
    ticks += 1
    stop.set()
    reader.join()
    t = acct.totals()
    assert t["ACCT_TOKENS"] == n_threads * per_thread and acct.pending_tokens == 0
    assert sum(acct.job(j).tokens for j in range(n_threads)) == n_threads * per_thread
    assert close(acct.measured_joules, ticks * 0.01)
    assert close(t["ACCT_JOULES"] + acct.idle_joules + acct.carried_joules, acct.measured_joules)
