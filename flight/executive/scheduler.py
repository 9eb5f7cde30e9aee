"""The per-tick scheduling decision: which queued jobs run now (the batch, at most the engine's
n_batch) and at which power level.

The rules and their reasons are in csrc/tk_sched.h; the decision is the C function
tk_sched_decide (csrc/tk_sched.c), bound by flight/executive/_sched.pyx. In short:

- batch: the best n_batch jobs with tokens remaining, by effective priority (priority plus
  aging_per_s per second waited since arrival, plus `hysteresis` for a job already running),
  then earliest deadline (none last), then lowest job id. Aging means no job starves.
- power level: the highest level (levels are listed lowest first) whose projected battery charge
  stays at or above the floor over the horizon (at least until the next eclipse exit), and that
  the thermal rule allows (idle at or above the limit, capped inside the margin below it).
- the same inputs give the same decision, whatever the order of the job table.

Preemption happens only at token boundaries: the executive applies a decision between two
decode steps. Each decision carries a reason (REASONS, mirrored from the C table) for
housekeeping.

Two ways to pass the job table: a sequence of Job (converted each call, about 0.1 µs a job), or
a numpy array of JOB_DTYPE (see job_table), which the C code reads in place.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from flight.executive import _sched
from flight.sensors.reading import SensorReading

#: Reason names by code, straight from the C table TK_SCHED_REASONS (csrc/tk_sched.h).
REASONS: tuple[str, ...] = _sched.REASONS
#: One-line meaning of each reason, from the same C table.
REASON_TEXT: dict[str, str] = _sched.REASON_TEXT
#: A row of the job table as the C struct tk_sched_job lays it out.
JOB_DTYPE: np.dtype = _sched.JOB_DTYPE
MAX_BATCH: int = _sched.MAX_BATCH
MAX_LEVELS: int = _sched.MAX_LEVELS

DEFAULT_AGING_PER_S = 1.0 / 300.0  # one priority step per five minutes of waiting
DEFAULT_HYSTERESIS = 0.5  # a higher priority still preempts; aging alone must lead by 150 s more
DEFAULT_HORIZON_MIN_S = 600.0  # the plan looks at least ten minutes ahead


@dataclass(slots=True)
class Job:
    """One row of the executive's job table."""

    id: int  # job id, unique in the table (u32)
    priority: int = 0  # higher runs first (i32)
    tokens_remaining: int = 0  # tokens still to generate; 0 = finished, never scheduled (i32)
    tokens_done: int = 0  # tokens generated so far (i32; housekeeping, not a rule input)
    arrival_s: float = 0.0  # onboard time it was queued, s
    deadline_s: float = 0.0  # onboard time it is due, s; 0 = no deadline
    running: bool = False  # in the current batch


@dataclass(frozen=True, slots=True)
class Energy:
    """The energy state the plan starts from."""

    soc_wh: float  # battery charge now, Wh (read as full when above capacity)
    capacity_wh: float  # Wh
    floor_wh: float  # never plan below this charge, Wh
    solar_w: float  # array input while sunlit, W (in eclipse: the last sunlit or nominal value)
    eclipse_entry_s: float  # s to the next eclipse entry (+inf: none ahead; in eclipse 0 = unknown)
    eclipse_exit_s: float  # s to the next eclipse exit (+inf: none ahead)
    in_eclipse: bool
    base_load_w: float  # everything but compute: bus, radio, idle board, W

    @classmethod
    def from_reading(cls, r: SensorReading, *, floor_wh: float, compute_w: float,
                     sunlit_solar_w: float | None = None) -> Energy:
        """From a sensor reading. compute_w is what compute draws now (the reading's load
        includes it); sunlit_solar_w is the array input to count while sunlit when the reading
        is taken in eclipse (its own solar_w is then 0; None counts no recharge at all)."""
        solar = r.solar_w if not r.in_eclipse else (sunlit_solar_w or 0.0)
        return cls(soc_wh=r.battery_wh, capacity_wh=r.battery_capacity_wh, floor_wh=floor_wh,
                   solar_w=solar, eclipse_entry_s=r.eclipse_entry_in_s,
                   eclipse_exit_s=r.eclipse_exit_in_s, in_eclipse=r.in_eclipse,
                   base_load_w=max(0.0, r.load_w - compute_w))


@dataclass(frozen=True, slots=True)
class Thermal:
    temp_c: float  # board/GPU temperature, °C
    limit_c: float  # at or above: no compute, °C
    margin_c: float = 5.0  # band below the limit where power is capped, °C (0 = none)


