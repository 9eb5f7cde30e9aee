"""The executive's side of the engine: a supervised child process (flight.engine.worker).

The engine runs in a child so that a crash or hang in it never takes the executive, the link
or the stores down with it (the worker's docstring gives the protocol). EngineSupervisor starts
the child, loads the model in it with n_batch sequence slots, sends it every job as it is
submitted (the child decodes up to n_batch of them together in one batch and queues the rest
in order) and reads its replies in one thread of its own, which is the only one that touches
the child's pipes: callers' threads only record work and wake it.

The executive's handles on the batch: generate() (optionally under its own job id, optionally
resuming a checkpoint), preempt() (the job leaves the batch at its next token boundary and ends
with stop_reason "request", its checkpoint whole), set_rate() (the batch's aggregate tokens/s
cap, a power level made physical), tokenize() (the child's tokenizer and chat template, to check
a prompt against n_ctx at submission), on_token/on_done callbacks, and restart()/stop().

Fault detection, all in that thread:
  died     the reply pipe reached EOF or the child exited (kill -9, segfault, abort, OOM kill,
           a failed batch step);
  silent   no message at all for heartbeat_timeout_s, though the child sends a heartbeat every
           0.2 s (SIGSTOP, a frozen interpreter, a machine too loaded to schedule it), or it
           would not take a request within that time;
  stalled  heartbeats come but no job in the child makes a token for stall_timeout_s (a C loop
           stuck with the GIL released; generous by default because a long prefill is silent;
           a rate cap's pause between steps is added to it);
  command  restart() (the ENGINE_RESTART command).
Each kills the child with SIGKILL, reaps it (no zombie), starts and loads a new one, gives it
the rate cap and resends it every job in flight, in their original order, each with the tokens
received so far and the RNG state that came with the last of them: the engine's exact-resume
API makes every job's final tokens equal those of an uninterrupted run, greedy or sampled,
whatever else shared its batch. A job's handle holds that checkpoint at every moment
(EngineJob.tokens/rng_state, starting from the resume_tokens/rng_state it was submitted with),
for a caller that wants to persist it.

That is with auto_restart (the default). The node runs with auto_restart=False, and its FDIR
rules table decides instead (flight/executive/fdir.py), so that a response can be disabled by
command and its thresholds are the table's: the supervisor judges nothing that needs a
threshold. It reports heartbeat_age_s and token_silence_s and acts on neither; a child that
died is killed if need be, reaped and its jobs taken back, and `fault` says "died" until
restart(cause) (the rules' ENGINE_RESTART) starts a new one and resends them as above. A child
that would not take a request (broken) is sent nothing more: it is hung, and ages.

Weight scrubbing: given the model's manifest, the child refuses weights that disagree with it
at load and scrubs them in the background (flight/engine/scrubber.py). Its reports are counted
in `scrub` and passed on through on_scrub; repair() asks it to rewrite the bad blocks from flash
(the executive's FDIR action), scrub_now() and inject_seu() are SCRUB_NOW and TEST_INJECT_SEU.
A block that is bad on flash too takes the engine out of service: the supervisor gives up
rather than restart a child that would refuse the model anyway.

Two limits keep a fault from becoming a restart loop: a job in the batch during more than
max_job_restarts fault restarts fails (a job that crashes the engine every time is the likelier
culprit; jobs that were only queued in the child are not counted), and a child that fails to
load max_load_failures times in a row leaves the supervisor failed (the model file is bad;
every job fails with that error). A load that fails at start() raises EngineError with the
child's one-line message.
"""
from __future__ import annotations

import logging
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack

from flight.engine import EngineError

log = logging.getLogger(__name__)

RESTART_CAUSES = ("died", "silent", "stalled", "command")
STATES = ("stopped", "idle", "running", "failed")


@dataclass(frozen=True)
class TokenEvent:
    """One token of a job as it arrived from the engine."""

    job_id: int
    index: int  # position in the job's whole output (resumed tokens count)
    token: int
    piece: str  # the text it completed ("" while a multibyte character is incomplete)
    rng_state: int  # the sampler's state after it: with tokens[:index + 1] it resumes the job


