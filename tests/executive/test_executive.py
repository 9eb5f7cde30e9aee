"""The executive with its real parts: the engine supervisor and its child on a small synthetic
model, the onboard SQLite stores, the sim sensors, the mode machine and the accountant. Only the
link is replaced, by a recorder of what the executive hands it (its whole interface is three
calls), so each test sees the results, streams and events exactly as they would go down.

Covers: a higher-priority job preempts a running one at a token boundary and both end with the
tokens of uninterrupted runs; progress is committed at least every 16 tokens; cancel of a running
and of a queued job; auto_inference off waits for MODE_SET INFERENCE; a battery at its floor keeps
the node idle with the reason in housekeeping; POWER_LEVEL_SET caps the level. The shipped FDIR
rules on battery and temperature (set by the test in place of the sim's, as the HIL rig would)
fire within their max_response_s and recover; an engine without tokens for the table's N seconds
is restarted by its rule and the job resumes exactly.
"""
from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from flight.config import DEFAULT_POWER_LEVELS
from flight.engine import Engine
from flight.executive.accounting import Accountant
from flight.executive.cost_model import CostModel
from flight.executive.engine_supervisor import EngineSupervisor
from flight.executive.executive import SAVE_EVERY, Executive, ExecutiveConfig
from flight.executive.fdir import Fdir, Rule, rules_for
from flight.executive.job_service import JobService
from flight.executive.modes import ModeMachine
from flight.link.dictionary import load_dictionary
from flight.link.job_result import decode_result
from flight.link.service import CommandFailure, CommandOrigin
from flight.sensors.reading import SensorReading
from flight.sensors.sim import SimConfig, SimSensors
from flight.store.counter_store import PersistedCounters
from flight.store.job_store import JobStore
from flight.store.mode_store import PersistedMode
from flight.store.onboard_db import OnboardDb
from flight.store.result_store import ResultStore
from hil.synth_gguf import write_llama_gguf

D = load_dictionary()
ORIGIN = CommandOrigin(spi=1, arsn=1)
N_CTX = 256
SHIPPED = {rule.name: rule for rule in rules_for(20.0, 85.0, 10.0)}  # the Rig's default table


class Steered:
    """The sim's readings, with the battery and board temperature the test sets (what the HIL
    rig does over the sensor bus, without the serial line)."""

    def __init__(self, sim: SimSensors) -> None:
        self.sim = sim
        self.battery_wh: float | None = None
        self.board_c: float | None = None

    def read(self) -> SensorReading:
        reading = self.sim.read()
        return dataclasses.replace(
            reading, battery_wh=reading.battery_wh if self.battery_wh is None else self.battery_wh,
            board_temperature_c=reading.board_temperature_c if self.board_c is None else self.board_c)

    def report_compute_power(self, watts: float) -> None:
        self.sim.report_compute_power(watts)


class Recorder:
    """The link as the executive sees it: results, token streams and events, recorded. Results
    are also stored as the link stores them (which ends the job in the store), so that a Rig
    started again on the same database does not run a finished job again."""

    def __init__(self, store: ResultStore) -> None:
        self.store = store
        self.results: dict[int, dict[str, Any]] = {}
        self.streams: dict[int, list[tuple[int, list[tuple[int, str]]]]] = {}
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.lock = threading.Lock()

    def publish_result(self, job_id: int, data: bytes, spi: int | None) -> bool:
        stored = self.store.store_result(job_id, data, spi or 0, b"")  # no MAC: nothing goes down
        with self.lock:
            self.results[job_id] = decode_result(data)
        return stored

    def send_tokens(self, job_id: int, first_index: int, tokens: list[tuple[int, str]]) -> None:
        with self.lock:
            self.streams.setdefault(job_id, []).append((first_index, tokens))

    def emit_event(self, name: str, **args: Any) -> bool:
        with self.lock:
            self.events.append((name, args))
        return True

    def named(self, name: str) -> list[dict[str, Any]]:
        with self.lock:
            return [args for n, args in self.events if n == name]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return write_llama_gguf(tmp_path_factory.mktemp("synth") / "m.gguf", n_ctx=N_CTX)


