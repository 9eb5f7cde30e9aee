"""The engine child's batch mode and the supervisor's multi-job API (issue 7): several jobs
decoded together, preempted at token boundaries, resumed exactly after a preemption, a kill -9
or a SIGSTOP, paced to a rate cap, and the child's tokenizer for prompt checks.

A synthetic model (untied output, so its tokens vary) runs tens of thousands of tokens/s, far
too fast for a fault to land mid-job; the rate cap slows the batch to a pace where it does
(the cap changes when steps run, never their bits). Each job's reference is an in-process
Engine.generate of that job alone.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest

from flight.engine import Engine, EngineError
from flight.executive.engine_supervisor import EngineJob, EngineSupervisor, TokenEvent
from tests.executive.test_engine_supervisor import supervisor_threads, zombies
from hil.synth_gguf import write_llama_gguf

N_CTX = 128
# (prompt ids, max tokens, sampling): greedy and seeded sampled, of different lengths, so the
# batch's make-up changes as jobs finish and queued ones join
JOBS = [
    ([10, 20, 30], 40, dict(temperature=0.0)),
    ([5, 6, 7, 8, 9], 30, dict(temperature=0.8, top_k=40, top_p=0.95, seed=1234)),
    ([100, 101], 50, dict(temperature=1.0, seed=7)),
    ([42, 43, 44, 45, 46, 47, 48, 49], 24, dict(temperature=0.7, top_k=10, seed=0)),
    ([200, 201, 202], 44, dict(temperature=1.3, top_p=0.9, seed=2**64 - 1)),
]
HB_TIMEOUT = 1.0


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return write_llama_gguf(tmp_path_factory.mktemp("batch") / "m.gguf", tied=False, seed=1)


@pytest.fixture(scope="module")
def reference(model) -> list[list[int]]:
    """Each job run alone, in process."""
    with Engine.load(model, threads=1, n_ctx=N_CTX) as e:
        refs = [e.generate(ids, max_tokens=n, **kw).tokens for ids, n, kw in JOBS]
    assert all(len(set(r)) > 5 for r in refs), "the synthetic model should not repeat itself"
    return refs


class Recorder:
    """on_token/on_done: every event in arrival order, and each job's pieces."""

    def __init__(self) -> None:
        self.events: list[tuple[float, TokenEvent]] = []
        self.pieces: dict[int, list[str]] = defaultdict(list)
        self.done: list[EngineJob] = []
        self.hook = None  # called with each TokenEvent after recording it

    def on_token(self, ev: TokenEvent) -> None:
        self.events.append((time.monotonic(), ev))
        self.pieces[ev.job_id].append(ev.piece)
        if self.hook is not None:
            self.hook(ev)

    def on_done(self, job: EngineJob) -> None:
        self.done.append(job)


def supervisor(model, rec: Recorder | None = None, **kw) -> EngineSupervisor:
    kw.setdefault("heartbeat_timeout_s", HB_TIMEOUT)
    if rec is not None:
        kw.update(on_token=rec.on_token, on_done=rec.on_done)
    return EngineSupervisor(model, threads=1, n_ctx=N_CTX, **kw)


def submit(sup: EngineSupervisor, which=range(len(JOBS)), **kw) -> list[EngineJob]:
    return [sup.generate(JOBS[i][0], max_tokens=JOBS[i][1], **JOBS[i][2], **kw) for i in which]


def test_a_batch_gives_each_job_its_tokens_alone(model, reference):
    """5 jobs, 4 slots: the fifth queues in the child and joins when the first one ends."""
    rec = Recorder()
    with supervisor(model, rec, n_batch=4) as sup:
        assert sup.loaded["n_batch"] == 4 and sup.state == "idle"
        jobs = submit(sup)  # uncapped: done in ~10 ms
        results = [j.wait(10) for j in jobs]
        assert [r.tokens for r in results] == reference
        for job, r in zip(jobs, results):
            assert r.stop_reason in ("limit", "eos") and r.restarts == 0 and r.n_resumed == 0
            assert "".join(rec.pieces[job.job_id]) == r.text
            assert job.tokens == r.tokens and job.rng_state == r.rng_state
            assert r.stats["n_prompt"] == len(JOBS[jobs.index(job)][0])
            assert {"prefill_s", "decode_s", "decode_tok_s", "queue_s"} <= set(r.stats)
        assert sorted(j.job_id for j in rec.done) == sorted(j.job_id for j in jobs)
        assert sup.running == () and sup.state == "idle" and sup.restarts == 0
    assert sup.state == "stopped" and not supervisor_threads()