@dataclass(frozen=True, slots=True)
class PowerLevel:
    """One power mode (e.g. a Jetson nvpmodel mode). Tables list them lowest first."""

    name: str
    watts: float  # drawn by compute at this level, on top of the base load, W
    tokens_per_s: float  # aggregate decode throughput at this level (the sim engine's cap)


@dataclass(frozen=True, slots=True)
class Decision:
    level: int  # index into the power-level table; -1 = idle
    level_name: str | None  # that level's name; None when idle
    reason: str  # one of REASONS
    reason_code: int  # its code (REASONS[reason_code] == reason)
    batch_ids: tuple[int, ...]  # job ids to run, best first; () when idle
    batch_rows: tuple[int, ...]  # their positions in the job table passed in
    n_runnable: int  # jobs with tokens remaining
    n_preempted: int  # running jobs left out of the batch (stop at the next token boundary)
    energy_level: int  # highest level the energy rule allows; -1 = none
    thermal_level: int  # highest level the thermal rule allows; -1 = none
    work_tokens: int  # tokens remaining over all runnable jobs
    horizon_s: float  # planning horizon, s
    tokens_per_s: float  # the chosen level's throughput cap; 0 when idle
    soc_min_wh: float  # lowest projected charge over the horizon (chosen level, or idle), Wh
    soc_end_wh: float  # projected charge at the end of the horizon, Wh

    @property
    def idle(self) -> bool:
        return self.level < 0

    def housekeeping(self) -> dict[str, int | float]:
        """The decision as housekeeping values (reason as its code)."""
        return {"SCHED_LEVEL": self.level, "SCHED_REASON": self.reason_code,
                "SCHED_BATCH": len(self.batch_ids), "SCHED_RUNNABLE": self.n_runnable,
                "SCHED_PREEMPTED": self.n_preempted, "SCHED_HORIZON_S": self.horizon_s,
                "SCHED_SOC_MIN_WH": self.soc_min_wh}


def job_table(jobs: Iterable[Job]) -> np.ndarray:
    """A JOB_DTYPE array of jobs: what Scheduler.decide reads with no conversion. The executive
    may keep its table in this form and update it in place."""
    rows = [(j.arrival_s, j.deadline_s, j.id, j.priority, j.tokens_remaining, j.tokens_done,
             1 if j.running else 0) for j in jobs]
    try:
        return np.array(rows, dtype=JOB_DTYPE)
    except OverflowError as exc:
        raise ValueError(f"job table: {exc}") from None


class Scheduler:
    """The configured decision. Not thread-safe (it owns the decision's scratch space)."""

    def __init__(self, levels: Sequence[PowerLevel], n_batch: int, *,
                 aging_per_s: float = DEFAULT_AGING_PER_S,
                 hysteresis: float = DEFAULT_HYSTERESIS,
                 horizon_min_s: float = DEFAULT_HORIZON_MIN_S):
        """levels lowest first (watts and tokens/s both increasing); n_batch the engine's batch
        size. ValueError with a one-line message for a bad configuration."""
        self.levels = tuple(levels)
        self.n_batch = n_batch
        try:
            self._core = _sched.Core(n_batch, aging_per_s, hysteresis, horizon_min_s,
                                     [(lv.watts, lv.tokens_per_s) for lv in self.levels])
        except (OverflowError, TypeError) as exc:
            raise ValueError(f"scheduler configuration: {exc}") from None

    def decide(self, now_s: float, jobs: Sequence[Job] | np.ndarray, energy: Energy,
               thermal: Thermal) -> Decision:
        """One tick's decision at onboard time now_s. ValueError (one line) for bad inputs."""
        try:
            (level, code, ids, rows, n_runnable, n_preempted, energy_level, thermal_level, work,
             horizon, tps, soc_min, soc_end) = self._core.decide(now_s, jobs, energy, thermal)
        except OverflowError as exc:  # an integer field out of its C type's range
            raise ValueError(f"job table: {exc}") from None
        return Decision(level, self.levels[level].name if level >= 0 else None, REASONS[code],
                        code, ids, rows, n_runnable, n_preempted, energy_level, thermal_level,
                        work, horizon, tps, soc_min, soc_end)

    def time_decide(self, now_s: float, jobs: Sequence[Job] | np.ndarray, energy: Energy,
                    thermal: Thermal, reps: int = 1000) -> float:
        """Seconds per C decision alone: inputs converted once, then tk_sched_decide run reps
        times in a C loop (perf_counter around the loop, divided by reps)."""
        return self._core.time_decide(now_s, jobs, energy, thermal, reps)

    def last_decision_bytes(self) -> bytes:
        """The C decision struct of the last call, byte for byte."""
        return self._core.last_decision_bytes()
