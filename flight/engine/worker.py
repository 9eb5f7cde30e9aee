"""The engine's child process: `python -m flight.engine.worker`, started and watched by
flight.executive.engine_supervisor.EngineSupervisor.

Why a child process. The engine is C code running a model from a file uplinked from the
ground; a fault in it (a bad memory access, a deadlocked thread barrier, an allocation that
never returns) would otherwise take the executive, the link and the stores down with it. In its
own process it can only take itself down: the supervisor sees it die or fall silent, kills it
with SIGKILL (which works whatever state it is in, stopped included), starts a new one and
resumes the job exactly (see below). A subprocess started with `sys.executable -m`, not a fork,
so the child holds none of the parent's threads, locks or open files.

Protocol. Both directions are a stream of msgpack maps (self-delimiting, so no length prefix
is needed: msgpack.Unpacker reads them off the pipe as they complete), each with its type in
"t". The child's stdin carries requests, its stdout replies; anything else the process prints
goes to stderr (fd 1 is moved away from the protocol at start-up, so a stray print from a
library cannot corrupt the stream).

  requests                                            replies
  load {path, threads, n_ctx, n_batch, simd}     ->   loaded {pid, n_ctx, threads, simd,
                                                        vocab, eos_ids, resident_bytes}
                                                      | error {job: None, msg}, then exit 1
  generate {job, prompt | prompt_ids, max_tokens, ->  token {job, i, tok, piece, rng} per token
            temperature, top_k, top_p, seed,          done {job, tokens, text, stop, rng,
            resume_tokens, rng_state}                       n_resumed, stats}
                                                      | error {job, msg}
  stop {job}     stop that job at its next token boundary (or before it starts)
  ping {}        -> pong {}, answered even mid-generation
  exit {}        stop the current job (its done still goes out), drop queued ones, exit 0
  (any time)     heartbeat {busy, job, n}: every HEARTBEAT_S from its own thread

"load" must come first and comes once; generate requests queue and run one at a time. Every
reply about a job names it, so a batch mode (several jobs joined into one BatchDecoder, their
tokens interleaved on the stream) needs no new message types.

Resume. Each token reply carries the sampler's RNG state after that token, so the parent holds
a checkpoint at every token it has received: tokens so far + that state. A respawned child
given them as resume_tokens/rng_state continues exactly where the dead one was
(Engine.generate's exact-resume API), and its token indices continue from len(resume_tokens).
A job that had already finished when its child died (all its tokens received, done lost) is
answered here without running the model.

Heartbeats come from a Python thread; the engine releases the GIL in its forward passes, so
they keep coming during a long prefill or decode. They prove the process is alive and
scheduled, not that the engine progresses (a C loop stuck with the GIL released would keep
them going): the supervisor's stall check watches the token stream for that. They carry the
running job and its token count n for telemetry.

Threads. The engine's threads default to the cores we may run on less one, floor 1: the
engine's workers meet at spin barriers after every matmul, and a spinning barrier with one of
its threads preempted by another busy process (the link, the executive's loop) waits a whole
scheduler slice for it, many times per token, so using every core makes both sides slow (see
default_engine_threads).

The child exits when its stdin closes: an orphaned engine must not keep the model's memory.
"""
from __future__ import annotations

import os
import queue
import sys
import threading
import time
from typing import Any, BinaryIO

import msgpack

from flight.engine import Engine
from flight.engine.tokenizer import StreamDecoder

HEARTBEAT_S = 0.2


def default_engine_threads(cores: int | None = None) -> int:
    """Engine threads for a node with `cores` usable cores (default: this process's affinity):
    all but one, so the link and the executive's loop keep a core, and at least one.

    Why not all of them: the engine's threads synchronize at spin barriers many times per
    token; when another runnable process takes one of their cores, the barrier waits for the
    preempted thread's next time slice, and decode slows far more than the lost core's share.
    Measured on a 2-core x86 host (SmolLM2-135M Q4_1, 128-token greedy decode): threads=2 gave
    186 tok/s alone but 72 tok/s with a busy Python loop in the supervising process (which
    itself lost a third of its loop rate); threads=1 gave 104 tok/s either way.
    """
    if cores is None:
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            cores = os.cpu_count() or 1
    return max(1, cores - 1)


def one_line(e: BaseException) -> str:
    """An exception as one line of text for an error reply."""
    text = str(e).strip()
    first = text.splitlines()[0] if text else ""
    return first or type(e).__name__


