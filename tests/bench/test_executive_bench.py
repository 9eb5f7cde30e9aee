"""The executive's whole tick with 1000 jobs in its table (issue 7: the main loop's own cost).

Executive.tick() is one pass of the 10 Hz loop: the sim sensors are read, energy is charged to
the jobs, ended jobs are taken, the engine is watched, the mode is checked, the scheduler decides
(in INFERENCE), the decision is applied, streams are flushed and the housekeeping values are
computed. Its parts are the real ones: a JobStore on a temporary SQLite file (the 1000 jobs are
stored with add_job and handed over with Executive.submit, as JOB_SUBMIT does), the
EngineSupervisor and its child on a small synthetic model (hil/synth_gguf.py), SimSensors,
the ModeMachine and the lifetime counters on the same database and the Accountant. Only the link is a stub that takes
results, streams and events and drops them. The loop thread is not started: the benchmark calls
tick() itself, back to back.

Two cases:
- STANDBY: auto_inference off, so the mode stays STANDBY and no job starts. The tick still walks
  the 1000-job table (apply, streams, housekeeping counts) but the scheduler is not consulted.
- INFERENCE: auto_inference on; the first tick (untimed) enters INFERENCE and starts the
  scheduler's batch of 8. Every timed tick then builds the 1000-row table, runs the C decision
  over it and keeps the same batch (no start, no preemption). The power levels' tokens/s are
  set to a few tokens a second, and the sim engine is paced to them, so the child makes a step of
  8 tokens every few seconds: the 8 running jobs cost the executive's process almost no token
  handling (on_token, progress saves) while their ticks are timed. What is measured is the
  executive's own work with 8 running and 992 queued jobs, not the engine's.

`make test` runs each body once (benchmarks disabled) and checks the mode, batch and counts;
assertions are never on time. tick_us (median of TIMED_TICKS ticks timed with perf_counter, so
filled with benchmarks disabled too) and its share of the 100 ms period go into extra_info.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flight.executive.accounting import Accountant
from flight.executive.cost_model import CostModel
from flight.executive.engine_supervisor import EngineSupervisor
from flight.executive.executive import Executive, ExecutiveConfig
from flight.executive.fdir import Fdir, rules_for
from flight.executive.modes import ModeMachine
from flight.executive.scheduler import PowerLevel
from flight.link.dictionary import load_dictionary
from flight.sensors.sim import SimSensors
from flight.store.counter_store import PersistedCounters
from flight.store.job_store import Job, JobStore
from flight.store.mode_store import PersistedMode
from flight.store.onboard_db import OnboardDb
from hil.synth_gguf import write_llama_gguf

D = load_dictionary()
N_JOBS = 1000
N_BATCH = 8
N_CTX = 256
MAX_TOKENS = 64
TICK_HZ = 10.0
TIMED_TICKS = 50  # our own figure: median over this many ticks
# The default levels' watts; tokens/s low enough that the paced engine is all but idle.
SLOW_LEVELS = (PowerLevel("LOW", 7.0, 0.5), PowerLevel("MID", 15.0, 1.0), PowerLevel("HIGH", 25.0, 2.0))


class NullDownlink:
    """The link as the executive sees it, dropping everything (counts events, for the checks)."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def publish_result(self, job_id: int, data: bytes, spi: int | None) -> bool:
        return True

    def send_tokens(self, job_id: int, first_index: int, tokens: list[tuple[int, str]]) -> None:
        pass

    def emit_event(self, name: str, **args: Any) -> bool:
        self.events.append(name)
        return True


class TickRig:
    def __init__(self, tmp_path: Path, model: Path, *, inference: bool):
        self.db = OnboardDb(tmp_path / "onboard.sqlite")
        self.store = JobStore(self.db)
        self.link = NullDownlink()
        self.executive: Executive | None = None
        self.engine = EngineSupervisor(model, 1, N_CTX, n_batch=N_BATCH, auto_restart=False,  # as the node runs it
                                       on_token=lambda e: self.executive.on_token(e),
                                       on_done=lambda j: self.executive.on_done(j))
        self.engine.start()
        self.modes = ModeMachine(D, PersistedMode(self.db), lambda *change: self.executive.on_mode_change(*change))
        self.executive = Executive(
            ExecutiveConfig(levels=SLOW_LEVELS, n_batch=N_BATCH, n_ctx=N_CTX, tick_hz=TICK_HZ,
                            auto_inference=inference),
            D, self.engine, self.link, SimSensors(), self.store, self.modes, Accountant(CostModel()),
            PersistedCounters(self.db), Fdir(rules_for(20.0, 85.0, 10.0)))  # the shipped rules: FDIR is in the tick
        now = time.time()
        for i in range(1, N_JOBS + 1):
            # varied priorities and ages, as a real queue; prompt ids as JOB_SUBMIT stores them
            job = Job(i, f"job {i}", MAX_TOKENS, 1, priority=i % 7, prompt_ids=(1, 2, 3, 4 + i % 50),
                      submitted=now - (N_JOBS - i) * 0.5)
            assert self.store.add_job(job)
            self.executive.submit(job)
        # what Executive.start() does, without starting the loop thread: leave BOOT (to STANDBY)
        self.modes.start()

    def stop(self) -> None:
        assert self.executive is not None
        self.executive.stop(engine_stop=self.engine.stop)
        self.db.close()


@pytest.fixture(scope="module")
def synth_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_llama_gguf(tmp_path_factory.mktemp("synth") / "m.gguf", n_ctx=N_CTX)


@pytest.fixture(params=["STANDBY", "INFERENCE"])
def rig(request: pytest.FixtureRequest, tmp_path: Path, synth_model: Path) -> Iterator[TickRig]:
    r = TickRig(tmp_path, synth_model, inference=request.param == "INFERENCE")
    yield r
    r.stop()


def _own_tick_us(executive: Executive) -> float:
    times = []
    for _ in range(TIMED_TICKS):
        t0 = time.perf_counter()
        executive.tick()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def test_executive_tick_1000_jobs(benchmark, rig: TickRig) -> None:
    exe = rig.executive
    assert exe is not None
    exe.tick()  # untimed: in INFERENCE this one changes mode and starts the batch
    expect_mode = "INFERENCE" if rig.executive.config.auto_inference else "STANDBY"
    assert rig.modes.mode == expect_mode
    benchmark.pedantic(exe.tick, rounds=100, warmup_rounds=5, iterations=1)
    tick_us = _own_tick_us(exe)
    ch = exe.channels()
    assert ch["JOB_QUEUE_DEPTH"] == N_JOBS
    if expect_mode == "INFERENCE":
        # the same batch of 8 the whole time: started once, never preempted
        assert ch["JOB_RUNNING"] == N_BATCH and ch["SCHED_BATCH"] == N_BATCH
        assert rig.link.events.count("JOB_STARTED") == N_BATCH and "JOB_PREEMPTED" not in rig.link.events
        assert D.enums["SCHED_REASON"].name_of(ch["SCHED_REASON"]) == "RUN"
    else:
        assert ch["JOB_RUNNING"] == 0 and "JOB_STARTED" not in rig.link.events
    benchmark.extra_info.update(
        mode=expect_mode, jobs=N_JOBS, running=ch["JOB_RUNNING"], n_batch=N_BATCH,
        tick_us=round(tick_us, 1), share_of_period_pct=round(tick_us / (1e6 / TICK_HZ) * 100, 3),
        engine_tokens=ch["ENGINE_TOKENS"])
