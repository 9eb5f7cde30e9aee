"""What a HIL run is judged by (issue 9, "Criteria"): each a pure function of what the runner
recorded, giving a Criterion {name, passed, value, limit} for report.json.

  results_not_lost        every job the scenario submits has its result at the ground
  results_not_duplicated  no job produced twice onboard, no result for a job never submitted
  battery_above_floor     the environment's battery never went below its floor
  temperature_below_limit the board never went above the limit
  fdir_in_time            every FDIR_FIRED came within its rule's max_response_s (not LATE)
  deadline_hit_rate       results finished by their deadline / jobs that had one, at least the minimum
  seu_repaired_in_time    every upset written into the engine was detected and repaired within one
                          scrub period (an upset the engine's restart wiped first counts as void)
  safe_after_brownout     the node was in SAFE before each brownout ended (scenarios with one)
  cost_reported           J/token and $/token are finite numbers
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from flight.engine.manifest import DEFAULT_BLOCK_OCTETS

SAFE = 1  # the dictionary's MODE value


@dataclass(frozen=True)
class Criterion:
    name: str
    passed: bool
    value: Any
    limit: Any

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class JobRecord:
    job_id: int
    submitted_s: float  # simulated time of submission
    deadline: float  # onboard Unix time, 0 for none
    result: dict[str, Any] | None = None  # the decoded result once archived


@dataclass(frozen=True)
class Upset:
    """An upset written into the engine: when (wall Unix time), where (file octet), which engine."""

    wall_time: float
    offset: int
    pid: int


@dataclass(frozen=True)
class ScrubEvent:
    name: str  # SCRUB_UPSET_DETECTED or SCRUB_UPSET_REPAIRED
    block: int
    onboard_time: float  # the node's Unix time (the same host clock as the rig's wall time)


def job_counts(jobs: list[JobRecord], completed_onboard: int) -> dict[str, Any]:
    """report.json's jobs: completed_onboard is how many results the node made in the run
    (JOB_COMPLETED's rise), so one made twice shows even though the ground keeps one per job."""
    delivered = [j for j in jobs if j.result is not None]
    with_deadline = [j for j in jobs if j.deadline > 0]
    hits = [j for j in with_deadline if j.result is not None and j.result["finished"] <= j.deadline]
    return {"submitted": len(jobs), "delivered": len(delivered), "lost": len(jobs) - len(delivered),
            "duplicated": max(0, completed_onboard - len(jobs)),
            "with_deadline": len(with_deadline),
            "deadline_hit_rate": len(hits) / len(with_deadline) if with_deadline else 1.0}


def results(counts: dict[str, Any], min_delivered: int | None) -> list[Criterion]:
    """A job the ground could not submit (not_submitted: no pass left, or the uplink failed it)
    counts as lost: the scenario asked for its result."""
    missing = counts["lost"] + counts.get("not_submitted", 0)
    lost_ok = missing == 0 if min_delivered is None else counts["delivered"] >= min_delivered
    return [Criterion("results_not_lost", lost_ok, missing,
                      0 if min_delivered is None else f"delivered >= {min_delivered}"),
            Criterion("results_not_duplicated", counts["duplicated"] == 0, counts["duplicated"], 0)]


def battery(min_margin_wh: float, floor_wh: float) -> Criterion:
    """min_margin_wh: the least battery charge minus floor seen over the run."""
    return Criterion("battery_above_floor", min_margin_wh >= 0.0, round(floor_wh + min_margin_wh, 3),
                     round(floor_wh, 3))


def temperature(max_board_c: float, limit_c: float) -> Criterion:
    return Criterion("temperature_below_limit", max_board_c <= limit_c, round(max_board_c, 2), limit_c)


def fdir(firings: list[dict[str, Any]]) -> Criterion:
    """firings: FDIR_FIRED events' args (rule, action, latency_ms, late)."""
    late = [f"{f['rule']} {f['latency_ms']} ms" for f in firings if f["late"]]
    worst = max((f["latency_ms"] for f in firings), default=0)
    return Criterion("fdir_in_time", not late, {"firings": len(firings), "worst_latency_ms": worst, "late": late},
                     "each rule's max_response_s")


def deadline_rate(counts: dict[str, Any], minimum: float) -> Criterion:
    rate = counts["deadline_hit_rate"]
    return Criterion("deadline_hit_rate", rate >= minimum, round(rate, 4), minimum)


def seu_outcomes(upsets: list[Upset], events: list[ScrubEvent], restarts: list[tuple[float, int]],
                 scrub_period_s: float) -> list[dict[str, Any]]:
    """Each upset paired with the first detection and repair of its block after it.

    restarts: (wall time, new pid) of engine restarts; an upset whose engine was replaced before
    any detection was wiped with its process (a new engine maps the weights from flash again)."""
    out = []
    for upset in upsets:
        block = upset.offset // DEFAULT_BLOCK_OCTETS

        def first(name: str) -> float | None:
            times = [e.onboard_time for e in events if e.name == name and e.block == block
                     and e.onboard_time >= upset.wall_time]
            return min(times) if times else None

        detected, repaired = first("SCRUB_UPSET_DETECTED"), first("SCRUB_UPSET_REPAIRED")
        wiped = [t for t, pid in restarts if t >= upset.wall_time and pid != upset.pid]
        void = detected is None and bool(wiped)
        within = repaired is not None and repaired - upset.wall_time <= scrub_period_s
        out.append({"wall_time": upset.wall_time, "offset": upset.offset, "block": block,
                    "detected_after_s": None if detected is None else round(detected - upset.wall_time, 3),
                    "repaired_after_s": None if repaired is None else round(repaired - upset.wall_time, 3),
                    "void": void, "in_time": within})
    return out


def seu(outcomes: list[dict[str, Any]], scrub_period_s: float) -> Criterion:
    counted = [o for o in outcomes if not o["void"]]
    missed = [o for o in counted if not o["in_time"]]
    worst = max((o["repaired_after_s"] for o in counted if o["repaired_after_s"] is not None), default=0.0)
    return Criterion("seu_repaired_in_time", not missed,
                     {"injected": len(outcomes), "void": len(outcomes) - len(counted), "missed": len(missed),
                      "worst_repair_s": worst}, f"<= {scrub_period_s:g} s (one scrub period)")


def brownout(windows: list[tuple[float, float]], modes: list[tuple[float, int]]) -> Criterion:
    """windows: (start, end) of each brownout; modes: (time, mode) samples, on the same clock."""
    missed = [start for start, end in windows if not any(start <= t <= end and m == SAFE for t, m in modes)]
    return Criterion("safe_after_brownout", not missed, {"brownouts": len(windows), "missed": len(missed)},
                     "SAFE before each brownout ends")


def cost(joules_per_token: float | None, usd_per_token: float | None) -> Criterion:
    ok = all(v is not None and math.isfinite(v) for v in (joules_per_token, usd_per_token))
    return Criterion("cost_reported", ok, {"joules_per_token": joules_per_token, "usd_per_token": usd_per_token},
                     "finite")
