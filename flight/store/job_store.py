"""Onboard jobs: the queue, in the order they arrived, with each job's state and progress.

A job is stored (fsync) before its JOB_SUBMIT completes, so an accepted job survives any crash;
resubmitting the very same job is idempotent. The result store marks a job done in the same
transaction that stores its result.

Progress is what exact resume needs: the tokens generated so far and the sampler's RNG state
after the last of them (flight/engine: Engine.generate(resume_tokens=..., rng_state=...)). The
executive saves it every few tokens and at every preemption; tokens are stored as little-endian
u32, the state as 8 big-endian octets (SQLite integers are signed).
"""
from __future__ import annotations

import struct
import time
from dataclasses import dataclass

from flight.store.onboard_db import OnboardDb


class DuplicateJobError(ValueError):
    """A different job with the same id is already stored."""


@dataclass(frozen=True)
class Job:
    job_id: int
    prompt: str
    max_tokens: int
    spi: int  # key of the command that submitted it; its result is authenticated with that key


class JobStore:
    def __init__(self, db: OnboardDb):
        self._db = db

    def add_job(self, job: Job) -> bool:
        """Store a queued job; False if this very job is already stored (idempotent resubmission)."""
        with self._db.transaction() as conn:
            row = conn.execute("SELECT prompt, max_tokens FROM jobs WHERE job_id = ?", (job.job_id,)).fetchone()
            if row is not None:
                if tuple(row) != (job.prompt, job.max_tokens):
                    raise DuplicateJobError(f"job {job.job_id} already exists with other arguments")
                return False
            conn.execute(
                "INSERT INTO jobs (job_id, prompt, max_tokens, spi, state, submitted) VALUES (?, ?, ?, ?, 'queued', ?)",
                (job.job_id, job.prompt, job.max_tokens, job.spi, time.time()),
            )
            return True

    def queued_jobs(self) -> list[Job]:
        rows = self._db.query(
            "SELECT job_id, prompt, max_tokens, spi FROM jobs WHERE state = 'queued' ORDER BY submitted, job_id")
        return [Job(*row) for row in rows]

    def queue_depth(self) -> int:
        return self._db.query("SELECT count(*) FROM jobs WHERE state = 'queued'")[0][0]

    def fail_job(self, job_id: int) -> None:
        with self._db.transaction() as conn:
            conn.execute("UPDATE jobs SET state = 'failed' WHERE job_id = ? AND state = 'queued'", (job_id,))

    def save_progress(self, job_id: int, tokens: list[int], rng_state: int) -> None:
        """Commit (fsync) a job's tokens so far and the RNG state after the last of them."""
        if not 0 <= rng_state < 1 << 64:
            raise ValueError(f"RNG state must be a 64-bit unsigned integer, got {rng_state!r}")
        packed = struct.pack(f"<{len(tokens)}I", *tokens)
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT INTO job_progress (job_id, tokens, rng_state, saved) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(job_id) DO UPDATE SET tokens = excluded.tokens, rng_state = excluded.rng_state, "
                "saved = excluded.saved",
                (job_id, packed, rng_state.to_bytes(8, "big"), time.time()),
            )

    def progress(self, job_id: int) -> tuple[list[int], int] | None:
        """(tokens so far, RNG state after them) as last saved, or None."""
        rows = self._db.query("SELECT tokens, rng_state FROM job_progress WHERE job_id = ?", (job_id,))
        if not rows:
            return None
        tokens, state = rows[0]
        return list(struct.unpack(f"<{len(tokens) // 4}I", tokens)), int.from_bytes(state, "big")
