"""The engine in a supervised child process (issue 7): flight.engine.worker and
flight.executive.engine_supervisor.

A job survives its engine dying (kill -9), going silent (SIGSTOP) or being restarted by command,
and ends with exactly the tokens an uninterrupted in-process run produces, greedy or sampled.
The faults are injected from the on_token callback after a few tokens have arrived, so they
land mid-generation: the real model (~100 tok/s here) has most of its 24 tokens still to make.
Without auto_restart (as the node runs it: its FDIR rules restart the engine) a dead child is
reaped and its job waits, a hung one only ages, until restart(cause), which resumes them exactly.
Load failures are one-line errors without a hang or a zombie, and stop() ends the child.
These run one job at a time (n_batch=1) on the real model; test_engine_batch.py covers batches.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgpack
import pytest

from flight.engine import Engine, EngineError
from flight.engine.worker import default_engine_threads
from flight.executive.engine_supervisor import EngineSupervisor, TokenEvent
from hil.synth_gguf import write_llama_gguf

# "Satellites in low Earth orbit" as the real model's tokenizer splits it
PROMPT_IDS = [23876, 43757, 281, 1642, 2591, 8591]
SAMPLED = dict(temperature=0.8, top_k=40, top_p=0.95, seed=1234)
GREEDY = dict(temperature=0.0)
N = 24
N_CTX = 128
KILL_AT = 4  # the fault lands once this token index has arrived
HB_TIMEOUT = 1.0


@pytest.fixture(scope="module")
def reference(real_model_path) -> dict[str, list[int]]:
    """The uninterrupted runs, in process."""
    with Engine.load(real_model_path, threads=1, n_ctx=N_CTX) as e:
        return {name: e.generate(PROMPT_IDS, max_tokens=N, **kw).tokens
                for name, kw in (("greedy", GREEDY), ("sampled", SAMPLED))}


@pytest.fixture(scope="module")
def synth_model(tmp_path_factory) -> Path:
    return write_llama_gguf(tmp_path_factory.mktemp("synth") / "m.gguf")


def zombies() -> list[int]:
    """Our child processes that exited and were never reaped."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces, so split after its ')'
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == os.getpid() and state == "Z":
            out.append(int(d.name))
    return out


def supervisor_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "engine-supervisor"]


class Fault:
    """An on_token callback that injects a fault once, after token KILL_AT of the first child."""

    def __init__(self, action) -> None:
        self.action = action
        self.sup: EngineSupervisor | None = None
        self.fired_at: float | None = None
        self.resumed_at: float | None = None  # first token after the fault
        self.pieces: list[str] = []

    def __call__(self, ev: TokenEvent) -> None:
        self.pieces.append(ev.piece)
        if self.fired_at is None and ev.index == KILL_AT:
            self.fired_at = time.monotonic()
            self.action(self.sup)
        elif self.fired_at is not None and self.resumed_at is None and ev.index > KILL_AT + 1:
            self.resumed_at = time.monotonic()


def run_with_fault(model: Path, action, kw: dict,
                   **sup_kw) -> tuple[EngineSupervisor, Fault, object]:
    fault = Fault(action)
    sup_kw.setdefault("heartbeat_timeout_s", HB_TIMEOUT)
    sup = EngineSupervisor(model, threads=1, n_ctx=N_CTX, on_token=fault, **sup_kw)
    fault.sup = sup
    sup.start()
    try:
        result = sup.generate(PROMPT_IDS, max_tokens=N, **kw).wait(30)
    finally:
        sup.stop()
    return sup, fault, result


def test_default_threads_leave_a_core():
    assert default_engine_threads(1) == 1
    assert default_engine_threads(2) == 1
    assert default_engine_threads(4) == 3
    assert default_engine_threads() >= 1