@dataclass(frozen=True)
class JobResult:
    tokens: list[int]
    text: str
    stop_reason: str  # "eos", "limit", "context" or "request" (stopped or preempted)
    rng_state: int | None
    stats: dict[str, Any]
    restarts: int  # engine restarts the job lived through
    n_resumed: int  # of tokens, how many the last child was given to resume from


@dataclass
class EngineJob:
    """A handle on one job: its request, the checkpoint so far, and its end.

    tokens/rng_state are the checkpoint (the job's whole output so far and the sampler's
    state after its last token): given back to generate() as resume_tokens/rng_state, they
    continue the job exactly. They start as the checkpoint it was submitted with."""

    job_id: int
    request: dict[str, Any]
    tokens: list[int] = field(default_factory=list)
    rng_state: int | None = None
    restarts: int = 0
    fault_restarts: int = 0  # restarts not by command while it was in the batch: they count
    result: JobResult | None = None
    error: str | None = None
    _done: threading.Event = field(default_factory=threading.Event, repr=False)
    # the supervisor thread's bookkeeping
    _preempt: bool = field(default=False, repr=False)  # preempt() asked (set under the lock)
    _sent: bool = field(default=False, repr=False)  # its generate went to the current child
    _stop_sent: bool = field(default=False, repr=False)  # and its stop

    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> JobResult:
        """The result; EngineError if the job failed, TimeoutError if it is still running."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"job {self.job_id} still running after {timeout} s")
        if self.error is not None:
            raise EngineError(self.error)
        assert self.result is not None
        return self.result


@dataclass
class _Request:
    """A request the child answers with one reply naming its req: tokenize, scrub_now, inject_seu."""

    req: int
    t: str
    fields: dict[str, Any]
    reply: dict[str, Any] | None = None
    error: str | None = None
    sent: bool = False  # to the current child
    answered: threading.Event = field(default_factory=threading.Event)


@dataclass
class ScrubCounters:
    """What the engine's weight scrubber reported, over every child of this supervisor."""

    passes: int = 0
    detected: int = 0  # upsets (blocks found disagreeing with the manifest)
    repaired: int = 0
    flash_corrupt: int = 0
    pending: set[int] = field(default_factory=set)  # blocks detected and not yet repaired
    last_pass_s: float = 0.0  # wall time of the last pass
    last_pass_cpu_s: float = 0.0  # the scrubber thread's CPU time in it


