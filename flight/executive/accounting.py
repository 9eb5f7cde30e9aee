"""The executive's accountant: the energy, compute time and cost of every job's tokens.

Energy is measured, not modelled: each tick the executive reports the time elapsed and the
compute power measured over it (charge), and the engine's token callback reports the tokens
each job made (tokens). The tick's energy (dt x watts) and compute time (dt) are split between
the jobs that made tokens since the last charge, in proportion to their tokens: a batch step
decodes one token per row, and every row costs the same.

- Prefill makes no tokens. A tick that draws power but makes none carries its energy and time
  forward to the next tick that has tokens, so a prompt's prefill is paid by the jobs decoding
  after it (in a batch, shared with the others; a good-enough approximation at 10 Hz).
- A tick that draws nothing and makes nothing is idle: whatever was carried forward is dropped
  into idle_joules / idle_s (an aborted prefill, or power measured after the engine stopped).
- Energy is conserved: the joules charged to jobs, plus idle, plus what is being carried, equal
  the integral of the measured power over every charge.

Cost is the cost model's dollars per compute second times the compute time charged
(flight.executive.cost_model). Totals cover this start only (the ACCT_* channels say "since
this start"); a job resumed after a restart continues its own account through restore(), with
what the executive persisted alongside its progress.

Thread safety: one lock guards every method, so the 10 Hz main loop (charge, job, totals) and
the engine's token callback thread (tokens) may call concurrently. Tokens that arrive while a
charge runs are charged with the next one. The executive should charge the tick before it reads
a finished job's account, so the job's last tokens carry their energy into the result.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass

from flight.executive.cost_model import CostModel


@dataclass(frozen=True, slots=True)
class JobAccount:
    """One job's account; the result's accounting fields (see result_fields)."""

    job_id: int
    tokens: int  # tokens charged (generated tokens, the prompt not counted)
    joules: float  # compute energy charged, J
    compute_s: float  # compute time charged, s
    cost_usd: float  # compute_s at the cost model's $ per compute second
    joules_per_token: float  # 0.0 with no tokens
    usd_per_token: float  # 0.0 with no tokens
    tokens_per_s: float  # tokens / compute_s; 0.0 with no compute time

    def result_fields(self) -> dict[str, float]:
        """The accounting fields of the job result (dictionary "result" section), by name."""
        return {"compute_s": self.compute_s, "tokens_per_s": self.tokens_per_s, "joules": self.joules,
                "joules_per_token": self.joules_per_token, "cost_usd": self.cost_usd,
                "usd_per_token": self.usd_per_token}


class _Account:
    __slots__ = ("tokens", "joules", "compute_s")

    def __init__(self, tokens: int = 0, joules: float = 0.0, compute_s: float = 0.0):
        self.tokens = tokens
        self.joules = joules
        self.compute_s = compute_s


def _finite_nonnegative(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"accounting: {name} must be a finite number >= 0, got {value!r}")
    return float(value)


def _count(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"accounting: {name} must be an integer >= 0, got {value!r}")
    return value


class Accountant:
    def __init__(self, cost_model: CostModel):
        self.cost_model = cost_model
        self._usd_per_s = cost_model.usd_per_compute_second  # the model is frozen
        self._lock = threading.Lock()
        self._accounts: dict[int, _Account] = {}
        self._pending: dict[int, int] = {}  # job id -> tokens made since the last charge
        self._carry_j = 0.0  # energy drawn with no tokens yet (prefill), J
        self._carry_s = 0.0
        # since this start
        self._tokens = 0
        self._joules = 0.0
        self._compute_s = 0.0
        self._idle_j = 0.0
        self._idle_s = 0.0
        self._measured_j = 0.0  # integral of compute power over every charge
        self._measured_s = 0.0

    # --- Called by the engine's token callback -------------------------------------------
    def tokens(self, job_id: int, n: int = 1) -> None:
        """n tokens were generated for job_id since the last charge."""
        _count("n", n)
        if n == 0:
            return
        with self._lock:
            self._pending[job_id] = self._pending.get(job_id, 0) + n

    # --- Called by the main loop ---------------------------------------------------------
    def charge(self, dt_s: float, compute_w: float) -> None:
        """dt_s seconds elapsed with compute drawing compute_w watts on average: split the
        energy and time (with any carried forward) between the jobs that made tokens since the
        last charge, by their tokens; with no tokens, carry them forward (compute_w > 0) or drop
        them as idle (compute_w == 0)."""
        dt_s = _finite_nonnegative("dt_s", dt_s)
        compute_w = _finite_nonnegative("compute_w", compute_w)
        with self._lock:
            energy = dt_s * compute_w
            self._measured_j += energy
            self._measured_s += dt_s
            self._carry_j += energy
            self._carry_s += dt_s
            if self._pending:
                pending, self._pending = self._pending, {}
                total = sum(pending.values())
                carry_j, carry_s = self._carry_j, self._carry_s
                left_j, left_s = carry_j, carry_s
                last = len(pending) - 1
                for i, (job_id, n) in enumerate(pending.items()):
                    if i == last:  # the remainder, so the split adds up to the whole
                        share_j, share_s = left_j, left_s
                    else:
                        share_j, share_s = carry_j * n / total, carry_s * n / total
                        left_j -= share_j
                        left_s -= share_s
                    account = self._accounts.get(job_id)
                    if account is None:
                        account = self._accounts[job_id] = _Account()
                    account.tokens += n
                    account.joules += share_j
                    account.compute_s += share_s
                self._tokens += total
                self._joules += carry_j
                self._compute_s += carry_s
                self._carry_j = self._carry_s = 0.0
            elif compute_w == 0.0:
                self._idle_j += self._carry_j
                self._idle_s += self._carry_s
                self._carry_j = self._carry_s = 0.0

    def job(self, job_id: int) -> JobAccount:
        """The job's account so far (tokens not yet charged are not in it); a job never seen
        has an empty account."""
        with self._lock:
            account = self._accounts.get(job_id)
            tokens, joules, compute_s = (account.tokens, account.joules, account.compute_s) if account else (0, 0.0, 0.0)
        cost = compute_s * self._usd_per_s
        return JobAccount(job_id=job_id, tokens=tokens, joules=joules, compute_s=compute_s, cost_usd=cost,
                          joules_per_token=joules / tokens if tokens else 0.0,
                          usd_per_token=cost / tokens if tokens else 0.0,
                          tokens_per_s=tokens / compute_s if compute_s > 0 else 0.0)

    def forget(self, job_id: int) -> None:
        """Drop the job's account (after its result is stored) and any tokens of it not yet
        charged; the totals keep what it was charged. Unknown ids are ignored."""
        with self._lock:
            self._accounts.pop(job_id, None)
            self._pending.pop(job_id, None)

    def restore(self, job_id: int, tokens: int, joules: float, compute_s: float) -> None:
        """Start the job's account from what was persisted before a restart (its charges
        before this start); later charges add to it. Replaces any account the job has; the
        totals of this start are unchanged."""
        tokens = _count("tokens", tokens)
        joules = _finite_nonnegative("joules", joules)
        compute_s = _finite_nonnegative("compute_s", compute_s)
        with self._lock:
            self._accounts[job_id] = _Account(tokens, joules, compute_s)

    def totals(self) -> dict[str, float | int]:
        """The ACCT_* housekeeping channels: energy, tokens and cost charged since this start
        (ratios 0.0 while no tokens are charged)."""
        with self._lock:
            tokens, joules, compute_s = self._tokens, self._joules, self._compute_s
        usd = compute_s * self._usd_per_s
        return {"ACCT_JOULES": joules, "ACCT_TOKENS": tokens,
                "ACCT_J_PER_TOKEN": joules / tokens if tokens else 0.0,
                "ACCT_USD": usd, "ACCT_USD_PER_TOKEN": usd / tokens if tokens else 0.0}

    # --- For housekeeping and tests ------------------------------------------------------
    @property
    def compute_s(self) -> float:
        """Compute time charged to tokens since this start, s."""
        with self._lock:
            return self._compute_s

    @property
    def idle_joules(self) -> float:
        """Energy dropped without tokens to charge it to, since this start, J."""
        with self._lock:
            return self._idle_j

    @property
    def idle_s(self) -> float:
        with self._lock:
            return self._idle_s

    @property
    def carried_joules(self) -> float:
        """Energy drawn since the last tokens, waiting for the next ones (a prefill), J."""
        with self._lock:
            return self._carry_j

    @property
    def carried_s(self) -> float:
        with self._lock:
            return self._carry_s

    @property
    def measured_joules(self) -> float:
        """The integral of compute power over every charge since this start, J."""
        with self._lock:
            return self._measured_j

    @property
    def measured_s(self) -> float:
        with self._lock:
            return self._measured_s

    @property
    def pending_tokens(self) -> int:
        """Tokens reported since the last charge."""
        with self._lock:
            return sum(self._pending.values())
