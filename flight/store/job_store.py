"""Onboard jobs: the queue, in the order they arrived, with each job's state and progress.

A job is stored (fsync) before its JOB_SUBMIT completes, so an accepted job survives any crash;
resubmitting the very same job is idempotent. The result store marks a job done in the same
transaction that stores its result (a cancelled job too: its result holds what was made).

Progress is what exact resume needs: the tokens generated so far and the sampler's RNG state
after the last of them (flight/engine: Engine.generate(resume_tokens=..., rng_state=...)), with
the job's account so far (energy, compute time, preemptions, restarts) so that its result
counts what every run of it cost. The executive saves it every few tokens and at every
preemption; tokens are stored as little-endian u32, the state as 8 big-endian octets (SQLite
integers are signed).
"""
from __future__ import annotations

import struct
import time
from dataclasses import dataclass, field

from flight.store.onboard_db import OnboardDb


class DuplicateJobError(ValueError):
    """A different job with the same id is already stored."""


@dataclass(frozen=True)
class Job:
    job_id: int
    prompt: str
    max_tokens: int
    spi: int  # key of the command that submitted it; its result is authenticated with that key
    chat: bool = False  # the prompt is a user turn for the model's chat template
    stream: bool = False  # stream tokens live as JOB_TOKENS
    priority: int = 0
    deadline: float = 0.0  # onboard time it is due, s; 0 = none
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0
    token_ids: bool = False  # the result carries the generated token ids
    prompt_ids: tuple[int, ...] = ()  # the prompt as run (chat template applied), tokenized at submission
    submitted: float = field(default=0.0, compare=False)  # onboard time it was stored, s

    def arguments(self) -> tuple:
        """What makes two submissions the same job (the idempotency check)."""
        return (self.prompt, self.max_tokens, self.chat, self.stream, self.priority, self.deadline,
                self.temperature, self.top_k, self.top_p, self.seed, self.token_ids)


@dataclass(frozen=True)
class Progress:
    tokens: list[int]
    rng_state: int
    joules: float = 0.0
    compute_s: float = 0.0
    preemptions: int = 0
    restarts: int = 0


_COLUMNS = ("job_id, prompt, max_tokens, spi, chat, stream, priority, deadline, temperature, top_k, top_p, seed, "
            "token_ids, prompt_ids, submitted")


def _pack_ids(ids: tuple[int, ...] | list[int]) -> bytes:
    return struct.pack(f"<{len(ids)}I", *ids)


def _unpack_ids(blob: bytes) -> list[int]:
    return list(struct.unpack(f"<{len(blob) // 4}I", blob))


def _job(row: tuple) -> Job:
    (job_id, prompt, max_tokens, spi, chat, stream, priority, deadline, temperature, top_k, top_p, seed, token_ids,
     ids, submitted) = row
    return Job(job_id, prompt, max_tokens, spi, bool(chat), bool(stream), priority, deadline, temperature, top_k,
               top_p, seed, bool(token_ids), tuple(_unpack_ids(ids)), submitted)


class JobStore:
    def __init__(self, db: OnboardDb):
        self._db = db

    def add_job(self, job: Job) -> bool:
        """Store a queued job; False if this very job is already stored (idempotent resubmission)."""
        with self._db.transaction() as conn:
            row = conn.execute(f"SELECT {_COLUMNS} FROM jobs WHERE job_id = ?", (job.job_id,)).fetchone()
            if row is not None:
                if _job(tuple(row)).arguments() != job.arguments():
                    raise DuplicateJobError(f"job {job.job_id} already exists with other arguments")
                return False
            conn.execute(
                f"INSERT INTO jobs ({_COLUMNS}, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued')",
                (job.job_id, job.prompt, job.max_tokens, job.spi, int(job.chat), int(job.stream), job.priority,
                 job.deadline, job.temperature, job.top_k, job.top_p, job.seed, int(job.token_ids),
                 _pack_ids(job.prompt_ids),
                 job.submitted or time.time()),
            )
            return True

    def queued_jobs(self) -> list[Job]:
        rows = self._db.query(f"SELECT {_COLUMNS} FROM jobs WHERE state = 'queued' ORDER BY submitted, job_id")
        return [_job(tuple(row)) for row in rows]

    def job(self, job_id: int) -> tuple[Job, str] | None:
        """The job and its state ('queued', 'done' or 'failed'), or None."""
        rows = self._db.query(f"SELECT {_COLUMNS}, state FROM jobs WHERE job_id = ?", (job_id,))
        return (_job(tuple(rows[0][:-1])), rows[0][-1]) if rows else None

    def queue_depth(self) -> int:
        return self._db.query("SELECT count(*) FROM jobs WHERE state = 'queued'")[0][0]

    def fail_job(self, job_id: int) -> None:
        with self._db.transaction() as conn:
            conn.execute("UPDATE jobs SET state = 'failed' WHERE job_id = ? AND state = 'queued'", (job_id,))

    def save_progress(self, job_id: int, tokens: list[int], rng_state: int, *, joules: float = 0.0,
                      compute_s: float = 0.0, preemptions: int = 0, restarts: int = 0) -> None:
        """Commit (fsync) a job's tokens so far, the RNG state after the last of them, and its account."""
        if not 0 <= rng_state < 1 << 64:
            raise ValueError(f"RNG state must be a 64-bit unsigned integer, got {rng_state!r}")
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT INTO job_progress (job_id, tokens, rng_state, saved, joules, compute_s, preemptions, restarts) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(job_id) DO UPDATE SET tokens = excluded.tokens, "
                "rng_state = excluded.rng_state, saved = excluded.saved, joules = excluded.joules, "
                "compute_s = excluded.compute_s, preemptions = excluded.preemptions, restarts = excluded.restarts",
                (job_id, _pack_ids(tokens), rng_state.to_bytes(8, "big"), time.time(), joules, compute_s,
                 preemptions, restarts),
            )

    def progress(self, job_id: int) -> Progress | None:
        """The job's progress as last saved, or None."""
        rows = self._db.query("SELECT tokens, rng_state, joules, compute_s, preemptions, restarts FROM job_progress "
                              "WHERE job_id = ?", (job_id,))
        if not rows:
            return None
        tokens, state, joules, compute_s, preemptions, restarts = rows[0]
        return Progress(_unpack_ids(tokens), int.from_bytes(state, "big"), joules, compute_s, preemptions, restarts)