class _Replies:
    """The reply stream: msgpack maps on the protocol fd, one writer at a time (the main
    thread's tokens, the request thread's pongs and the heartbeat thread interleave)."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._lock = threading.Lock()
        self._packer = msgpack.Packer()

    def send(self, t: str, **fields: Any) -> None:
        fields["t"] = t
        with self._lock:
            try:
                self._out.write(self._packer.pack(fields))
                self._out.flush()
            except BrokenPipeError:  # the supervisor is gone: nobody to serve
                os._exit(0)


class Worker:
    """One child's state: the engine, the queue of generate requests, what is running."""

    def __init__(self, replies: _Replies) -> None:
        self.replies = replies
        self.engine: Engine | None = None
        self.requests: queue.Queue[dict | None] = queue.Queue()  # None: exit
        self.lock = threading.Lock()
        self.current: int | None = None  # job id being generated
        self.n_current = 0  # tokens generated so far for it (heartbeat progress)
        self.stopped: set[int] = set()  # jobs asked to stop, running or still queued

    # -- the request thread ---------------------------------------------------------------------

    def read_requests(self, unpacker: msgpack.Unpacker) -> None:
        """Route requests as they arrive: stop, ping and exit must not wait for a generation."""
        try:
            self._route(unpacker)
        except Exception as e:  # a garbled stream: die, and let the supervisor start afresh
            print(f"engine worker: bad request stream: {one_line(e)}", file=sys.stderr)
            os._exit(2)
        # stdin closed: the supervisor is gone, and nobody would read another reply
        os._exit(0)

    def _route(self, unpacker: msgpack.Unpacker) -> None:
        for msg in unpacker:
            t = msg.get("t")
            if t == "generate":
                self.requests.put(msg)
            elif t == "stop":
                self._stop(msg.get("job"))
            elif t == "ping":
                self.replies.send("pong")
            elif t == "exit":
                self._stop(None)
                while not self.requests.empty():  # queued jobs are dropped, not run
                    self.requests.get_nowait()
                self.requests.put(None)
                # block here, not at EOF below: the main thread finishes the job and exits
                threading.Event().wait()
            else:
                self.replies.send("error", job=msg.get("job"), msg=f"unknown request type {t!r}")

    def _stop(self, job: int | None) -> None:
        with self.lock:
            if job is None:
                job = self.current
            if job is None:
                return
            self.stopped.add(job)
            running = job == self.current
        if running:
            # the per-token check in _generate stops decode; this also covers the C loop
            self.engine.request_stop()

    # -- the heartbeat thread -------------------------------------------------------------------

    def heartbeat(self) -> None:
        while True:
            time.sleep(HEARTBEAT_S)
            with self.lock:
                job, n = self.current, self.n_current
            self.replies.send("heartbeat", busy=job is not None, job=job, n=n)

    # -- the main thread ------------------------------------------------------------------------

    def load(self, msg: dict) -> None:
        threads = msg.get("threads") or default_engine_threads()
        e = Engine.load(msg["path"], threads=threads, n_ctx=int(msg.get("n_ctx", 2048)),
                        n_batch=int(msg.get("n_batch", 1)), simd=msg.get("simd", "auto"))
        self.engine = e
        self.replies.send("loaded", pid=os.getpid(), n_ctx=e.n_ctx, threads=e.threads,
                          simd=e.simd, vocab=e.config["vocab"], eos_ids=list(e.eos_ids),
                          resident_bytes=e.resident_bytes)

    def serve(self) -> None:
        while (msg := self.requests.get()) is not None:
            job = int(msg["job"])
            try:
                self._generate(job, msg)
            except Exception as e:  # EngineError and bad requests alike: the job fails, we go on
                self.replies.send("error", job=job, msg=one_line(e))
            finally:
                with self.lock:
                    self.current = None
                    self.n_current = 0
                    self.stopped.discard(job)

    def _generate(self, job: int, msg: dict) -> None:
        e = self.engine
        prompt = msg["prompt_ids"] if msg.get("prompt_ids") is not None else msg["prompt"]
        ids = e.tokenize(prompt) if isinstance(prompt, str) else [int(i) for i in prompt]
        resumed = [int(i) for i in msg.get("resume_tokens") or ()]
        max_tokens = int(msg.get("max_tokens", 128))
        rng_state = msg.get("rng_state")
        with self.lock:
            self.current = job
            self.n_current = len(resumed)
            stop_now = job in self.stopped
        # a job whose child died after its last token but before its done: finished already
        finished = ("limit" if resumed and len(resumed) >= max_tokens
                    else "context" if resumed and len(ids) + len(resumed) > e.n_ctx
                    else "request" if stop_now else None)
        if finished is not None:
            self.replies.send("done", job=job, tokens=resumed, text=e.detokenize(resumed),
                              stop=finished, rng=rng_state, n_resumed=len(resumed), stats={})
            return

        stream = StreamDecoder(e.tokenizer)
        for tok in resumed:  # a character split across the interruption comes out whole
            stream.push(tok)
        index = len(resumed)

        def on_progress(tok: int, state: int) -> bool:
            nonlocal index
            self.replies.send("token", job=job, i=index, tok=tok, piece=stream.push(tok),
                              rng=state)
            index += 1
            with self.lock:
                self.n_current = index
                return job not in self.stopped

        g = e.generate(ids, max_tokens=max_tokens, temperature=float(msg.get("temperature", 0.0)),
                       top_k=int(msg.get("top_k", 0)), top_p=float(msg.get("top_p", 1.0)),
                       seed=int(msg.get("seed", 0)), resume_tokens=resumed, rng_state=rng_state,
                       on_progress=on_progress)
        stats = dict(n_prompt=len(g.prompt_tokens), n_reused=g.n_reused, prefill_s=g.prefill_s,
                     decode_s=g.decode_s, first_token_s=g.first_token_s,
                     decode_tok_s=g.decode_tok_s)
        self.replies.send("done", job=job, tokens=g.tokens, text=g.text, stop=g.stop_reason,
                          rng=g.rng_state, n_resumed=g.n_resumed, stats=stats)


def _protocol_streams() -> tuple[BinaryIO, BinaryIO]:
    """The protocol's pipes, with fd 1 pointed at stderr so nothing else can write into ours."""
    out_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(0, "rb", buffering=0), os.fdopen(out_fd, "wb")


def main() -> int:
    inp, out = _protocol_streams()
    replies = _Replies(out)
    worker = Worker(replies)
    threading.Thread(target=worker.heartbeat, name="engine-heartbeat", daemon=True).start()
    unpacker = msgpack.Unpacker(inp, raw=False, strict_map_key=False)
    try:
        first = next(unpacker)
    except StopIteration:
        return 0
    try:
        if first.get("t") != "load":
            raise ValueError(f"the first request must be load, not {first.get('t')!r}")
        worker.load(first)
    except Exception as e:
        replies.send("error", job=None, msg=one_line(e))
        return 1
    threading.Thread(target=worker.read_requests, args=(unpacker,), name="engine-requests",
                     daemon=True).start()
    worker.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