@pytest.fixture(scope="module")
def reference(model):
    def run(prompt: str, n: int, **kw: Any) -> list[int]:
        with Engine.load(model, threads=1, n_ctx=N_CTX) as e:
            return e.generate(prompt, max_tokens=n, **kw).tokens
    return run


class Rig:
    def __init__(self, tmp_path: Path, model: Path, *, n_batch: int = 1, auto_inference: bool = True,
                 sim: SimConfig | None = None, rate: float = 400.0, model_path: Path | None = None,
                 fdir: tuple | None = None):
        self.db = OnboardDb(tmp_path / "onboard.sqlite")
        self.store = JobStore(self.db)
        self.link = Recorder(ResultStore(self.db, D.segment_octets))
        # the default levels' watts, with tokens/s scaled so the highest is `rate` (the sim's cap)
        top = DEFAULT_POWER_LEVELS[-1].tokens_per_s
        levels = tuple(type(level)(level.name, level.watts, rate * level.tokens_per_s / top)
                       for level in DEFAULT_POWER_LEVELS)
        self.executive: Executive | None = None
        # as the node runs it: restarts are the FDIR rules' (auto_restart off)
        self.engine = EngineSupervisor(model_path or model, 1, N_CTX, n_batch=n_batch, auto_restart=False,
                                       on_token=lambda e: self.executive.on_token(e),
                                       on_done=lambda j: self.executive.on_done(j))
        self.engine.start()
        self.modes = ModeMachine(D, PersistedMode(self.db), lambda *change: self.executive.on_mode_change(*change))
        self.sensors = Steered(SimSensors(sim or SimConfig()))
        self.executive = Executive(
            ExecutiveConfig(levels=levels, n_batch=n_batch, n_ctx=N_CTX, tick_hz=20.0, auto_inference=auto_inference),
            D, self.engine, self.link, self.sensors, self.store, self.modes, Accountant(CostModel()),
            PersistedCounters(self.db), Fdir(rules_for(20.0, 85.0, 10.0) if fdir is None else fdir),
            link_channels=lambda: dict(self.link_channels), link_reset=lambda: self.link.emit_event("RESET"))
        self.link_channels: dict[str, Any] = {}
        self.jobs = JobService(self.store, self.executive, self.engine, N_CTX, self.link.emit_event, time.time)
        self.handlers = {**self.jobs.handlers(), **self.executive.handlers()}
        self.next_id = 1
        self.stopped = False

    def start(self) -> Rig:
        self.executive.start()
        return self

    def command(self, name: str, **args: Any) -> Any:
        return self.handlers[name](D.command_by_name[name].check_args(D.command_by_name[name].order_args(args)), ORIGIN)

    def submit(self, prompt: str, max_tokens: int, **kw: Any) -> int:
        job_id, self.next_id = self.next_id, self.next_id + 1
        self.command("JOB_SUBMIT", job_id=job_id, prompt=prompt, max_tokens=max_tokens, token_ids=True, **kw)
        return job_id

    def wait(self, predicate, timeout: float = 60.0, what: str = "condition") -> None:
        end = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > end:
                raise TimeoutError(f"{what} not met in {timeout} s; events {self.link.events[-10:]}")
            time.sleep(0.02)

    def result(self, job_id: int, timeout: float = 60.0) -> dict[str, Any]:
        self.wait(lambda: job_id in self.link.results, timeout, f"result of job {job_id}")
        return self.link.results[job_id]

    def stop(self) -> None:
        self.stopped = True
        self.executive.stop(engine_stop=self.engine.stop)
        self.db.close()


@pytest.fixture
def rig_factory(tmp_path, model):
    rigs: list[Rig] = []

    def make(**kw: Any) -> Rig:
        rig = Rig(tmp_path, model, **kw)
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        if not rig.stopped:
            rig.stop()


