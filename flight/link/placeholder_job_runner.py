"""PLACEHOLDER for the executive's job scheduler and the LLM engine.

Until the executive issue wires the engine in, this runs each stored job by producing
deterministic stand-in text (the prompt's words, cycled up to max_tokens), streams it as
JOB_TOKENS and publishes it as the job's result. It exists so the link, its persistence and the
reliable downlink can be exercised end to end; none of its output is model output.
"""
from __future__ import annotations

import logging
import sqlite3
import threading
import zlib
from typing import Any

from flight.link.service import CommandFailure, CommandOrigin, LinkService
from flight.store.job_store import DuplicateJobError, Job, JobStore

log = logging.getLogger(__name__)


def placeholder_completion(prompt: str, max_tokens: int) -> list[tuple[int, str]]:
    """(token id, token text) pairs of the stand-in output for a job."""
    words = prompt.split() or ["..."]
    return [(zlib.crc32(word.encode()) & 0xFFFF, f" {word}") for word in (words[i % len(words)] for i in range(max_tokens))]


class PlaceholderJobRunner:
    def __init__(self, service: LinkService, jobs: JobStore, tokens_per_chunk: int = 32):
        self._service = service
        self._store = jobs
        self._tokens_per_chunk = tokens_per_chunk
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._completed = 0
        self._thread = threading.Thread(target=self._run, name="placeholder jobs", daemon=True)

    def start(self) -> None:
        self._service.register_handler("JOB_SUBMIT", self.submit)
        self._service.add_channel_source(self._channels)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=2.0)

    def submit(self, args: dict[str, Any], origin: CommandOrigin) -> dict[str, Any]:
        """JOB_SUBMIT handler: persist the job, then let the runner pick it up."""
        job = Job(args["job_id"], args["prompt"], args["max_tokens"], origin.spi)
        try:
            new = self._store.add_job(job)
        except DuplicateJobError as exc:
            raise CommandFailure("DUPLICATE_JOB", str(exc)) from None
        except sqlite3.Error as exc:
            raise CommandFailure("STORE_ERROR", f"job not stored: {exc}") from None
        if new:
            self._service.emit_event("JOB_QUEUED", job_id=job.job_id, prompt_tokens=0, max_tokens=job.max_tokens,
                                     priority=0)
            self._wake.set()
        return {"job_id": job.job_id, "new": new}

    def _channels(self) -> dict[str, Any]:
        return {"JOB_QUEUE_DEPTH": self._store.queue_depth(), "JOB_COMPLETED": self._completed}

    def _run(self) -> None:
        while not self._stop.is_set():
            for job in self._store.queued_jobs():  # after a restart, this resumes unfinished jobs
                if self._stop.is_set():
                    return
                self._run_job(job)
            self._wake.wait()
            self._wake.clear()

    def _run_job(self, job: Job) -> None:
        try:
            tokens = placeholder_completion(job.prompt, job.max_tokens)
            for first in range(0, len(tokens), self._tokens_per_chunk):
                chunk = tokens[first:first + self._tokens_per_chunk]
                self._service.send_tokens(job.job_id, first, chunk)
            result = "".join(s for _, s in tokens).encode()
            self._service.publish_result(job.job_id, result, job.spi)
        except Exception as exc:  # a failed job is reported and skipped, never retried forever
            log.exception("job %d failed", job.job_id)
            self._store.fail_job(job.job_id)
            self._service.emit_event("JOB_FAILED", job_id=job.job_id, detail=f"{type(exc).__name__}: {exc}"[:200])
            return
        self._completed += 1
        self._service.emit_event("JOB_FINISHED", job_id=job.job_id, stop_reason=1, tokens=len(tokens), joules=0.0,
                                 result_octets=len(result))
