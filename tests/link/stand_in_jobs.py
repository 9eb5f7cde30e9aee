"""A stand-in job source for link-layer tests: JOB_SUBMIT and JOB_CANCEL handlers and a runner
that "generates" deterministic stand-in tokens instantly, so the link, its persistence and the
reliable downlink can be exercised end to end without an engine. Test-only: the node runs the
executive (flight/executive), and none of this output is model output.

What it does as the node does (ICD sections 7, 8, 10):
- JOB_SUBMIT and JOB_CANCEL are the node's own handlers (flight.executive.job_service), with
  this as their queue and as their tokenizer (a token per word);
- a job streams JOB_TOKENS only if it was submitted with stream=true;
- its result is encode_result's (stand-in text, zeros for energy and cost), published for the
  reliable downlink, then JOB_FINISHED;
- JOB_CANCEL of a queued job publishes its (empty) result with stop reason cancelled; of an
  unknown job fails UNKNOWN_JOB, of an ended one JOB_ENDED.

Stand-in tokens: the prompt's words cycled up to max_tokens; each token's id is pseudo-random
per position, so a long result does not compress to nothing and still spans several segments, as
real ones do. `hold` keeps jobs queued (to cancel them); `submitted` holds each JOB_SUBMIT's
arguments as the node received them, defaults filled in.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
import zlib
from typing import Any

from flight.link.dictionary import load_dictionary
from flight.link.job_result import decode_result, encode_result
from flight.executive.job_service import JobService
from flight.link.service import CommandFailure, LinkService
from flight.store.job_store import Job, JobStore

log = logging.getLogger(__name__)
STOP = load_dictionary().enums["JOB_STOP"]
N_CTX = 8192  # above any prompt (at most 900 words) plus max_tokens (at most 4096): no overflow unless asked


def stand_in_completion(prompt: str, max_tokens: int) -> list[tuple[int, str]]:
    """(token id, token text) pairs of the stand-in output for a job."""
    words = prompt.split() or ["..."]
    return [(zlib.crc32(f"{i}:{word}".encode()), f" {word}")
            for i, word in ((i, words[i % len(words)]) for i in range(max_tokens))]


def stand_in_text(prompt: str, max_tokens: int) -> str:
    """The text of a job's stand-in result (and of its token stream)."""
    return "".join(text for _, text in stand_in_completion(prompt, max_tokens))


def result_text(data: bytes) -> str:
    """The text of archived result octets."""
    return decode_result(data)["text"]


def prompt_tokens(prompt: str) -> int:
    return len(prompt.split())


def stand_in_result(job_id: int, prompt: str, max_tokens: int, stop_reason: str = "limit",
                    token_ids: bool = False) -> bytes:
    """The result octets the stand-in publishes (cancelled: no tokens)."""
    tokens = [] if stop_reason == "cancelled" else stand_in_completion(prompt, max_tokens)
    return encode_result({
        "job_id": job_id, "text": "".join(t for _, t in tokens), "tokens": len(tokens),
        "token_ids": [i for i, _ in tokens] if token_ids else [],
        "stop_reason": stop_reason, "prompt_tokens": prompt_tokens(prompt), "compute_s": 0.0, "tokens_per_s": 0.0,
        "joules": 0.0, "joules_per_token": 0.0, "cost_usd": 0.0, "usd_per_token": 0.0, "preemptions": 0,
        "restarts": 0, "finished": time.time(),
    })


class StandInJobs:
    def __init__(self, service: LinkService, jobs: JobStore, tokens_per_chunk: int = 32, n_ctx: int = N_CTX):
        self._service = service
        self._store = jobs
        self._tokens_per_chunk = tokens_per_chunk
        # the node's own JOB_SUBMIT/JOB_CANCEL handlers, with this as their tokenizer and queue
        self.job_service = JobService(jobs, self, self, n_ctx, service.emit_event, time.time)
        self.hold = threading.Event()  # set: jobs stay queued until release()
        self.submitted: dict[int, dict[str, Any]] = {}
        self._ended: set[int] = set()
        self._lock = threading.Lock()  # one job runs or is cancelled at a time
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._completed = 0
        self._thread = threading.Thread(target=self._run, name="stand-in jobs", daemon=True)

    def start(self) -> None:
        for name, handler in self.job_service.handlers().items():
            self._service.register_handler(name, handler)
        self._service.add_channel_source(self._channels)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=2.0)

    def release(self) -> None:
        """Let held jobs run."""
        self.hold.clear()
        self._wake.set()

    @property
    def n_ctx(self) -> int:
        return self.job_service.n_ctx

    @n_ctx.setter
    def n_ctx(self, value: int) -> None:
        self.job_service.n_ctx = value

    def tokenize(self, text: str, chat: bool = False, system: str | None = None, timeout: float = 10.0) -> list[int]:
        """The JobService's tokenizer: one stand-in token per word."""
        return [0] * prompt_tokens(text)

    def submit(self, job: Job) -> None:
        """The JobService's queue: the job is stored; let the runner pick it up."""
        self.submitted[job.job_id] = dataclasses.asdict(job)
        self._wake.set()

    def cancel(self, job_id: int) -> int:
        """The JobService's queue: a queued job ends at once with an empty result, stop reason cancelled."""
        with self._lock:
            job = next((j for j in self._store.queued_jobs() if j.job_id == job_id), None)
            if job is None:
                if job_id in self._ended or self._service.results.result(job_id) is not None:
                    raise CommandFailure("JOB_ENDED", f"job {job_id} has ended already")
                raise CommandFailure("UNKNOWN_JOB", f"no job {job_id} is stored onboard")
            data = stand_in_result(job_id, job.prompt, job.max_tokens, "cancelled")
            self._service.publish_result(job_id, data, job.spi)
            self._ended.add(job_id)
        self._service.emit_event("JOB_CANCELLED", job_id=job_id, tokens_done=0)
        self._service.emit_event("JOB_FINISHED", job_id=job_id, stop_reason=STOP.values["cancelled"], tokens=0,
                                 joules=0.0, result_octets=len(data))
        return 0

    def _channels(self) -> dict[str, Any]:
        return {"JOB_QUEUE_DEPTH": self._store.queue_depth(), "JOB_COMPLETED": self._completed}

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self.hold.is_set():
                for job in self._store.queued_jobs():  # after a restart, this resumes unfinished jobs
                    if self._stop.is_set() or self.hold.is_set():
                        break
                    self._run_job(job)
            self._wake.wait()
            self._wake.clear()

    def _run_job(self, job: Job) -> None:
        with self._lock:
            if job.job_id in self._ended:
                return
            try:
                tokens = stand_in_completion(job.prompt, job.max_tokens)
                if job.stream:
                    for first in range(0, len(tokens), self._tokens_per_chunk):
                        self._service.send_tokens(job.job_id, first, tokens[first:first + self._tokens_per_chunk])
                data = stand_in_result(job.job_id, job.prompt, job.max_tokens, token_ids=job.token_ids)
                self._service.publish_result(job.job_id, data, job.spi)
            except Exception as exc:  # a failed job is reported and skipped, never retried forever
                log.exception("job %d failed", job.job_id)
                self._store.fail_job(job.job_id)
                self._ended.add(job.job_id)
                self._service.emit_event("JOB_FAILED", job_id=job.job_id, detail=f"{type(exc).__name__}: {exc}"[:200])
                return
            self._ended.add(job.job_id)
        self._completed += 1
        self._service.emit_event("JOB_FINISHED", job_id=job.job_id, stop_reason=STOP.values["limit"],
                                 tokens=len(tokens), joules=0.0, result_octets=len(data))
