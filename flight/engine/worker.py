"""The engine's child process: `python -m flight.engine.worker`, started and watched by
flight.executive.engine_supervisor.EngineSupervisor.

Why a child process. The engine is C code running a model from a file uplinked from the
ground; a fault in it (a bad memory access, a deadlocked thread barrier, an allocation that
never returns) would otherwise take the executive, the link and the stores down with it. In its
own process it can only take itself down: the supervisor sees it die or fall silent, kills it
with SIGKILL (which works whatever state it is in, stopped included), starts a new one and
resumes its jobs exactly (see below). A subprocess started with `sys.executable -m`, not a fork,
so the child holds none of the parent's threads, locks or open files.

Protocol. Both directions are a stream of msgpack maps (self-delimiting, so no length prefix
is needed: msgpack.Unpacker reads them off the pipe as they complete), each with its type in
"t". The child's stdin carries requests, its stdout replies; anything else the process prints
goes to stderr (fd 1 is moved away from the protocol at start-up, so a stray print from a
library cannot corrupt the stream).

  requests                                            replies
  load {path, threads, n_ctx, n_batch, simd,     ->   loaded {pid, n_ctx, n_batch, threads,
        manifest, scrub_period_s}                       simd, vocab, eos_ids, resident_bytes,
                                                        scrub: {blocks, block_octets, size,
                                                        direct_io, period_s} | None}
                                                      | error {job: None, msg}, then exit 1
  generate {job, prompt | prompt_ids, max_tokens, ->  token {job, i, tok, piece, rng} per token
            temperature, top_k, top_p, seed,          done {job, tokens, text, stop, rng,
            resume_tokens, rng_state}                       n_resumed, stats}
                                                      | error {job, msg}
  stop {job}     the job leaves the batch at the next step boundary (or is dropped from the
                 queue): its done goes out with stop "request" and its tokens and rng so far
  rate {tokens_per_s}  cap the batch's aggregate decode rate (None or 0: uncapped)
  tokenize {req, text, chat, system}         ->   tokenized {req, ids} | error {req, msg}
  ping {}        -> pong {}
  scrub_now {req}                            ->   scrubbed {req, blocks, bad, seconds}
  repair {}      rewrite every block the scrubber reported from flash: a repaired or a
                 flash_corrupt message per block (see below)
  inject_seu {req, offset, bit}              ->   injected {req, offset, bit, block}
                 (offset, bit None: random)       | error {req, msg}
  exit {}        stop every job, batched or queued (each one's done still goes out), exit 0
  (any time)     heartbeat {busy, jobs, n}: every HEARTBEAT_S from its own thread
  (any time)     upset {block, offset}, repaired {block, offset, pending_s},
                 flash_corrupt {block, offset}, scrub_pass {passes, seconds, cpu_s, blocks}:
                 from the scrubber (flight/engine/scrubber.py)

"load" must come first and comes once. Every reply about a job names it; the tokens of the
jobs in the batch arrive interleaved. stop, rate, tokenize and ping are answered by the thread
that reads the requests, at once: they never wait for a step, a prefill or the pacing.

Batch. The main thread runs one BatchDecoder over up to n_batch jobs. A generate request joins
the batch at the next step boundary if a slot is free, else waits in the child's queue, in
arrival order. Each step is one forward pass over every job in the batch and gives each its
next token (token reply: i is the token's index in the job's whole output, resumed tokens
counted; piece the text it completed, from a StreamDecoder of the job's own). A job that ends
(eos, limit, context, or stop) sends done and frees its slot for the next queued one. A job
joins with a prefill of its prompt (and resumed tokens), inside BatchDecoder.join: the batch
waits for it, the request thread does not. Stats in done: n_prompt, queue_s (in this child's
queue), prefill_s, first_token_s (from its join), decode_s (after the prefill), decode_tok_s
(its own tokens/s while batched: the batch's decode is shared), n_generated.

Rate. A `rate` caps the tokens/s of all the batch's jobs together (a power level's budget made
physical): after each step that produced n tokens the loop waits until start + tokens so far /
rate, on a clock that restarts when the batch empties, when the rate changes, and after it fell
more than PACE_SLACK_S behind (a long prefill), so idle time earns no burst afterwards.

Resume. Each token reply carries the sampler's RNG state after that token, so the parent holds
a checkpoint at every token it has received: tokens so far + that state. A respawned child
given them as resume_tokens/rng_state continues exactly where the dead one was
(BatchDecoder.join's exact-resume API; the other jobs of a batch do not change a job's bits),
and its token indices continue from len(resume_tokens). A job that had already finished when
its child died (all its tokens received, done lost) is answered without running the model.

Scrubbing. With a manifest (the model's `<model>.manifest.json`), load first checks every block
of the model file against it, before anything parses the file, and refuses a model that
disagrees (one line: corruption already on flash), then a background thread re-checks every block each scrub_period_s and
reports the blocks that went bad; `repair` (the executive's FDIR action) rewrites them from
flash. Without a manifest (standalone tests of the engine) nothing is checked.

Heartbeats come from a Python thread; the engine releases the GIL in its forward passes, so
they keep coming during a long prefill or decode. They prove the process is alive and
scheduled, not that the engine progresses (a C loop stuck with the GIL released would keep
them going): the supervisor's stall check watches the token stream for that. They carry the
ids of the jobs in the batch (jobs, the one joining included), whether any job is in the child
(busy) and the tokens this child has generated (n), for telemetry.

Threads. The engine's threads default to the cores we may run on less one, floor 1: the
engine's workers meet at spin barriers after every matmul, and a spinning barrier with one of
its threads preempted by another busy process (the link, the executive's loop) waits a whole
scheduler slice for it, many times per token, so using every core makes both sides slow (see
default_engine_threads).

The child exits when its stdin closes: an orphaned engine must not keep the model's memory. A
failed batch step (an engine error mid-forward leaves the batch in no known state) exits with
status 3: the supervisor restarts the child and resumes every job from its checkpoint.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, BinaryIO

import msgpack

from flight.engine import Engine, EngineError
from flight.engine.engine import BatchDecoder
from flight.engine.manifest import Manifest, ManifestError, disagreement, load_manifest, verify
from flight.engine.scrubber import Scrubber
from flight.engine.tokenizer import StreamDecoder

HEARTBEAT_S = 0.2
PACE_SLACK_S = 0.25  # behind the rate's schedule by more than this: restart the clock


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
    thread's tokens, the request thread's answers and the heartbeat thread interleave)."""

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