def test_jobs_beyond_n_batch_queue_in_order(model, reference):
    """2 slots, 3 jobs (paced so the order shows): the first two decode together, the third
    joins only when one of them ends; a job preempted while queued ends without a token."""
    rec = Recorder()
    with supervisor(model, rec, n_batch=2) as sup:
        sup.set_rate(400)
        a, b, c, d = submit(sup, [3, 1, 0, 2])  # 24 and 30 tokens first
        assert sup.running == (a, b, c, d) and sup.state == "running"
        assert sup.preempt(d.job_id)
        rd = d.wait(10)
        assert (rd.stop_reason, rd.tokens, rd.rng_state, rd.text) == ("request", [], None, "")
        assert [x.wait(10).tokens for x in (a, b, c)] == [reference[3], reference[1],
                                                          reference[0]]
        order = [ev.job_id for _, ev in rec.events]
        first_c = order.index(c.job_id)
        # a and b interleave from the start; c's first token comes after a's last
        assert set(order[:4]) == {a.job_id, b.job_id}
        assert first_c > max(i for i, j in enumerate(order) if j == a.job_id)
        assert [j.job_id for j in rec.done] == [d.job_id, a.job_id, b.job_id, c.job_id]
        assert not sup.preempt(a.job_id) and not sup.preempt(999)  # ended, unknown


def test_own_job_ids(model, reference):
    with supervisor(model, n_batch=2) as sup:
        sup.set_rate(200)
        a = sup.generate(JOBS[0][0], max_tokens=JOBS[0][1], **JOBS[0][2], job_id=1001)
        with pytest.raises(EngineError, match="1001"):
            sup.generate([1, 2, 3], job_id=1001)
        b = sup.generate([1, 2, 3], max_tokens=4)  # the allocated ids do not collide
        assert a.job_id == 1001 and b.job_id != 1001
        assert a.wait(10).tokens == reference[0]
        b.wait(10)
        # the id is free again once its job ended
        assert sup.generate([1, 2, 3], max_tokens=2, job_id=1001).wait(10).stop_reason


def test_preempt_then_resume_is_exact(model, reference):
    """Preempt two of three batched jobs mid-decode; resubmitting each with its checkpoint
    (under the same id) gives exactly the uninterrupted tokens."""
    rec = Recorder()
    sup = supervisor(model, rec, n_batch=3)
    preempted: dict[int, int] = {}

    def hook(ev: TokenEvent) -> None:
        if ev.job_id in (jobs[1].job_id, jobs[2].job_id) and ev.index == 6 \
                and ev.job_id not in preempted:
            preempted[ev.job_id] = ev.index
            assert sup.preempt(ev.job_id)

    rec.hook = hook
    with sup:
        sup.set_rate(300)
        jobs = submit(sup, [0, 1, 2])
        for k in (1, 2):
            r = jobs[k].wait(10)
            assert r.stop_reason == "request" and 6 < len(r.tokens) < JOBS[k][1]
            assert jobs[k].tokens == r.tokens and jobs[k].rng_state == r.rng_state
            again = sup.generate(JOBS[k][0], max_tokens=JOBS[k][1], **JOBS[k][2],
                                 job_id=jobs[k].job_id, resume_tokens=r.tokens,
                                 rng_state=r.rng_state)
            assert again.tokens == r.tokens  # the checkpoint is whole from the start
            r2 = again.wait(10)
            assert r2.tokens == reference[k] and r2.n_resumed == len(r.tokens)
            # the stream of both runs is the text: a character split by the preemption (r.text
            # ends in U+FFFD then) comes out whole from the resumed run's primed stream decoder
            assert "".join(rec.pieces[jobs[k].job_id]) == r2.text
        assert jobs[0].wait(10).tokens == reference[0]  # the one left alone
    assert len(preempted) == 2


def test_stop_checkpoints_every_job_and_they_resume_in_a_new_supervisor(model, reference):
    """stop() with jobs batched and queued: each ends with "request" and its checkpoint; a
    new engine (the node restarted) resumes them all to the uninterrupted tokens."""
    rec = Recorder()
    sup = supervisor(model, rec, n_batch=2)
    started = threading.Event()
    rec.hook = lambda ev: len(rec.events) >= 10 and started.set()
    sup.start()
    pid = sup.pid
    sup.set_rate(300)
    jobs = submit(sup, [0, 1, 2])
    assert started.wait(10)
    sup.stop()
    results = [j.wait(0) for j in jobs]
    assert [r.stop_reason for r in results] == ["request"] * 3
    assert 0 < len(results[0].tokens) < JOBS[0][1] and results[2].tokens == []
    assert sup.state == "stopped" and not Path(f"/proc/{pid}").exists() and not zombies()
    with pytest.raises(EngineError, match="not running"):
        sup.generate([1, 2, 3])
    with supervisor(model, n_batch=3) as sup2:
        resumed = [sup2.generate(JOBS[k][0], max_tokens=JOBS[k][1], **JOBS[k][2],
                                 resume_tokens=r.tokens, rng_state=r.rng_state)
                   for k, r in enumerate(results)]
        assert [j.wait(10).tokens for j in resumed] == reference[:3]