class _Child:
    """One engine process and its pipes; the supervisor thread alone uses it."""

    def __init__(self) -> None:
        # stderr is inherited: a traceback from the child lands in the node's log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "flight.engine.worker"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, close_fds=True)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.wfd = self.proc.stdin.fileno()
        self.rfd = self.proc.stdout.fileno()
        # never block on a full pipe into a stopped child: writes wait in select, with a deadline
        os.set_blocking(self.wfd, False)
        self.unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
        self.packer = msgpack.Packer()
        self.last_msg = time.monotonic()
        self.loaded: dict[str, Any] | None = None
        self.rate: float | None = None  # the rate cap this child was given
        self.hb_jobs: list[int] = []  # the jobs in its batch, as its last heartbeat said
        self.broken = False  # a request was not taken whole: the stream can no longer be trusted

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, deadline_s: float, t: str, **fields: Any) -> bool:
        """Write one request; False (and broken) if the child is gone or would not take it in
        time: a request cut short would garble the stream, so that child is done with."""
        if self.broken or self.wfd < 0:
            return False
        fields["t"] = t
        data = memoryview(self.packer.pack(fields))
        end = time.monotonic() + deadline_s
        while data:
            left = end - time.monotonic()
            if left <= 0:
                self.broken = True
                return False
            try:
                _, w, _ = select.select([], [self.wfd], [], left)
                if w:
                    data = data[os.write(self.wfd, data):]
            except BlockingIOError:  # writable, but not for this much: wait for more room
                continue
            except OSError:  # EPIPE: the child is gone
                self.broken = True
                return False
        return True

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL (works on a stopped process too), reap, close the pipes."""
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=5.0)
        except subprocess.TimeoutExpired:  # uninterruptible sleep in the kernel; reaped later
            log.error("engine child %d did not exit after SIGKILL", self.proc.pid)
        self.close_pipes()

    def close_pipes(self) -> None:
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()  # type: ignore[union-attr]
            except OSError:
                pass
        self.rfd = self.wfd = -1  # the numbers may be reused by other files from now on


class EngineSupervisor:
    """The engine in a supervised child process, decoding up to n_batch jobs at once.

        with EngineSupervisor(model_path, n_ctx=2048, n_batch=4) as sup:
            a = sup.generate(prompt_ids, max_tokens=64, temperature=0.8, seed=7)
            b = sup.generate(other_ids, max_tokens=64)
            sup.preempt(a.job_id)                 # a ends with stop_reason "request"
            ra = a.wait()
            a2 = sup.generate(prompt_ids, max_tokens=64, temperature=0.8, seed=7,
                              resume_tokens=ra.tokens, rng_state=ra.rng_state)

    threads=None lets the child take default_engine_threads() (all cores but one). on_token is
    called with a TokenEvent per token and on_done with the EngineJob when a job ends
    (finished, stopped or failed), both on the supervisor's thread: keep them short; an
    exception from them is logged, not raised; they may call generate, preempt, set_rate,
    restart and stop, not tokenize. Counters: restarts, last_restart_cause (one of
    RESTART_CAUSES), restart_counts; state is one of STATES. auto_restart=False leaves the
    restart after a fault to the caller's FDIR rules (see the module's docstring), which watch
    fault, heartbeat_age_s and token_silence_s.
    """

    def __init__(
        self,
        model_path: str | os.PathLike,
        threads: int | None = None,
        n_ctx: int = 2048,
        *,
        n_batch: int = 1,
        simd: str = "auto",
        heartbeat_timeout_s: float = 2.0,
        stall_timeout_s: float = 120.0,
        load_timeout_s: float = 60.0,
        shutdown_timeout_s: float = 3.0,
        max_job_restarts: int = 3,
        max_load_failures: int = 3,
        auto_restart: bool = True,
        on_token: Callable[[TokenEvent], object] | None = None,
        on_done: Callable[[EngineJob], object] | None = None,
        manifest: str | os.PathLike | None = None,
        scrub_period_s: float = 60.0,
        on_scrub: Callable[[str, dict[str, Any]], object] | None = None,
    ) -> None:
        if n_batch < 1:
            raise ValueError(f"n_batch must be at least 1, got {n_batch}")
        self.n_batch = n_batch
        self._load_msg = dict(path=str(model_path), threads=threads, n_ctx=n_ctx,
                              n_batch=n_batch, simd=simd)
        self._load_msg.update(manifest=None if manifest is None else str(manifest), scrub_period_s=scrub_period_s)
        self.on_scrub = on_scrub
        self.scrub = ScrubCounters()
        self._repair_requested = False
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.stall_timeout_s = stall_timeout_s
        self.load_timeout_s = load_timeout_s
        self.shutdown_timeout_s = shutdown_timeout_s
        self.max_job_restarts = max_job_restarts
        self.max_load_failures = max_load_failures
        self.auto_restart = auto_restart
        self.on_token = on_token
        self.on_done = on_done

        self.restarts = 0
        self.last_restart_cause: str | None = None
        self.restart_counts = dict.fromkeys(RESTART_CAUSES, 0)
        self.failed: str | None = None  # why the supervisor gave up, if it did
        # without auto_restart: the fault ("died") whose child was reaped, until restart() answers it
        self.fault: str | None = None
        self.loaded: dict[str, Any] | None = None  # the last child's `loaded` facts

        self._lock = threading.Lock()
        self._revive_lock = threading.Lock()
        self._jobs: dict[int, EngineJob] = {}  # in flight, in submission order
        self._requests: dict[int, _Request] = {}  # waiting for a reply
        self._rate: float | None = None
        self._progress_at = 0.0  # when a job in the child last made progress
        self._next_id = 1
        self._next_req = 1
        self._restart_requested = False
        self._restart_cause: str | None = None  # restart()'s, when it named one
        self._closing = False
        self._ended = False  # the supervisor thread has finished
        self._child: _Child | None = None
        self._thread: threading.Thread | None = None
        self._wake_r = self._wake_w = -1  # a pipe while running: writing to it wakes the thread
        self._load_failures = 0

    # -- the caller's side ----------------------------------------------------------------------

    def start(self) -> dict[str, Any]:
        """Start the child and load the model; returns its `loaded` facts (n_ctx, n_batch,
        threads, simd, vocab, eos_ids, resident_bytes, pid). EngineError on a load failure."""
        if self._thread is not None:
            raise EngineError("the engine supervisor is already started")
        if self._closing:  # stop() came while a revive was on its way: it must not start a child
            raise EngineError("the engine supervisor is stopping")
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        try:
            child = self._spawn()
        except EngineError:
            self._close_wake_pipe()
            raise
        self._child = child
        self._thread = threading.Thread(target=self._run, name="engine-supervisor", daemon=True)
        self._thread.start()
        assert child.loaded is not None
        return child.loaded

    def generate(self, prompt: str | Sequence[int], max_tokens: int = 128,
                 temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
                 seed: int = 0, *, job_id: int | None = None, resume_tokens: Sequence[int] = (),
                 rng_state: int | None = None) -> EngineJob:
        """Submit a job (the prompt as text, completed as given, or as token ids); it is sent
        to the child at once, which runs up to n_batch jobs together and queues the rest in
        order. Same parameters and results as flight.engine.Engine.generate, exact resume
        included (resume_tokens, rng_state: a checkpoint from an earlier EngineJob or
        JobResult of this same request). job_id: the caller's own id (default: the next free
        one); EngineError if a job with that id is in flight."""
        request: dict[str, Any] = dict(max_tokens=int(max_tokens), temperature=float(temperature),
                                       top_k=int(top_k), top_p=float(top_p), seed=int(seed))
        if isinstance(prompt, str):
            request["prompt"] = prompt
        else:
            request["prompt_ids"] = [int(i) for i in prompt]
        tokens = [int(i) for i in resume_tokens]
        state = None if rng_state is None else int(rng_state)
        with self._lock:
            self._check_running()
            if job_id is None:
                while self._next_id in self._jobs:
                    self._next_id += 1
                job_id = self._next_id
                self._next_id += 1
            elif int(job_id) in self._jobs:
                raise EngineError(f"job {job_id} is already in flight")
            job = EngineJob(int(job_id), request, tokens=tokens, rng_state=state)
            self._jobs[job.job_id] = job
        self._wake()
        return job

    def preempt(self, job_id: int) -> bool:
        """Stop a job at its next token boundary (or before it joins the batch): it ends with
        stop_reason "request" and its checkpoint, which generate(resume_tokens=...,
        rng_state=...) continues exactly. False if no such job is in flight."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.done():
                return False
            job._preempt = True
        self._wake()
        return True

    def set_rate(self, tokens_per_s: float | None) -> None:
        """Cap the aggregate decode rate of the batch (None or 0: uncapped); kept across
        engine restarts."""
        rate = float(tokens_per_s) if tokens_per_s else None
        if rate is not None and rate < 0:
            raise ValueError(f"a rate cap must be positive, got {tokens_per_s}")
        with self._lock:
            self._rate = rate
        self._wake()

    @property
    def rate(self) -> float | None:
        return self._rate

    def tokenize(self, text: str, chat: bool = False, system: str | None = None,
                 timeout: float = 10.0) -> list[int]:
        """The token ids of text (with chat: of the model's chat prompt for it, with the
        system prompt if given), from the child's tokenizer: what a job's prompt will cost.
        Blocks up to timeout, across a restart if one is under way. EngineError on a bad
        text or template, on the timeout, or when the supervisor is not running."""
        return self._call("tokenize", timeout, text=str(text), chat=bool(chat), system=system)["ids"]

    def scrub_now(self, timeout: float = 30.0) -> dict[str, Any]:
        """A whole scrub pass now (SCRUB_NOW): {blocks, bad, seconds}; the upsets it finds are
        reported as the paced passes' are. EngineError without a manifest or on the timeout."""
        return self._call("scrub_now", timeout)

    def inject_seu(self, offset: int | None = None, bit: int | None = None,
                   timeout: float = 10.0) -> dict[str, Any]:
        """Flip one bit of the live weights (TEST_INJECT_SEU; None: random): {offset, bit, block}."""
        return self._call("inject_seu", timeout, offset=offset, bit=bit)

    def repair(self) -> None:
        """Ask the child to rewrite every block its scrubber reported from flash (FDIR's
        SCRUB_REPAIR); the outcomes come back through on_scrub."""
        with self._lock:
            self._repair_requested = True
        self._wake()

    def _call(self, t: str, timeout: float, **fields: Any) -> dict[str, Any]:
        """Send a request the child answers with one reply; blocks up to timeout, across a
        restart if one is under way. EngineError on its error, the timeout, or when the
        supervisor is not running."""
        if threading.current_thread() is self._thread:
            raise EngineError(f"{t} cannot be called from the supervisor's own thread")
        with self._lock:
            self._check_running()
            if self.fault is not None and not self._restart_requested:  # down until FDIR or a command
                raise EngineError(f"the engine process {self.fault} and waits for ENGINE_RESTART")
            req = _Request(self._next_req, t, fields)
            self._next_req += 1
            self._requests[req.req] = req
        self._wake()
        if not req.answered.wait(timeout):
            with self._lock:
                self._requests.pop(req.req, None)
            raise EngineError(f"the engine did not answer {t} in {timeout} s")
        if req.error is not None:
            raise EngineError(req.error)
        assert req.reply is not None
        return req.reply

    def restart(self, cause: str | None = None) -> None:
        """Kill and respawn the engine now (ENGINE_RESTART, or an FDIR rule's); every job
        resumes exactly. cause (one of RESTART_CAUSES) is what the restart answers, counted in
        restart_counts and last_restart_cause: by default the fault waiting for it, else
        "command". A fault cause counts against the jobs in the batch (max_job_restarts), as
        the supervisor's own restarts do. A supervisor that had given up (failed) starts
        afresh: EngineError if the model still does not load."""
        if cause is not None and cause not in RESTART_CAUSES:
            raise ValueError(f"restart cause {cause!r}: one of {', '.join(RESTART_CAUSES)}")
        with self._revive_lock:  # one revive at a time: FDIR's (on a thread) and a command's
            with self._lock:
                failed = self.failed is not None and not self._closing
                self._restart_requested = not failed
                self._restart_cause = cause
            if failed:
                self._revive(cause or "command")
            else:
                self._wake()

    def _revive(self, cause: str) -> None:
        """Start again after giving up: the old thread has ended (or is ending) by itself."""
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            self._thread = None
            self._ended = False
            self.failed = None
            self._load_failures = 0
        try:
            self.start()
        except EngineError as exc:
            with self._lock:
                self.failed = f"the engine failed to restart: {exc}"
                self._ended = True
            raise
        self.restarts += 1
        self.restart_counts[cause] += 1
        self.last_restart_cause = cause

    def stop(self) -> None:
        """Stop every job at its next token boundary (each ends with stop_reason "request"
        and its checkpoint, queued ones too), then end the child: it has shutdown_timeout_s
        for that before SIGKILL; jobs it did not answer for by then fail."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
        if threading.current_thread() is self._thread:  # from a callback: the loop ends itself
            return
        if self._thread is not None:
            self._wake()
            self._thread.join()

    @property
    def pid(self) -> int | None:
        """The current child's pid (None before start, mid-restart and after stop)."""
        child = self._child
        return child.pid if child is not None else None

    @property
    def running(self) -> tuple[EngineJob, ...]:
        """The jobs in flight (in the batch or waiting for a slot), in submission order."""
        with self._lock:
            return tuple(self._jobs.values())

    @property
    def state(self) -> str:
        """"stopped" (not started, or stopped), "idle", "running" (jobs in flight) or
        "failed" (see failed)."""
        if self.failed is not None:
            return "failed"
        if self._thread is None or self._closing or self._ended:
            return "stopped"
        return "running" if self._jobs else "idle"

    @property
    def heartbeat_age_s(self) -> float:
        """Seconds since the engine process last sent a message (it heartbeats every 0.2 s);
        0 while there is none to hear (not started, a new one loading, reaped after a fault,
        stopped): a process that is gone is not a silent one."""
        child = self._child
        return time.monotonic() - child.last_msg if child is not None else 0.0

    @property
    def token_silence_s(self) -> float:
        """Seconds a job in the engine process has gone without a token, beyond the rate cap's
        pause between steps (a power level's pacing is not a stall); 0 with no job in it."""
        if self._child is None:
            return 0.0
        with self._lock:
            in_child = any(j._sent for j in self._jobs.values())
            rate = self._rate
        if not in_child:
            return 0.0
        return max(0.0, time.monotonic() - self._progress_at - (self.n_batch / rate if rate else 0.0))

    def __enter__(self) -> EngineSupervisor:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _check_running(self) -> None:
        """Under the lock: EngineError unless jobs can be taken."""
        if self.failed is not None:
            raise EngineError(self.failed)
        if self._closing or self._thread is None or self._ended:
            raise EngineError("the engine supervisor is not running")

    def _wake(self) -> None:
        with self._lock:  # the thread closes the pipe on its way out
            if self._wake_w < 0:
                return
            try:
                os.write(self._wake_w, b"x")
            except BlockingIOError:  # full: it is awake already
                pass

    def _close_wake_pipe(self) -> None:
        with self._lock:
            os.close(self._wake_r)
            os.close(self._wake_w)
            self._wake_r = self._wake_w = -1

    # -- the supervisor thread ------------------------------------------------------------------

    def _spawn(self) -> _Child:
        """A new child with the model loaded; EngineError (the child's message) if not."""
        child = _Child()
        try:
            if not child.send(self.heartbeat_timeout_s, "load", **self._load_msg):
                raise EngineError("the engine child did not take its load request")
            end = time.monotonic() + self.load_timeout_s
            while child.loaded is None:
                for msg in self._read(child, min(self.heartbeat_timeout_s,
                                                 end - time.monotonic())):
                    if msg["t"] == "loaded":
                        child.loaded = msg
                    elif msg["t"] == "error":
                        raise EngineError(msg["msg"])
                if child.loaded is not None:
                    break
                if not child.alive() and child.rfd < 0:
                    raise EngineError(f"the engine child exited ({child.proc.returncode}) "
                                      "while loading")
                if time.monotonic() - child.last_msg > self.heartbeat_timeout_s:
                    raise EngineError("the engine child went silent while loading")
                if time.monotonic() > end:
                    raise EngineError(f"the model did not load in {self.load_timeout_s} s")
        except BaseException:
            child.kill()
            raise
        self.loaded = child.loaded
        self.scrub.pending.clear()  # a fresh mapping of the model: the old child's upsets went with it
        return child

    def _read(self, child: _Child, timeout: float) -> list[dict]:
        """Messages that arrive within timeout (fewer if the wake pipe fires). EOF leaves
        child.rfd at -1."""
        if child.rfd < 0:
            time.sleep(max(timeout, 0.0))
            return []
        r, _, _ = select.select([child.rfd, self._wake_r], [], [], max(timeout, 0.0))
        if self._wake_r in r:
            os.read(self._wake_r, 4096)
        if child.rfd not in r:
            return []
        data = os.read(child.rfd, 1 << 16)
        if not data:
            child.rfd = -1
            return []
        child.last_msg = time.monotonic()
        child.unpacker.feed(data)
        return list(child.unpacker)

    def _run(self) -> None:
        try:
            while self._step():
                pass
        except Exception:  # a bug here must not leave callers waiting forever
            log.exception("engine supervisor failed")
            self._give_up("engine supervisor failed (see log)")
        finally:
            try:
                self._shutdown()
            finally:
                self._ended = True
                self._close_wake_pipe()

    def _step(self) -> bool:
        """One round of the loop: send, read, check health. False: leave the loop."""
        child = self._child
        with self._lock:
            closing, restart = self._closing, self._restart_requested
            cause = self._restart_cause or self.fault or "command"
            self._restart_requested, self._restart_cause = False, None
        if closing:
            return False
        if restart:
            self._restart(cause)
            return self.failed is None
        if child is None:  # isolated after a fault (auto_restart off): wait for restart()
            if select.select([self._wake_r], [], [], 0.25)[0]:
                os.read(self._wake_r, 4096)
            return True
        self._dispatch(child, self.heartbeat_timeout_s)
        for msg in self._read(child, 0.25):
            self._handle(msg)
        if self.failed is not None:  # taken out of service (flash corrupt): no restart
            return False
        if child.rfd < 0 or not child.alive():
            fault: str | None = "died"
        elif not self.auto_restart:  # how long a silence or a stall may last is FDIR's to say
            fault = None
        elif child.broken or self.heartbeat_age_s > self.heartbeat_timeout_s:
            fault = "silent"
        elif self.token_silence_s > self.stall_timeout_s:
            fault = "stalled"
        else:
            fault = None
        if fault is not None and self.auto_restart:
            self._restart(fault)
        elif fault is not None:  # isolate, report, and wait for restart() (FDIR's ENGINE_RESTART)
            self._isolate(fault)
            self.fault = fault
        return self.failed is None

    def _dispatch(self, child: _Child, deadline_s: float) -> None:
        """Send the child what it has not had yet: the rate cap, new jobs (in order), stops
        of preempted jobs, requests (tokenize, scrub_now, inject_seu), a repair. A refused write marks the child broken, which
        this round's checks see."""
        with self._lock:
            rate = self._rate
            jobs = list(self._jobs.values())
            preempt = {j.job_id for j in jobs if j._preempt}
            requests = [r for r in self._requests.values() if not r.sent]
            repair, self._repair_requested = self._repair_requested, False
        if rate != child.rate:
            if not child.send(deadline_s, "rate", tokens_per_s=rate):
                return
            child.rate = rate
        for job in jobs:
            if not job._sent:
                if not any(j._sent for j in jobs):  # the child was idle: the stall clock starts
                    self._progress_at = time.monotonic()
                request = dict(job.request, job=job.job_id, resume_tokens=job.tokens,
                               rng_state=job.rng_state)
                if not child.send(deadline_s, "generate", **request):
                    return
                job._sent = True
            if job.job_id in preempt and not job._stop_sent:
                if not child.send(deadline_s, "stop", job=job.job_id):
                    return
                job._stop_sent = True
        for r in requests:
            if not child.send(deadline_s, r.t, req=r.req, **r.fields):
                return
            r.sent = True
        if repair and not child.send(deadline_s, "repair"):
            return

    def _handle(self, msg: dict) -> None:
        t = msg.get("t")
        if t == "heartbeat":
            if self._child is not None:
                self._child.hb_jobs = list(msg.get("jobs") or ())
            return
        if t == "pong":
            return
        if msg.get("req") is not None:  # tokenized, scrubbed, injected, or an error about one
            with self._lock:
                req = self._requests.pop(msg.get("req"), None)
            if req is not None:  # None: its caller gave up waiting
                req.reply, req.error = msg, msg.get("msg") if t == "error" else None
                req.answered.set()
            return
        if t in ("upset", "repaired", "flash_corrupt", "scrub_pass"):
            self._scrubbed(t, msg)
            return
        with self._lock:
            job = self._jobs.get(msg.get("job"))
        if job is None or not job._sent:
            log.warning("engine reply %r for no job in flight (%r)", t, msg.get("msg"))
            return
        self._progress_at = time.monotonic()
        if t == "token":
            if msg["i"] != len(job.tokens):  # cannot happen unless the protocol is broken
                raise EngineError(f"job {job.job_id}: token {msg['i']} after {len(job.tokens)}")
            job.tokens.append(msg["tok"])
            job.rng_state = msg["rng"]
            if self.on_token is not None:
                try:
                    self.on_token(TokenEvent(job.job_id, msg["i"], msg["tok"], msg["piece"],
                                             msg["rng"]))
                except Exception:
                    log.exception("on_token callback failed")
        elif t == "done":
            job.tokens = list(msg["tokens"])
            job.rng_state = msg["rng"]
            job.result = JobResult(tokens=job.tokens, text=msg["text"], stop_reason=msg["stop"],
                                   rng_state=msg["rng"], stats=msg["stats"],
                                   restarts=job.restarts, n_resumed=msg["n_resumed"])
            self._finish(job)
        elif t == "error":
            self._finish(job, msg["msg"])

    def _scrubbed(self, t: str, msg: dict) -> None:
        """A scrubber report: counted, passed on through on_scrub; a flash_corrupt takes the
        engine out of service (the supervisor gives up, so nothing restarts it by itself: the
        model on flash is bad, and a new child would refuse it at load)."""
        sc = self.scrub
        if t == "upset":
            sc.detected += 1
            sc.pending.add(msg["block"])
        elif t == "repaired":
            sc.repaired += 1
            sc.pending.discard(msg["block"])
        elif t == "flash_corrupt":
            sc.flash_corrupt += 1
        else:
            sc.passes += 1
            sc.last_pass_s, sc.last_pass_cpu_s = msg["seconds"], msg["cpu_s"]
        if self.on_scrub is not None:
            try:
                self.on_scrub(t, {k: v for k, v in msg.items() if k != "t"})
            except Exception:
                log.exception("on_scrub callback failed")
        if t == "flash_corrupt":
            log.error("weights block %d is corrupt on flash too: the engine is out of service", msg["block"])
            self._give_up(f"FLASH_CORRUPT: block {msg['block']} at octet {msg['offset']} of the model "
                          "disagrees with its manifest on flash too")
            if self._child is not None:
                self._child.kill()

    def _finish(self, job: EngineJob, error: str | None = None) -> None:
        job.error = error
        with self._lock:
            if self._jobs.get(job.job_id) is job:
                del self._jobs[job.job_id]
        job._done.set()
        if self.on_done is not None:
            try:
                self.on_done(job)
            except Exception:
                log.exception("on_done callback failed")

    def _isolate(self, cause: str) -> None:
        """Kill and reap the child and take back what it had: every job in flight waits, with
        its checkpoint, for the next child (and counts one restart); a fault counts against the
        jobs that were in its batch."""
        old = self._child
        assert old is not None
        log.warning("engine %s: killing child %d", cause, old.pid)
        old.kill()
        self._child = None
        with self._lock:
            jobs = list(self._jobs.values())
            for r in self._requests.values():
                r.sent = False
        # the jobs that were in its batch: those its last heartbeat named, and the first
        # n_batch it had been sent (it joins them in order as slots free)
        sent = [j.job_id for j in jobs if j._sent]
        in_batch = set(old.hb_jobs) | set(sent[:self.n_batch])
        for job in jobs:
            job.restarts += 1
            job._sent = job._stop_sent = False
            if cause != "command" and job.job_id in in_batch:
                job.fault_restarts += 1
                if job.fault_restarts > self.max_job_restarts:
                    self._finish(job, f"job {job.job_id} failed: the engine {cause} "
                                      f"{job.fault_restarts} times while running it")

    def _restart(self, cause: str) -> None:
        if self._child is not None:  # else isolated already, when its fault was found
            self._isolate(cause)
        log.warning("engine restart (%s)", cause)
        self.fault = None
        self.restarts += 1
        self.restart_counts[cause] += 1
        self.last_restart_cause = cause
        while True:
            try:
                self._child = self._spawn()
                self._load_failures = 0
                self._progress_at = time.monotonic()
                return
            except EngineError as e:
                self._load_failures += 1
                log.error("engine respawn failed (%d): %s", self._load_failures, e)
                if self._load_failures >= self.max_load_failures:
                    self._give_up(f"the engine failed to restart: {e}")
                    return
                with self._lock:
                    if self._closing:
                        return

    def _give_up(self, why: str) -> None:
        with self._lock:
            self.failed = why
        self._fail_all(why)

    def _fail_all(self, why: str) -> None:
        with self._lock:
            jobs = list(self._jobs.values())
            requests = list(self._requests.values())
            self._requests.clear()
        for job in jobs:
            self._finish(job, why)
        for r in requests:
            r.error = self.failed or "the engine supervisor stopped"
            r.answered.set()

    def _shutdown(self) -> None:
        """Ask the child to exit (it stops every job first, and each one's done still comes
        back), give it shutdown_timeout_s, then SIGKILL; jobs not answered for by then fail."""
        child = self._child
        if child is not None:
            end = time.monotonic() + self.shutdown_timeout_s
            if child.rfd >= 0 and self.failed is None:
                # jobs submitted just now still go, so that they too come back with a done
                self._dispatch(child, 0.5)
                if child.send(0.5, "exit"):
                    while child.rfd >= 0 and time.monotonic() < end:
                        for msg in self._read(child, end - time.monotonic()):
                            self._handle(msg)
            try:  # stdout closed: the process is on its way out
                child.proc.wait(timeout=max(end - time.monotonic(), 0.0))
            except subprocess.TimeoutExpired:
                log.warning("engine child %d did not exit in %s s: SIGKILL", child.pid,
                            self.shutdown_timeout_s)
            child.kill()
            self._child = None
        self._fail_all(self.failed or "the engine supervisor stopped before the job finished")