@pytest.mark.parametrize("name", ["greedy", "sampled"])
def test_jobs_equal_in_process_generate(real_model_path, reference, name):
    pieces: list[str] = []
    with EngineSupervisor(real_model_path, threads=1, n_ctx=N_CTX,
                          on_token=lambda ev: pieces.append(ev.piece)) as sup:
        kw = GREEDY if name == "greedy" else SAMPLED
        a = sup.generate(PROMPT_IDS, max_tokens=N, **kw)
        b = sup.generate(PROMPT_IDS, max_tokens=N, **kw)  # queued behind a, same answer
        ra, rb = a.wait(30), b.wait(30)
        assert ra.tokens == rb.tokens == reference[name]
        assert ra.stop_reason == "limit" and ra.restarts == 0 and sup.restarts == 0
        assert "".join(pieces) == ra.text + rb.text
        assert a.tokens == ra.tokens and a.rng_state == ra.rng_state  # the handle's checkpoint
    assert not supervisor_threads()


@pytest.mark.parametrize("name", ["greedy", "sampled"])
def test_kill_9_resumes_exactly(real_model_path, reference, name):
    sup, fault, r = run_with_fault(real_model_path, lambda s: os.kill(s.pid, signal.SIGKILL),
                                   GREEDY if name == "greedy" else SAMPLED)
    assert r.tokens == reference[name]
    assert 0 < r.n_resumed < N, "the job resumed mid-generation"
    assert (sup.restarts, sup.last_restart_cause, r.restarts) == (1, "died", 1)
    assert "".join(fault.pieces) == r.text  # no token streamed twice or lost
    assert not zombies()


def test_sigstop_is_detected_as_silent_and_resumes_exactly(real_model_path, reference):
    sup, fault, r = run_with_fault(real_model_path, lambda s: os.kill(s.pid, signal.SIGSTOP),
                                   SAMPLED)
    assert r.tokens == reference["sampled"]
    assert 0 < r.n_resumed < N
    assert (sup.restarts, sup.last_restart_cause) == (1, "silent")
    # detection takes the timeout, then a respawn and load (~0.3 s here)
    assert HB_TIMEOUT <= fault.resumed_at - fault.fired_at < HB_TIMEOUT + 5.0
    assert not zombies()


def test_no_tokens_for_stall_timeout_is_a_stall(real_model_path, reference):
    """The stall check watches tokens, not heartbeats (which a C loop stuck without the GIL
    would not stop); a stopped child stands in for one here, its silence left undetected."""
    sup, _, r = run_with_fault(real_model_path, lambda s: os.kill(s.pid, signal.SIGSTOP),
                               GREEDY, heartbeat_timeout_s=60, stall_timeout_s=1.0)
    assert r.tokens == reference["greedy"]
    assert (sup.restarts, sup.last_restart_cause) == (1, "stalled")
    assert not zombies()


def test_restart_by_command_resumes_exactly(real_model_path, reference):
    pids = []

    def restart(s: EngineSupervisor) -> None:
        pids.append(s.pid)
        s.restart()

    sup, _, r = run_with_fault(real_model_path, restart, SAMPLED)
    assert r.tokens == reference["sampled"]
    assert 0 < r.n_resumed < N
    assert (sup.restarts, sup.last_restart_cause) == (1, "command")
    assert sup.restart_counts == dict(died=0, silent=0, stalled=0, command=1)
    assert not zombies() and not Path(f"/proc/{pids[0]}").exists()