def test_higher_priority_preempts_at_a_token_boundary_and_both_equal_uninterrupted_runs(rig_factory, reference):
    rig = rig_factory(n_batch=1, rate=150.0).start()
    low = rig.submit("the low priority job", 120, temperature=0.9, seed=5)
    rig.wait(lambda: len(rig.link.named("JOB_STARTED")) >= 1 and rig.store.progress(low) is not None,
             what="the low job under way")
    high = rig.submit("urgent", 24, priority=10)
    high_result = rig.result(high)
    low_result = rig.result(low)
    assert [e["job_id"] for e in rig.link.named("JOB_PREEMPTED")] == [low]
    assert low_result["preemptions"] == 1 and high_result["preemptions"] == 0
    assert low_result["token_ids"] == reference("the low priority job", 120, temperature=0.9, seed=5)
    assert high_result["token_ids"] == reference("urgent", 24)
    finished = [e["job_id"] for e in rig.link.named("JOB_FINISHED")]
    assert finished == [high, low]
    for r in (low_result, high_result):
        assert r["joules"] > 0 and r["cost_usd"] > 0 and r["compute_s"] > 0
        assert r["joules_per_token"] == pytest.approx(r["joules"] / r["tokens"]) and r["tokens"] == len(r["token_ids"])


def test_progress_is_committed_at_least_every_16_tokens(rig_factory):
    rig = rig_factory(rate=100.0).start()
    job = rig.submit("progress", 100)
    seen: list[int] = []
    while job not in rig.link.results:
        progress = rig.store.progress(job)
        if progress is not None and (not seen or seen[-1] != len(progress.tokens)):
            seen.append(len(progress.tokens))
        time.sleep(0.005)
    assert seen and all(0 < b - a <= SAVE_EVERY for a, b in zip([0] + seen, seen)), seen


def test_cancel_running_and_queued_jobs(rig_factory):
    rig = rig_factory(n_batch=1, rate=100.0).start()
    running = rig.submit("running job", 200)
    queued = rig.submit("queued job", 50)
    rig.wait(lambda: rig.link.named("JOB_STARTED"), what="first job started")
    time.sleep(0.2)
    assert rig.command("JOB_CANCEL", job_id=queued)["tokens_done"] == 0
    assert rig.command("JOB_CANCEL", job_id=running)["tokens_done"] > 0
    for job in (running, queued):
        assert rig.result(job)["stop_reason"] == "cancelled"
    assert rig.link.results[queued]["token_ids"] == []
    assert 0 < len(rig.link.results[running]["token_ids"]) < 200
    for job_id, reason in ((running, "JOB_ENDED"), (999, "UNKNOWN_JOB")):
        with pytest.raises(CommandFailure) as failure:
            rig.command("JOB_CANCEL", job_id=job_id)
        assert failure.value.reason == reason


def test_with_auto_inference_off_jobs_wait_for_mode_set_inference(rig_factory):
    rig = rig_factory(auto_inference=False).start()
    job = rig.submit("waits", 8)
    time.sleep(0.5)
    assert rig.modes.mode == "STANDBY" and job not in rig.link.results
    assert rig.executive.channels()["SCHED_REASON"] == D.enum_value("SCHED_REASON", "IDLE_MODE")
    with pytest.raises(CommandFailure) as refused:
        rig.command("MODE_SET", mode=D.enum_value("MODE", "SAFE"))
        rig.command("MODE_SET", mode=D.enum_value("MODE", "INFERENCE"))  # SAFE -> INFERENCE is not allowed
    assert refused.value.reason == "MODE_REFUSED"
    rig.command("MODE_SET", mode=D.enum_value("MODE", "STANDBY"))
    rig.command("MODE_SET", mode=D.enum_value("MODE", "INFERENCE"))
    assert rig.result(job)["stop_reason"] in ("limit", "eos")
    causes = [(e["mode"], e["cause"]) for e in rig.link.named("MODE_CHANGED")]
    assert causes[-1] == (D.enum_value("MODE", "INFERENCE"), D.enum_value("MODE_CAUSE", "COMMAND"))