@dataclass
class _Job:
    """A job in the batch."""

    job: int
    seq: int  # its BatchDecoder sequence id
    stream: StreamDecoder  # primed with the resumed tokens
    n_resumed: int
    queue_s: float
    prefill_s: float
    joined_at: float  # when its prefill ended
    join_started: float
    first_token_s: float | None = None


class _Pace:
    """The rate cap's virtual clock: steps wait until t0 + tokens since t0 / rate."""

    def __init__(self) -> None:
        self.rate: float | None = None
        self.t0: float | None = None  # None: starts at the next step
        self.n = 0

    def set_rate(self, rate: float | None) -> None:
        self.rate = rate if rate and rate > 0 else None
        self.restart()

    def restart(self) -> None:
        self.t0, self.n = None, 0

    def stepping(self, now: float) -> None:
        if self.t0 is None:
            self.t0, self.n = now, 0

    def stepped(self, n_tokens: int, now: float) -> None:
        if self.rate is None or self.t0 is None:
            return
        self.n += n_tokens
        if now - self.due() > PACE_SLACK_S:  # far behind (a prefill stalled the batch): no burst
            self.t0, self.n = now, 0

    def due(self) -> float:
        """When the next step may start (0: now)."""
        if self.rate is None or self.t0 is None:
            return 0.0
        return self.t0 + self.n / self.rate


