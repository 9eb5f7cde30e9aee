"""The job service: JOB_SUBMIT and JOB_CANCEL, as the link's command thread runs them.

JOB_SUBMIT checks what it can before it stores anything: the prompt is tokenized as it will run
(the chat template applied for a `chat` job) by the engine process, and a prompt whose tokens
plus max_tokens exceed the context is refused with CONTEXT_OVERFLOW, so a job that could never
finish never occupies the queue. The job is then stored (fsync) before the command completes,
so the completion tells the ground the job survives any crash, and handed to the executive.
"""
from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any, Protocol

from flight.link.service import CommandFailure, CommandOrigin
from flight.store.job_store import DuplicateJobError, Job, JobStore


class Tokenizer(Protocol):
    def tokenize(self, text: str, chat: bool = False, system: str | None = None, timeout: float = 10.0) -> list[int]:
        """The prompt's token ids as the engine will run it; EngineError if the engine cannot say."""


class JobQueue(Protocol):
    def submit(self, job: Job) -> None: ...

    def cancel(self, job_id: int) -> int: ...


class JobService:
    def __init__(self, store: JobStore, queue: JobQueue, tokenizer: Tokenizer, n_ctx: int,
                 emit_event: Callable[..., object], clock: Callable[[], float]):
        self._store = store
        self._queue = queue
        self._tokenizer = tokenizer
        self.n_ctx = n_ctx
        self._emit = emit_event
        self._clock = clock

    def handlers(self) -> dict[str, Callable[[dict[str, Any], CommandOrigin], dict[str, Any] | None]]:
        return {"JOB_SUBMIT": self.submit, "JOB_CANCEL": self.cancel}

    def submit(self, args: dict[str, Any], origin: CommandOrigin) -> dict[str, Any]:
        try:
            ids = self._tokenizer.tokenize(args["prompt"], chat=args["chat"])
        except Exception as exc:  # EngineError, a timeout: the engine is restarting or down
            raise CommandFailure("ENGINE_UNAVAILABLE", f"prompt not checked: {exc}") from None
        if len(ids) + args["max_tokens"] > self.n_ctx:
            raise CommandFailure("CONTEXT_OVERFLOW", f"prompt of {len(ids)} tokens + max_tokens {args['max_tokens']} "
                                                     f"exceeds the context of {self.n_ctx} tokens")
        job = Job(args["job_id"], args["prompt"], args["max_tokens"], origin.spi, chat=args["chat"],
                  stream=args["stream"], priority=args["priority"], deadline=float(args["deadline"]),
                  temperature=float(args["temperature"]), top_k=args["top_k"], top_p=float(args["top_p"]),
                  seed=args["seed"], token_ids=args["token_ids"], prompt_ids=tuple(ids), submitted=self._clock())
        try:
            new = self._store.add_job(job)
        except DuplicateJobError as exc:
            raise CommandFailure("DUPLICATE_JOB", str(exc)) from None
        except sqlite3.Error as exc:
            raise CommandFailure("STORE_ERROR", f"job not stored: {exc}") from None
        if new:
            self._queue.submit(job)
            self._emit("JOB_QUEUED", job_id=job.job_id, prompt_tokens=len(ids), max_tokens=job.max_tokens,
                       priority=job.priority)
        return {"job_id": job.job_id, "new": new, "prompt_tokens": len(ids)}

    def cancel(self, args: dict[str, Any], origin: CommandOrigin) -> dict[str, Any]:
        done = self._queue.cancel(args["job_id"])
        return {"job_id": args["job_id"], "tokens_done": done}