def test_battery_below_its_floor_is_safe_mode_by_fdir_left_only_by_command(rig_factory):
    rig = rig_factory()
    rig.sensors.battery_wh = 10.0
    rig.start()
    job = rig.submit("no energy", 8)
    rig.wait(lambda: rig.modes.mode == "SAFE", what="FDIR's SAFE")
    [fired] = rig.link.named("FDIR_FIRED")
    assert (fired["rule"], fired["action"]) == ("BATTERY_LOW", "SAFE") and fired["value"] == pytest.approx(10.0)
    assert fired["latency_ms"] <= SHIPPED["BATTERY_LOW"].max_response_s * 1000 and fired["late"] == ""
    assert rig.link.named("MODE_CHANGED")[-1]["cause"] == D.enum_value("MODE_CAUSE", "FDIR")
    rig.sensors.battery_wh = 80.0  # charged again: still SAFE, which auto_inference never leaves
    time.sleep(0.5)
    assert rig.modes.mode == "SAFE" and job not in rig.link.results
    assert rig.executive.channels()["SCHED_REASON"] == D.enum_value("SCHED_REASON", "IDLE_MODE")
    assert rig.executive.channels()["FDIR_FIRINGS"] == 1
    rig.command("MODE_SET", mode=D.enum_value("MODE", "STANDBY"))  # left by command only
    rig.command("MODE_SET", mode=D.enum_value("MODE", "INFERENCE"))  # (a commanded STANDBY sticks)
    assert rig.result(job)["stop_reason"] in ("limit", "eos")


def test_over_temperature_lowers_the_power_level_then_stops_inference_and_both_lift_when_it_cools(
        rig_factory, reference):
    rig = rig_factory(rate=100.0).start()
    job = rig.submit("a warm job", 200, temperature=0.6, seed=8)
    rig.wait(lambda: rig.link.named("JOB_STARTED"), what="the job started")
    top = len(DEFAULT_POWER_LEVELS) - 1
    rig.sensors.board_c = 82.0  # OVER_TEMP_THROTTLE: at or above 80 (the limit less half its margin)
    rig.wait(lambda: rig.link.named("FDIR_FIRED"), what="OVER_TEMP_THROTTLE")
    rig.wait(lambda: 0 <= rig.executive.channels()["SCHED_MAX_LEVEL"] < top, what="the level capped")
    rig.sensors.board_c = 90.0  # OVER_TEMP_STOP: at or above the limit
    rig.wait(lambda: rig.modes.mode == "STANDBY", what="FDIR's STANDBY")
    throttle, stop = rig.link.named("FDIR_FIRED")
    for fired, name, action in ((throttle, "OVER_TEMP_THROTTLE", "POWER_DOWN"), (stop, "OVER_TEMP_STOP", "STANDBY")):
        assert (fired["rule"], fired["action"]) == (name, action)
        assert fired["latency_ms"] <= SHIPPED[name].max_response_s * 1000 and fired["late"] == ""
    assert rig.link.named("MODE_CHANGED")[-1]["cause"] == D.enum_value("MODE_CAUSE", "FDIR")
    rig.wait(lambda: rig.link.named("JOB_PREEMPTED"), what="the job out of the batch")
    time.sleep(0.3)
    assert rig.modes.mode == "STANDBY" and job not in rig.link.results  # held while hot
    rig.sensors.board_c = 40.0  # cooled: the STANDBY hold and the cap go with their conditions
    assert rig.result(job)["token_ids"] == reference("a warm job", 200, temperature=0.6, seed=8)
    assert rig.link.named("SCHED_MAX_LEVEL_SET")[-1]["max_level"] == -1
    assert rig.link.named("MODE_CHANGED")[-1]["cause"] == D.enum_value("MODE_CAUSE", "AUTO")
    assert rig.executive.channels()["FDIR_FIRINGS"] == 2


