"""The executive's side of the engine: a supervised child process (flight.engine.worker).

The engine runs in a child so that a crash or hang in it never takes the executive, the link
or the stores down with it (the worker's docstring gives the protocol). EngineSupervisor starts
the child, loads the model in it, feeds it jobs one at a time and reads its replies in one
thread of its own, which is the only one that touches the child's pipes: callers' threads only
queue work and wake it.

Fault detection, all in that thread:
  died     the reply pipe reached EOF or the child exited (kill -9, segfault, abort, OOM kill);
  silent   no message at all for heartbeat_timeout_s, though the child sends a heartbeat every
           0.2 s (SIGSTOP, a frozen interpreter, a machine too loaded to schedule it);
  stalled  heartbeats come but the running job makes no token for stall_timeout_s (a C loop
           stuck with the GIL released; generous by default because a long prefill is silent);
  command  restart() (the ENGINE_RESTART command).
Each kills the child with SIGKILL, reaps it (no zombie), starts and loads a new one and sends it
the job that was running, with the tokens received so far and the RNG state that came with the
last of them: the engine's exact-resume API makes the job's final tokens equal those of an
uninterrupted run, greedy or sampled. The job's handle holds that checkpoint at every moment
(EngineJob.tokens/rng_state), for a caller that wants to persist it.

Two limits keep a fault from becoming a restart loop: a job in flight during max_job_restarts
fault restarts fails (a job that crashes the engine every time is the likelier culprit), and a
child that fails to load max_load_failures times in a row leaves the supervisor failed (the
model file is bad; every job fails with that error). A load that fails at start() raises
EngineError with the child's one-line message.
"""
from __future__ import annotations

import logging
import os
import select
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack

from flight.engine import EngineError

log = logging.getLogger(__name__)

RESTART_CAUSES = ("died", "silent", "stalled", "command")


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
    stop_reason: str  # "eos", "limit", "context" or "request"
    rng_state: int | None
    stats: dict[str, Any]
    restarts: int  # engine restarts the job lived through
    n_resumed: int  # of tokens, how many the last child was given to resume from


@dataclass
class EngineJob:
    """A handle on one job: its request, the checkpoint so far, and its end."""

    job_id: int
    request: dict[str, Any]
    tokens: list[int] = field(default_factory=list)
    rng_state: int | None = None
    restarts: int = 0
    fault_restarts: int = 0  # restarts not by command: the ones that count against the job
    result: JobResult | None = None
    error: str | None = None
    _done: threading.Event = field(default_factory=threading.Event, repr=False)

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
        self.busy = False  # a job has been sent to this child and has not ended

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, deadline_s: float, t: str, **fields: Any) -> bool:
        """Write one request; False if the child is gone or would not take it in time."""
        fields["t"] = t
        data = memoryview(self.packer.pack(fields))
        end = time.monotonic() + deadline_s
        while data:
            left = end - time.monotonic()
            if left <= 0:
                return False
            try:
                _, w, _ = select.select([], [self.wfd], [], left)
                if w:
                    data = data[os.write(self.wfd, data):]
            except BlockingIOError:  # writable, but not for this much: wait for more room
                continue
            except OSError:  # EPIPE: the child is gone
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