@pytest.mark.parametrize("fault", ["kill", "sigstop"])
def test_a_fault_with_three_jobs_in_flight_resumes_them_all(model, reference, fault):
    """kill -9 (died) or SIGSTOP (silent) with three jobs in the batch and one queued: all
    four are resent to the new child, in order, and end with their uninterrupted tokens."""
    rec = Recorder()
    sup = supervisor(model, rec, n_batch=3)
    fired: list[float] = []

    def hook(ev: TokenEvent) -> None:
        if not fired and len(rec.events) == 12:
            fired.append(time.monotonic())
            os.kill(sup.pid, signal.SIGKILL if fault == "kill" else signal.SIGSTOP)

    rec.hook = hook
    with sup:
        sup.set_rate(300)
        jobs = submit(sup, [0, 1, 2, 4])
        results = [j.wait(15) for j in jobs]
    assert [r.tokens for r in results] == [reference[k] for k in (0, 1, 2, 4)]
    assert (sup.restarts, sup.last_restart_cause) == (1, "died" if fault == "kill" else "silent")
    for job, r in zip(jobs[:3], results):
        assert 0 < r.n_resumed < len(r.tokens), "it resumed mid-decode"
        assert r.restarts == 1 and job.fault_restarts == 1
        assert "".join(rec.pieces[job.job_id]) == r.text  # no token streamed twice or lost
    assert results[3].n_resumed == 0 and jobs[3].fault_restarts == 0  # it was only queued
    if fault == "sigstop":
        first_after = min(t for t, ev in rec.events if t > fired[0] and ev.index >= 5)
        assert first_after - fired[0] >= HB_TIMEOUT
    assert not zombies()


def test_rate_cap_paces_the_batch_and_survives_a_restart(model, reference):
    """The aggregate tokens/s of a 3-job batch stays at the cap (not a benchmark: the
    synthetic model runs ~100x faster uncapped), before and after a restart by command."""
    cap = 150.0
    rec = Recorder()
    sup = supervisor(model, rec, n_batch=3)
    restarted_at: list[float] = []

    def hook(ev: TokenEvent) -> None:
        if not restarted_at and len(rec.events) == 90:
            restarted_at.append(time.monotonic())
            sup.restart()

    rec.hook = hook
    with sup:
        sup.set_rate(cap)
        jobs = submit(sup, [0, 2, 4])  # 40 + 50 + 44 tokens: ~0.9 s at the cap
        results = [j.wait(15) for j in jobs]
    assert [r.tokens for r in results] == [reference[k] for k in (0, 2, 4)]
    assert sup.restart_counts["command"] == 1

    def rate(times: list[float]) -> float:
        return (len(times) - 1) / (times[-1] - times[0])

    before = [t for t, _ in rec.events if not restarted_at or t <= restarted_at[0]]
    after = [t for t, _ in rec.events if t > restarted_at[0]]
    for times in (before, after):
        assert len(times) > 30
        assert 0.5 * cap < rate(times) <= 1.1 * cap, rate(times)


def test_set_rate_takes_effect_at_once(model):
    """A very low cap holds the batch back; lifting it lets the rest come at full speed; the
    child answers tokenize meanwhile without waiting for the batch."""
    with supervisor(model, n_batch=2) as sup:
        sup.set_rate(4.0)  # two jobs: a step every 0.5 s
        job = sup.generate([1, 2, 3], max_tokens=60)
        time.sleep(0.6)
        assert 0 < len(job.tokens) <= 6
        t0 = time.monotonic()
        assert sup.tokenize("hello there")
        assert time.monotonic() - t0 < 0.3
        sup.set_rate(None)
        assert job.wait(5).stop_reason in ("limit", "eos")
        assert time.monotonic() - t0 < 1.0


def test_tokenize_matches_the_engine(model):
    with Engine.load(model, threads=1, n_ctx=N_CTX) as e:
        plain = e.tokenize("the rain in the train")
        chat = e.tokenize(e.chat_prompt("hi there", None))
        chat_sys = e.tokenize(e.chat_prompt("hi there", "be brief"))
    with supervisor(model, n_batch=2) as sup:
        assert sup.tokenize("the rain in the train") == plain
        assert sup.tokenize("hi there", chat=True) == chat
        assert sup.tokenize("hi there", chat=True, system="be brief") == chat_sys
        assert chat_sys != chat != plain
        sup.restart()  # asked mid-restart, answered by the new child
        assert sup.tokenize("hi there", chat=True) == chat
        assert sup.restarts == 1
    with pytest.raises(EngineError, match="not running"):
        sup.tokenize("hi")


def test_a_bad_job_fails_alone_in_a_batch(model, reference):
    rec = Recorder()
    with supervisor(model, rec, n_batch=2) as sup:
        bad = sup.generate([1, 2, 3], max_tokens=8, top_p=2.0)
        long = sup.generate(list(range(1, 140)), max_tokens=8)  # longer than the context
        good = submit(sup, [0])[0]
        with pytest.raises(EngineError, match="top-p"):
            bad.wait(10)
        with pytest.raises(EngineError):
            long.wait(10)
        assert good.wait(10).tokens == reference[0]
        assert {j.job_id for j in rec.done} == {bad.job_id, long.job_id, good.job_id}
        assert bad.error and sup.restarts == 0