def test_no_token_for_the_tables_n_seconds_restarts_the_engine_and_the_job_resumes(rig_factory, reference):
    """ENGINE_SILENT's N is the table's: here 1 s (shipped: 120 s); a stopped engine stands in
    for a C loop stuck with its heartbeats going (no rule on them here)."""
    silent = Rule("ENGINE_SILENT", "ENGINE_TOKEN_SILENCE_S", ">", 1.0, 3, "ENGINE_RESTART", 0.5)
    rig = rig_factory(rate=40.0, fdir=(silent,)).start()
    job = rig.submit("stuck in a loop", 80, temperature=0.7, seed=11)
    rig.wait(lambda: rig.store.progress(job) is not None, what="progress")
    stopped_at = time.monotonic()
    os.kill(rig.engine.pid, signal.SIGSTOP)
    rig.wait(lambda: rig.link.named("ENGINE_RESTARTED"), what="the restart")
    assert time.monotonic() - stopped_at >= 1.0
    [fired] = rig.link.named("FDIR_FIRED")
    assert (fired["rule"], fired["action"]) == ("ENGINE_SILENT", "ENGINE_RESTART") and fired["value"] > 1.0
    assert fired["latency_ms"] <= silent.max_response_s * 1000 and fired["late"] == ""
    [restarted] = rig.link.named("ENGINE_RESTARTED")
    assert restarted["cause"] == D.enum_value("ENGINE_RESTART_CAUSE", "STALLED")
    result = rig.result(job)
    assert result["token_ids"] == reference("stuck in a loop", 80, temperature=0.7, seed=11) and result["restarts"] == 1


def test_an_fdir_standby_holds_until_its_rule_clears_and_rules_are_enabled_by_command(rig_factory):
    hot = Rule("HOT", "THERM_BOARD_C", ">=", -100.0, 2, "STANDBY", 1.0)  # always true: the board is "hot"
    rig = rig_factory(fdir=(hot,)).start()
    rig.wait(lambda: rig.link.named("FDIR_FIRED"), what="HOT fired")
    time.sleep(0.5)
    assert rig.modes.mode == "STANDBY"  # auto_inference held off while HOT holds
    rig.command("FDIR_RULE_ENABLE", rule="HOT", enabled=False)
    rig.wait(lambda: rig.modes.mode == "INFERENCE", what="auto_inference once the hold is gone")
    assert rig.executive.channels()["FDIR_RULES_DISABLED"] == 1
    assert rig.link.named("FDIR_RULE_SET") == [{"rule": "HOT", "state": "disabled"}]
    with pytest.raises(CommandFailure) as unknown:
        rig.command("FDIR_RULE_ENABLE", rule="NOPE", enabled=True)
    assert unknown.value.reason == "BAD_ARGUMENT"


def test_command_loss_resets_the_radio_port_once_per_episode(rig_factory):
    loss = Rule("COMMAND_LOSS", "LINK_SILENCE_S", ">", 5.0, 3, "LINK_RESET", 1.0)
    rig = rig_factory(fdir=(loss,)).start()
    rig.link_channels["LINK_SILENCE_S"] = 2.0
    time.sleep(0.3)
    assert rig.link.named("RESET") == []
    rig.link_channels["LINK_SILENCE_S"] = 6.0
    rig.wait(lambda: rig.link.named("RESET"), what="the port reset")
    time.sleep(0.5)
    assert len(rig.link.named("RESET")) == 1  # once per episode, not every tick


def test_power_level_cap_and_context_overflow(rig_factory):
    rig = rig_factory().start()
    rig.command("POWER_LEVEL_SET", max_level=0)
    job = rig.submit("capped", 16)
    rig.result(job)
    assert rig.executive.channels()["SCHED_MAX_LEVEL"] == 0
    with pytest.raises(CommandFailure) as failure:
        rig.command("POWER_LEVEL_SET", max_level=len(DEFAULT_POWER_LEVELS))
    assert failure.value.reason == "BAD_ARGUMENT"
    with pytest.raises(CommandFailure) as overflow:
        rig.submit("too long", N_CTX)
    assert overflow.value.reason == "CONTEXT_OVERFLOW"