class EngineSupervisor:
    """The engine in a supervised child process.

        with EngineSupervisor(model_path, n_ctx=2048) as sup:
            job = sup.generate(prompt_ids, max_tokens=64, temperature=0.8, seed=7)
            result = job.wait()

    threads=None lets the child take default_engine_threads() (all cores but one). on_token is
    called with a TokenEvent per token, on the supervisor's thread (keep it short; an exception
    from it is logged, not raised). Counters: restarts, last_restart_cause (one of
    RESTART_CAUSES), restart_counts.
    """

    def __init__(
        self,
        model_path: str | os.PathLike,
        threads: int | None = None,
        n_ctx: int = 2048,
        *,
        simd: str = "auto",
        heartbeat_timeout_s: float = 2.0,
        stall_timeout_s: float = 120.0,
        load_timeout_s: float = 60.0,
        shutdown_timeout_s: float = 3.0,
        max_job_restarts: int = 3,
        max_load_failures: int = 3,
        on_token: Callable[[TokenEvent], object] | None = None,
    ) -> None:
        self._load_msg = dict(path=str(model_path), threads=threads, n_ctx=n_ctx, n_batch=1,
                              simd=simd)
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.stall_timeout_s = stall_timeout_s
        self.load_timeout_s = load_timeout_s
        self.shutdown_timeout_s = shutdown_timeout_s
        self.max_job_restarts = max_job_restarts
        self.max_load_failures = max_load_failures
        self.on_token = on_token

        self.restarts = 0
        self.last_restart_cause: str | None = None
        self.restart_counts = dict.fromkeys(RESTART_CAUSES, 0)
        self.failed: str | None = None  # why the supervisor gave up, if it did

        self._lock = threading.Lock()
        self._queue: deque[EngineJob] = deque()
        self._current: EngineJob | None = None
        self._progress_at = 0.0  # when the current job last made progress (sent or a token)
        self._next_id = 1
        self._restart_requested = False
        self._closing = False
        self._child: _Child | None = None
        self._thread: threading.Thread | None = None
        self._wake_r = self._wake_w = -1  # a pipe while running: writing to it wakes the thread
        self._load_failures = 0

    # -- the caller's side ----------------------------------------------------------------------

    def start(self) -> dict[str, Any]:
        """Start the child and load the model; returns its `loaded` facts (n_ctx, threads,
        simd, vocab, eos_ids, resident_bytes, pid). EngineError on a load failure."""
        if self._thread is not None:
            raise EngineError("the engine supervisor is already started")
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
                 seed: int = 0) -> EngineJob:
        """Queue a job (the prompt as text, completed as given, or as token ids); jobs run one
        at a time in order. Same parameters and results as flight.engine.Engine.generate."""
        request: dict[str, Any] = dict(max_tokens=int(max_tokens), temperature=float(temperature),
                                       top_k=int(top_k), top_p=float(top_p), seed=int(seed))
        if isinstance(prompt, str):
            request["prompt"] = prompt
        else:
            request["prompt_ids"] = [int(i) for i in prompt]
        with self._lock:
            if self.failed is not None:
                raise EngineError(self.failed)
            if self._closing or self._thread is None:
                raise EngineError("the engine supervisor is not running")
            job = EngineJob(self._next_id, request)
            self._next_id += 1
            self._queue.append(job)
        self._wake()
        return job

    def restart(self) -> None:
        """Kill and respawn the engine now (ENGINE_RESTART); the running job resumes exactly."""
        with self._lock:
            self._restart_requested = True
        self._wake()

    def stop(self) -> None:
        """Stop the running job at its next token boundary, then end the child: it has
        shutdown_timeout_s to exit by itself before SIGKILL. The stopped job ends with
        stop_reason "request" (its tokens and rng_state resume it later); queued jobs fail."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
        if threading.current_thread() is self._thread:  # from on_token: the loop ends by itself
            return
        if self._thread is not None:
            self._wake()
            self._thread.join()

    @property
    def pid(self) -> int | None:
        """The current child's pid (None before start and after stop)."""
        child = self._child
        return child.pid if child is not None else None

    @property
    def running(self) -> EngineJob | None:
        return self._current

    def __enter__(self) -> EngineSupervisor:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

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
            self._shutdown()
            self._close_wake_pipe()

    def _step(self) -> bool:
        """One round of the loop: dispatch, read, check health. False: leave the loop."""
        child = self._child
        assert child is not None
        with self._lock:
            closing, restart = self._closing, self._restart_requested
            self._restart_requested = False
        if closing:
            return False
        if restart:
            self._restart("command")
            return True
        if not child.busy:  # idle, or new after a restart (then the running job is resent)
            self._dispatch(child)
        for msg in self._read(child, 0.25):
            self._handle(msg)
        now = time.monotonic()
        if child.rfd < 0 or not child.alive():
            self._restart("died")
        elif now - child.last_msg > self.heartbeat_timeout_s:
            self._restart("silent")
        elif self._current is not None and now - self._progress_at > self.stall_timeout_s:
            self._restart("stalled")
        return self.failed is None

    def _dispatch(self, child: _Child) -> None:
        with self._lock:
            if self._current is None and self._queue:
                self._current = self._queue.popleft()
            job = self._current
        if job is None:
            return
        child.busy = True
        self._progress_at = time.monotonic()
        request = dict(job.request, job=job.job_id)
        if job.tokens:  # resume after a restart: the checkpoint of the last token received
            request.update(resume_tokens=job.tokens, rng_state=job.rng_state)
        # a refused write shows up as a dead or silent child on this round's checks
        child.send(self.heartbeat_timeout_s, "generate", **request)

    def _handle(self, msg: dict) -> None:
        t = msg.get("t")
        job = self._current
        if t in ("heartbeat", "pong"):
            return
        if job is None or msg.get("job") != job.job_id:
            log.warning("engine reply %r for no running job", t)
            return
        if t == "token":
            if msg["i"] != len(job.tokens):  # cannot happen unless the protocol is broken
                raise EngineError(f"job {job.job_id}: token {msg['i']} after {len(job.tokens)}")
            job.tokens.append(msg["tok"])
            job.rng_state = msg["rng"]
            self._progress_at = time.monotonic()
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

    def _finish(self, job: EngineJob, error: str | None = None) -> None:
        job.error = error
        if self._child is not None:
            self._child.busy = False
        with self._lock:
            if self._current is job:
                self._current = None
        job._done.set()

    def _restart(self, cause: str) -> None:
        old = self._child
        assert old is not None
        log.warning("engine restart (%s): killing child %d", cause, old.pid)
        old.kill()
        self.restarts += 1
        self.restart_counts[cause] += 1
        self.last_restart_cause = cause
        job = self._current
        if job is not None:
            job.restarts += 1
            if cause != "command":
                job.fault_restarts += 1
                if job.fault_restarts > self.max_job_restarts:
                    self._finish(job, f"job {job.job_id} failed: the engine {cause} "
                                      f"{job.fault_restarts} times while running it")
        while True:
            try:
                self._child = self._spawn()
                self._load_failures = 0
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
            jobs = ([self._current] if self._current is not None else []) + list(self._queue)
            self._current = None
            self._queue.clear()
        for job in jobs:
            job.error = why
            job._done.set()

    def _shutdown(self) -> None:
        """Ask the child to exit (it stops its job first, and the job's done still comes back),
        give it shutdown_timeout_s, then SIGKILL; jobs not finished by then fail."""
        child = self._child
        if child is not None:
            end = time.monotonic() + self.shutdown_timeout_s
            if child.rfd >= 0 and child.send(0.5, "exit"):
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