def wait_for(predicate, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "condition not met in time"
        time.sleep(0.02)


def test_without_auto_restart_a_dead_engine_is_reaped_and_waits_for_restart(real_model_path, reference):
    """auto_restart=False (the node's FDIR decides): the dead child is reaped and its job waits,
    no child is started until restart(), which then resumes the job exactly, its cause the fault."""
    fault = Fault(lambda s: os.kill(s.pid, signal.SIGKILL))
    sup = EngineSupervisor(real_model_path, threads=1, n_ctx=N_CTX, heartbeat_timeout_s=HB_TIMEOUT,
                           auto_restart=False, on_token=fault)
    fault.sup = sup
    with sup:
        job = sup.generate(PROMPT_IDS, max_tokens=N, **SAMPLED)
        wait_for(lambda: sup.fault == "died")
        assert sup.pid is None and not zombies()
        time.sleep(HB_TIMEOUT + 0.5)  # beyond every timeout of its own: it still waits
        assert (sup.fault, sup.restarts, job.done(), sup.pid) == ("died", 0, False, None)
        assert sup.heartbeat_age_s == 0.0 and sup.token_silence_s == 0.0  # gone is not silent
        sup.restart()
        r = job.wait(30)
    assert r.tokens == reference["sampled"] and 0 < r.n_resumed < N
    assert (sup.fault, sup.restarts, sup.last_restart_cause, r.restarts) == (None, 1, "died", 1)
    assert job.fault_restarts == 1  # counted against it, as the supervisor's own restarts are
    assert "".join(fault.pieces) == r.text and not zombies()


def test_without_auto_restart_a_hung_engine_only_ages_until_restart_names_the_cause(real_model_path, reference):
    """A stopped child is not the supervisor's to judge: heartbeat age and token silence grow
    past its own timeouts; restart("silent") kills it and the job resumes exactly."""
    fault = Fault(lambda s: os.kill(s.pid, signal.SIGSTOP))
    sup = EngineSupervisor(real_model_path, threads=1, n_ctx=N_CTX, heartbeat_timeout_s=HB_TIMEOUT,
                           stall_timeout_s=HB_TIMEOUT, auto_restart=False, on_token=fault)
    fault.sup = sup
    with sup:
        assert sup.heartbeat_age_s < HB_TIMEOUT and sup.token_silence_s == 0.0  # idle: no job, no silence
        job = sup.generate(PROMPT_IDS, max_tokens=N, **GREEDY)
        wait_for(lambda: fault.fired_at is not None)
        pid = sup.pid
        wait_for(lambda: sup.heartbeat_age_s > HB_TIMEOUT + 0.5 and sup.token_silence_s > HB_TIMEOUT + 0.5)
        assert (sup.fault, sup.restarts, sup.pid, job.done()) == (None, 0, pid, False)
        with pytest.raises(ValueError, match="restart cause"):
            sup.restart("bored")
        sup.restart("silent")
        r = job.wait(30)
    assert r.tokens == reference["greedy"] and 0 < r.n_resumed < N
    assert (sup.restarts, sup.last_restart_cause, job.fault_restarts) == (1, "silent", 1)
    assert not zombies() and not Path(f"/proc/{pid}").exists()


def test_a_job_that_keeps_killing_the_engine_fails_and_the_next_runs(real_model_path, reference):
    """max_job_restarts: a job during which the engine dies every time is failed, not retried
    forever; the supervisor goes on with the next job."""
    sup = EngineSupervisor(real_model_path, threads=1, n_ctx=N_CTX, max_job_restarts=1)
    first_job = []

    def kill_during_first(ev: TokenEvent) -> None:
        if ev.job_id == first_job[0] and ev.index >= 1:
            os.kill(sup.pid, signal.SIGKILL)

    sup.on_token = kill_during_first
    with sup:
        a = sup.generate(PROMPT_IDS, max_tokens=N, **SAMPLED)
        first_job.append(a.job_id)
        b = sup.generate(PROMPT_IDS, max_tokens=N, **GREEDY)
        with pytest.raises(EngineError, match="died 2 times"):
            a.wait(30)
        assert b.wait(30).tokens == reference["greedy"]
        assert sup.restart_counts["died"] == 2
    assert not zombies()


def test_tokenize_uses_the_models_chat_template(real_model_path):
    """What the executive checks a prompt's length with: the child's tokenizer and template."""
    with Engine.load(real_model_path, threads=1, n_ctx=N_CTX) as e:
        want = [e.tokenize("Why is the sky blue?"),
                e.tokenize(e.chat_prompt("Why is the sky blue?")),
                e.tokenize(e.chat_prompt("Why is the sky blue?", "Answer in one line."))]
    with EngineSupervisor(real_model_path, threads=1, n_ctx=N_CTX) as sup:
        got = [sup.tokenize("Why is the sky blue?"),
               sup.tokenize("Why is the sky blue?", chat=True),
               sup.tokenize("Why is the sky blue?", chat=True, system="Answer in one line.")]
    assert got == want and len({len(ids) for ids in got}) == 3


@pytest.mark.parametrize("make", ["missing", "garbage"])
def test_bad_model_is_a_one_line_error(tmp_path, make):
    path = tmp_path / "bad.gguf"
    if make == "garbage":
        path.write_bytes(b"GGUF" + os.urandom(200))
    sup = EngineSupervisor(path, threads=1, n_ctx=N_CTX)
    t0 = time.monotonic()
    with pytest.raises(EngineError) as e:
        sup.start()
    assert time.monotonic() - t0 < 10
    msg = str(e.value)
    assert msg and "\n" not in msg
    assert not zombies() and not supervisor_threads()
    with pytest.raises(EngineError):
        sup.generate(PROMPT_IDS)


def test_a_bad_job_fails_alone(synth_model):
    with EngineSupervisor(synth_model, threads=1, n_ctx=N_CTX) as sup:
        bad = sup.generate([1, 2, 3], max_tokens=8, top_p=2.0)
        good = sup.generate([1, 2, 3], max_tokens=8)
        with pytest.raises(EngineError, match="top-p") as e:
            bad.wait(10)
        assert "\n" not in str(e.value)
        assert good.wait(10).stop_reason in ("limit", "eos")
        assert sup.restarts == 0


def test_stop_ends_the_running_job_and_the_child(real_model_path):
    sup = EngineSupervisor(real_model_path, threads=1, n_ctx=512, shutdown_timeout_s=3.0)
    started = threading.Event()
    sup.on_token = lambda ev: started.set()
    sup.start()
    pid = sup.pid
    job = sup.generate(PROMPT_IDS, max_tokens=400)  # ~4 s uninterrupted
    queued = sup.generate(PROMPT_IDS, max_tokens=4)
    assert started.wait(10)
    t0 = time.monotonic()
    sup.stop()
    assert time.monotonic() - t0 < 3.0
    r = job.wait(0)
    assert r.stop_reason == "request" and 0 < len(r.tokens) < 400
    # the queued job ends too, with its (empty) checkpoint
    q = queued.wait(0)
    assert (q.stop_reason, q.tokens, q.n_resumed) == ("request", [], 0)
    assert not Path(f"/proc/{pid}").exists() and not zombies() and not supervisor_threads()


def test_stop_kills_a_child_that_does_not_answer(synth_model):
    sup = EngineSupervisor(synth_model, threads=1, n_ctx=N_CTX, heartbeat_timeout_s=30,
                           shutdown_timeout_s=1.0)
    sup.start()
    pid = sup.pid
    os.kill(pid, signal.SIGSTOP)
    t0 = time.monotonic()
    sup.stop()
    assert time.monotonic() - t0 < 3.0
    assert not Path(f"/proc/{pid}").exists() and not zombies()


# -- the worker's protocol, spoken directly ------------------------------------------------------

class _Worker:
    """A worker child spoken to directly, without the supervisor."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "flight.engine.worker"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)

    def send(self, **msg) -> None:
        self.proc.stdin.write(msgpack.packb(msg))
        self.proc.stdin.flush()

    def replies(self, until: str, heartbeats: bool = False, **match) -> list[dict]:
        """Replies up to and including the first of type `until` whose fields equal match
        (heartbeats left out unless asked for)."""
        out = []
        while True:
            for msg in self.unpacker:
                if msg["t"] != "heartbeat" or heartbeats:
                    out.append(msg)
                if msg["t"] == until and all(msg.get(k) == v for k, v in match.items()):
                    return out
            data = os.read(self.proc.stdout.fileno(), 1 << 16)
            assert data, f"stream ended before {until}: {out}"
            self.unpacker.feed(data)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.proc.stdin.close()
        self.proc.stdout.close()


def test_worker_protocol(synth_model):
    w = _Worker()
    try:
        w.send(t="load", path=str(synth_model), threads=1, n_ctx=N_CTX)
        loaded = w.replies("loaded")[-1]
        assert loaded["n_ctx"] == N_CTX and loaded["threads"] == 1 and loaded["pid"] == w.proc.pid
        assert loaded["n_batch"] == 1
        w.send(t="ping")
        assert w.replies("pong")[-1] == {"t": "pong"}
        req = dict(prompt_ids=[1, 2, 3], max_tokens=6, temperature=0.9, seed=3)
        w.send(t="generate", job=7, **req)
        full = w.replies("done")
        done = full[-1]
        tokens = [m for m in full if m["t"] == "token"]
        assert [m["i"] for m in tokens] == list(range(len(done["tokens"])))
        assert [m["tok"] for m in tokens] == done["tokens"] and done["job"] == 7
        # resume after token 2 with the state that came with it: the same tail
        w.send(t="generate", job=8, resume_tokens=done["tokens"][:3], rng_state=tokens[2]["rng"],
               **req)
        again = w.replies("done")
        assert again[-1]["tokens"] == done["tokens"] and again[-1]["n_resumed"] == 3
        assert [m["i"] for m in again if m["t"] == "token"][0] == 3
        assert done["stop"] == "limit"
        # a job whose every token had arrived before its child died is answered at once
        w.send(t="generate", job=9, resume_tokens=done["tokens"], rng_state=done["rng"], **req)
        assert w.replies("done") == [dict(done, job=9, n_resumed=6, stats={})]
        w.send(t="bogus", job=1)
        assert "bogus" in w.replies("error")[-1]["msg"]
        w.send(t="exit")
        assert w.proc.wait(5) == 0
    finally:
        w.close()


def test_worker_batch_protocol(synth_model):
    """Two jobs decode together, a third waits for a slot; stop drops a queued job at once
    and takes a batched one out at a step boundary; rate paces the steps; tokenize and
    heartbeats are answered meanwhile; exit ends every job with its done."""
    w = _Worker()
    try:
        w.send(t="load", path=str(synth_model), threads=1, n_ctx=N_CTX, n_batch=2)
        assert w.replies("loaded")[-1]["n_batch"] == 2
        w.send(t="rate", tokens_per_s=40)  # two jobs: a step every 50 ms
        for job in (1, 2, 3):
            w.send(t="generate", job=job, prompt_ids=[1, 2, 3 + job], max_tokens=12,
                   temperature=0.9, seed=job)
        w.send(t="tokenize", req=5, text="the rain", chat=False)
        w.send(t="tokenize", req=6, text="hi", chat=True, system="be brief")
        w.send(t="stop", job=3)  # still queued: dropped, its done comes at once
        got = w.replies("done", job=3)
        assert not any(m["t"] == "done" and m["job"] != 3 for m in got)
        assert got[-1] == dict(t="done", job=3, tokens=[], text="", stop="request", rng=None,
                               n_resumed=0, stats={})
        # answered in order by the request thread, before the stop that followed them
        assert {m["req"] for m in got if m["t"] == "tokenized"} == {5, 6}
        stream = got + w.replies("heartbeat", heartbeats=True)
        beat = stream.pop()
        assert beat["busy"] and sorted(beat["jobs"]) == [1, 2] and beat["n"] >= 0
        w.send(t="stop", job=1)
        stream += w.replies("done", job=1)
        done1 = stream[-1]
        assert done1["stop"] == "request" and 0 < len(done1["tokens"]) < 12
        tokens = [(m["job"], m["i"]) for m in stream if m["t"] == "token"]
        assert {job for job, _ in tokens[:6]} == {1, 2}  # decoded together
        n2 = len(tokens) - len(done1["tokens"])
        assert [i for job, i in tokens if job == 2] == list(range(n2))  # each job's own indices
        assert [m["tok"] for m in stream if m["t"] == "token" and m["job"] == 1] == \
            done1["tokens"]
        w.send(t="rate", tokens_per_s=0)  # uncapped: job 2 finishes at once
        done2 = w.replies("done", job=2)[-1]
        assert done2["stop"] in ("limit", "eos") and done2["stats"]["n_prompt"] == 3
        w.send(t="rate", tokens_per_s=5)
        w.send(t="generate", job=4, prompt_ids=[7, 8, 9], max_tokens=100)
        w.send(t="generate", job=5, prompt_ids=[7, 8, 9], max_tokens=100)
        w.send(t="generate", job=6, prompt_ids=[7, 8, 9], max_tokens=100)
        w.replies("token", job=4)
        w.send(t="exit")
        ends = [m for m in w.replies("done", job=6) if m["t"] == "done"]
        assert [(m["job"], m["stop"]) for m in ends] == [(4, "request"), (5, "request"),
                                                        (6, "request")]
        assert w.proc.wait(5) == 0
    finally:
        w.close()


def test_worker_exits_when_its_supervisor_goes(synth_model):
    w = _Worker()
    try:
        w.send(t="load", path=str(synth_model), threads=1, n_ctx=N_CTX)
        w.replies("loaded")
        w.proc.stdin.close()
        assert w.proc.wait(5) == 0
    finally:
        w.close()