def test_a_failed_engine_keeps_jobs_queued_and_engine_restart_revives_it(rig_factory, model, tmp_path, reference):
    import os
    import shutil
    import signal

    own = tmp_path / "own.gguf"
    shutil.copy(model, own)
    rig = rig_factory(rate=40.0, model_path=own).start()
    job = rig.submit("survives the engine", 64, temperature=0.7, seed=3)
    rig.wait(lambda: rig.store.progress(job) is not None, what="progress")
    good = own.read_bytes()
    own.write_bytes(b"GGUF broken")  # the next loads fail: the supervisor gives up
    os.kill(rig.engine.pid, signal.SIGKILL)
    rig.wait(lambda: rig.engine.state == "failed", what="engine failed")
    rig.wait(lambda: rig.link.named("ENGINE_FAILED"), what="ENGINE_FAILED event")
    time.sleep(0.3)
    assert job not in rig.link.results and rig.store.job(job)[1] == "queued"
    assert rig.executive.channels()["SCHED_REASON"] == D.enum_value("SCHED_REASON", "IDLE_ENGINE")
    with pytest.raises(CommandFailure) as still_broken:
        rig.command("ENGINE_RESTART")
    assert still_broken.value.reason == "ENGINE_UNAVAILABLE"
    own.write_bytes(good)
    rig.command("ENGINE_RESTART")
    assert rig.result(job)["token_ids"] == reference("survives the engine", 64, temperature=0.7, seed=3)


def test_fdir_revives_a_failed_engine_off_the_loop_which_keeps_ticking(rig_factory, model, tmp_path):
    import shutil

    from flight.engine import EngineError

    own = tmp_path / "own.gguf"
    shutil.copy(model, own)
    rig = rig_factory(model_path=own).start()
    own.write_bytes(b"GGUF broken")  # every load fails from now on
    spawn = rig.engine._spawn
    reviving = threading.Event()

    def slow_failing_load():  # FDIR's revive: a load that takes its time, then fails
        if threading.current_thread().name != "engine-revive":  # the restarts before it gave up
            return spawn()
        reviving.set()
        time.sleep(1.5)
        raise EngineError("model refused (test)")

    rig.engine._spawn = slow_failing_load
    os.kill(rig.engine.pid, signal.SIGKILL)
    rig.wait(lambda: reviving.is_set(), what="FDIR's ENGINE_FAILED revive under way")
    t0 = time.monotonic()
    time.sleep(1.0)  # within the revive's 1.5 s load
    ticks = sum(1 for started, _ in list(rig.executive._lateness) if started >= t0)
    assert ticks >= 10, ticks  # 20 Hz: the loop did not wait for the load
    assert [f["rule"] for f in rig.link.named("FDIR_FIRED")].count("ENGINE_FAILED") == 1
    rig.wait(lambda: rig.engine.state == "failed" and not rig.executive._reviving.is_alive(), what="revive ended")


def test_lifetime_counters_survive_a_restart(rig_factory):
    rig = rig_factory().start()
    rig.result(rig.submit("counted", 8))
    rig.wait(lambda: rig.executive.channels().get("JOB_COMPLETED") == 1, what="first tick after the result")
    first = rig.executive.channels()
    rig.stop()
    again = rig_factory().start()
    again.wait(lambda: again.executive.channels(), what="first tick")
    second = again.executive.channels()
    for name in ("JOB_SUBMITTED", "JOB_COMPLETED", "ENGINE_TOKENS", "ACCT_TOKENS"):
        assert second[name] == first[name] > 0, name
    assert second["ACCT_JOULES"] == pytest.approx(first["ACCT_JOULES"]) and second["ACCT_JOULES"] > 0