class Worker:
    """One child's state: the engine, the queue of generate requests, the batch."""

    def __init__(self, replies: _Replies) -> None:
        self.replies = replies
        self.engine: Engine | None = None
        self.scrubber: Scrubber | None = None
        self.n_batch = 1
        # guards everything below; the main thread waits on it for work, stops and pacing
        self.cond = threading.Condition()
        self.queue: deque[tuple[dict, float]] = deque()  # (generate request, arrival time)
        self.batch: dict[int, _Job] = {}  # job id -> the job, in the batch
        self.joining: int | None = None  # the job whose prefill runs now
        self.stopped: set[int] = set()  # jobs in the batch (or joining) asked to stop
        self.exiting = False
        self.rate: float | None = None
        self.rate_changed = False
        self.n_generated = 0  # tokens this child generated (heartbeat telemetry)

    # -- the request thread ---------------------------------------------------------------------

    def read_requests(self, unpacker: msgpack.Unpacker) -> None:
        """Route requests as they arrive: none of them waits for a step or a prefill."""
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
                with self.cond:
                    self.queue.append((msg, time.monotonic()))
                    self.cond.notify()
            elif t == "stop":
                self._stop(msg.get("job"))
            elif t == "rate":
                rate = msg.get("tokens_per_s")
                with self.cond:
                    self.rate = float(rate) if rate else None
                    self.rate_changed = True
                    self.cond.notify()
            elif t == "tokenize":
                self._tokenize(msg)
            elif t == "ping":
                self.replies.send("pong")
            elif t in ("scrub_now", "repair", "inject_seu"):
                self._scrub_request(t, msg)
            elif t == "exit":
                with self.cond:
                    self.exiting = True
                    self.cond.notify()
                # block here, not at EOF below: the main thread ends the jobs and exits
                threading.Event().wait()
            else:
                self.replies.send("error", job=msg.get("job"), msg=f"unknown request type {t!r}")

    def _stop(self, job: Any) -> None:
        dropped = None
        with self.cond:
            for entry in self.queue:
                if entry[0].get("job") == job:
                    self.queue.remove(entry)
                    dropped = entry[0]
                    break
            else:
                if job in self.batch or job == self.joining:
                    self.stopped.add(job)
                    self.cond.notify()
        if dropped is not None:
            self._done_unrun(dropped, "request")

    def _tokenize(self, msg: dict) -> None:
        """Answered here: the tokenizer is Python (thread-safe) and forward passes release the
        GIL, so this does not wait for the batch."""
        req = msg.get("req")
        try:
            text = msg.get("text")
            if not isinstance(text, str):
                raise ValueError("tokenize needs text as a string")
            if msg.get("chat"):
                text = self.engine.chat_prompt(text, msg.get("system"))
            ids = self.engine.tokenize(text)
        except Exception as e:
            self.replies.send("error", req=req, msg=one_line(e))
            return
        self.replies.send("tokenized", req=req, ids=ids)

    def _scrub_request(self, t: str, msg: dict) -> None:
        """Answered here, like tokenize: the scrubber's C calls release the GIL or are short."""
        req = msg.get("req")
        try:
            if self.scrubber is None:
                raise EngineError("this engine has no manifest, so no scrubber")
            if t == "repair":
                self.scrubber.repair()
            elif t == "scrub_now":
                self.replies.send("scrubbed", req=req, **self.scrubber.scrub_now())
            else:
                offset, bit = msg.get("offset"), msg.get("bit")
                self.replies.send("injected", req=req, **self.scrubber.inject(
                    None if offset is None else int(offset), None if bit is None else int(bit)))
        except Exception as e:
            self.replies.send("error", req=req, msg=one_line(e))

    def _done_unrun(self, msg: dict, stop: str) -> None:
        """The done of a job that ends without joining the batch: its checkpoint as given."""
        resumed = [int(i) for i in msg.get("resume_tokens") or ()]
        self.replies.send("done", job=int(msg["job"]), tokens=resumed,
                          text=self.engine.detokenize(resumed), stop=stop,
                          rng=msg.get("rng_state"), n_resumed=len(resumed), stats={})

    # -- the heartbeat thread -------------------------------------------------------------------

    def heartbeat(self) -> None:
        while True:
            time.sleep(HEARTBEAT_S)
            with self.cond:
                jobs = list(self.batch) + ([self.joining] if self.joining is not None else [])
                busy = bool(jobs or self.queue)
                n = self.n_generated
            self.replies.send("heartbeat", busy=busy, jobs=jobs, n=n)

    # -- the main thread ------------------------------------------------------------------------

    def load(self, msg: dict) -> None:
        threads = msg.get("threads") or default_engine_threads()
        manifest = self._checked_manifest(msg["path"], msg["manifest"]) if msg.get("manifest") else None
        e = Engine.load(msg["path"], threads=threads, n_ctx=int(msg.get("n_ctx", 2048)),
                        n_batch=int(msg.get("n_batch") or 1), simd=msg.get("simd", "auto"))
        self.engine = e
        self.n_batch = e.n_batch
        scrub = None
        if manifest is not None:
            self.scrubber = Scrubber(e.scrub(manifest.crc32c, manifest.block_octets), manifest,
                                     float(msg.get("scrub_period_s") or 60.0), self.replies.send)
            scrub = dict(blocks=manifest.n_blocks, block_octets=manifest.block_octets, size=manifest.size,
                         direct_io=self.scrubber.direct_io, period_s=self.scrubber.period_s)
        self.replies.send("loaded", pid=os.getpid(), n_ctx=e.n_ctx, n_batch=e.n_batch,
                          threads=e.threads, simd=e.simd, vocab=e.config["vocab"],
                          eos_ids=list(e.eos_ids), resident_bytes=e.resident_bytes, scrub=scrub)
        if self.scrubber is not None:
            self.scrubber.start()

    @staticmethod
    def _checked_manifest(model: str, manifest_file: str) -> Manifest:
        """The load-time gate, before anything parses the file: ValueError (one line) if the
        manifest is bad or not this model's, or the model's blocks disagree with it."""
        try:
            manifest = load_manifest(manifest_file)
            bad = verify(model, manifest)
        except ManifestError as exc:
            raise ValueError(str(exc)) from None
        if bad:
            raise ValueError(disagreement(os.path.basename(model), manifest, bad))
        return manifest

    def serve(self) -> None:
        """The batch loop: at each step boundary, let stopped jobs leave, let one queued job
        join if a slot is free, else (paced) step."""
        b = self.engine.batch()
        pace = _Pace()
        while True:
            leaving: list[_Job] = []
            joining: tuple[dict, float] | None = None
            dropped: list[dict] = []
            with self.cond:
                while True:
                    exiting = self.exiting
                    if self.rate_changed:
                        self.rate_changed = False
                        pace.set_rate(self.rate)
                    if exiting:
                        leaving = list(self.batch.values())
                        dropped = [m for m, _ in self.queue]
                        self.queue.clear()
                        break
                    leaving = [j for j in self.batch.values() if j.job in self.stopped]
                    self.stopped.clear()  # the rest named jobs that ended meanwhile
                    if len(self.batch) - len(leaving) < self.n_batch and self.queue:
                        joining = self.queue.popleft()
                        self.joining = int(joining[0]["job"])
                    if leaving or joining:
                        break
                    if not self.batch:
                        pace.restart()
                        self.cond.wait()
                        continue
                    wait = pace.due() - time.monotonic()
                    if wait > 0:
                        self.cond.wait(wait)
                        continue
                    break
            for j in leaving:
                self._leave(b, j)
            if exiting:
                for msg in dropped:
                    self._done_unrun(msg, "request")
                return
            if joining is not None:
                self._join(b, *joining)
            elif not leaving:
                self._step(b, pace)

    def _leave(self, b: BatchDecoder, j: _Job) -> None:
        b.leave(j.seq)
        self._end(b, j, "request")

    def _join(self, b: BatchDecoder, msg: dict, queued_at: float) -> None:
        e = self.engine
        job = int(msg["job"])
        t0 = time.monotonic()
        try:
            prompt = msg["prompt_ids"] if msg.get("prompt_ids") is not None else msg["prompt"]
            ids = e.tokenize(prompt) if isinstance(prompt, str) else [int(i) for i in prompt]
            resumed = [int(i) for i in msg.get("resume_tokens") or ()]
            max_tokens = int(msg.get("max_tokens", 128))
            # a job whose child died after its last token but before its done: finished already
            finished = ("limit" if resumed and len(resumed) >= max_tokens
                        else "context" if resumed and len(ids) + len(resumed) > e.n_ctx
                        else None)
            if finished is None:
                seq = b.join(ids, max_tokens=max_tokens,
                             temperature=float(msg.get("temperature", 0.0)),
                             top_k=int(msg.get("top_k", 0)), top_p=float(msg.get("top_p", 1.0)),
                             seed=int(msg.get("seed", 0)), resume_tokens=resumed,
                             rng_state=msg.get("rng_state"))
        except Exception as ex:  # EngineError and bad requests alike: the job fails, we go on
            with self.cond:
                self.joining = None
            self.replies.send("error", job=job, msg=one_line(ex))
            return
        if finished is not None:
            with self.cond:
                self.joining = None
            self._done_unrun(msg, finished)
            return
        now = time.monotonic()
        stream = StreamDecoder(e.tokenizer)
        for tok in resumed:  # a character split across the interruption comes out whole
            stream.push(tok)
        with self.cond:
            self.joining = None
            self.batch[job] = _Job(job, seq, stream, len(resumed), queue_s=t0 - queued_at,
                                   prefill_s=now - t0, joined_at=now, join_started=t0)

    def _step(self, b: BatchDecoder, pace: _Pace) -> None:
        by_seq = {j.seq: j for j in self.batch.values()}  # the main thread alone changes batch
        pace.stepping(time.monotonic())
        try:
            events = b.step()
        except Exception as ex:  # the batch is in no known state: let the supervisor resume it
            print(f"engine worker: batch step failed: {one_line(ex)}", file=sys.stderr)
            sys.stderr.flush()
            os._exit(3)
        now = time.monotonic()
        n = 0
        for ev in events:
            j = by_seq[ev.seq_id]
            seq = b.sequences[ev.seq_id]
            if ev.stop_reason != "eos":  # an eos ends the job without being one of its tokens
                n += 1
                if j.first_token_s is None:
                    j.first_token_s = now - j.join_started
                self.replies.send("token", job=j.job, i=len(seq.tokens) - 1, tok=ev.token,
                                  piece=j.stream.push(ev.token), rng=ev.rng_state)
            if ev.stop_reason != "none":
                self._end(b, j, ev.stop_reason)
        with self.cond:
            self.n_generated += n
        pace.stepped(len(events), now)

    def _end(self, b: BatchDecoder, j: _Job, stop: str) -> None:
        seq = b.sequences.pop(j.seq)
        decode_s = time.monotonic() - j.joined_at
        n_new = len(seq.tokens) - j.n_resumed
        steps = max(n_new - 1, 0)  # the first new token came from the prefill's logits
        stats = dict(n_prompt=len(seq.prompt), queue_s=j.queue_s, prefill_s=j.prefill_s,
                     first_token_s=j.first_token_s, decode_s=decode_s,
                     decode_tok_s=steps / decode_s if decode_s > 0 and steps else 0.0,
                     n_generated=n_new)
        with self.cond:
            self.batch.pop(j.job, None)
        self.replies.send("done", job=j.job, tokens=seq.tokens,
                          text=self.engine.detokenize(seq.tokens), stop=stop, rng=seq.rng_state,
                          n_resumed=j.n_resumed, stats=stats)


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
