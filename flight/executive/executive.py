"""The executive: the node's main loop and the jobs it runs.

Data flows one way: a job arrives (JobService), the scheduler decides each tick which jobs run
and at which power level, the engine generates, tokens and results go to the store and the link.
Each collaborator is handed in as a small interface (below), never reached into:

  engine    EngineControl: the supervised engine process (EngineSupervisor);
  downlink  Downlink: results (stored, then sent reliably), token streams, events (LinkService);
  sensors   SensorBackend: power, battery, eclipse timing, temperature;
  jobs      JobStore: the persisted queue and each job's progress;
  modes     ModeMachine; accountant: Accountant (energy and cost per job).

Threads. The main loop ticks at tick_hz (10 Hz): sensors, accounting, finished jobs, mode,
scheduler, engine commands, housekeeping values. Tokens arrive on the engine supervisor's
thread (on_token): they are appended to the job, counted, streamed (for `stream` jobs, flushed
each tick) and saved every SAVE_EVERY tokens. Jobs end on that thread too (on_done), and are
handed to the next tick, which stores their results. Commands (JOB_SUBMIT, JOB_CANCEL, MODE_SET,
POWER_LEVEL_SET, ENGINE_RESTART) run on the link's command thread. One lock guards the job table.

Crash safety: a job is stored before JOB_SUBMIT completes; its progress (tokens, RNG state,
account) is committed every SAVE_EVERY tokens and at every preemption and stop; its result is
stored in the transaction that ends it. After kill -9 the next start resumes every queued job
from its last saved progress, and the engine's exact resume makes the final text equal to an
uninterrupted run's (the tokens after the last save are generated again, identically).
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from flight.executive.accounting import Accountant
from flight.executive.fdir import Fdir, Firing
from flight.executive.modes import ModeMachine, ModeRefused
from flight.executive.scheduler import Decision, Energy, Job as SchedJob, PowerLevel, Scheduler, Thermal
from flight.link.dictionary import Dictionary
from flight.link.job_result import encode_result
from flight.link.service import CommandFailure, CommandOrigin
from flight.sensors.reading import SensorBackend, SensorReading
from flight.store.job_store import Job, JobStore

log = logging.getLogger(__name__)

SAVE_EVERY = 16  # tokens between progress commits (the bound)
COUNTERS_SAVE_S = 10.0  # lifetime counters are also saved at every job's end and at stop
# Housekeeping counters that count over the node's life (persisted), not since this start.
LIFETIME = ("JOB_SUBMITTED", "JOB_COMPLETED", "JOB_PREEMPTIONS", "JOB_CANCELLED", "JOB_FAILED", "ENGINE_TOKENS",
            "ACCT_JOULES", "ACCT_TOKENS", "ACCT_USD")
# What an FDIR restart of the engine answers (ENGINE_RESTARTED's cause), by the channel its rule
# watches; a rule on any other channel (ENGINE_FAULT, ENGINE_STATE) leaves it to the engine: the
# fault waiting for the restart, else "command".
_RESTART_CAUSE_BY_CHANNEL = {"ENGINE_HEARTBEAT_AGE_S": "silent", "ENGINE_TOKEN_SILENCE_S": "stalled"}
_LATENESS_WINDOW_S = 10.0


class EngineControl(Protocol):
    """What the executive asks of the engine (flight.executive.engine_supervisor)."""

    state: str  # "stopped", "idle", "running" or "failed"
    failed: str | None  # why it gave up, when failed
    restarts: int
    last_restart_cause: str | None
    fault: str | None  # a fault ("died") whose process was reaped, waiting for restart(): FDIR's to answer
    heartbeat_age_s: float  # since the engine process last spoke; 0 while there is none
    token_silence_s: float  # a job in the engine without a token, beyond the rate cap's pacing

    def generate(self, prompt: Sequence[int], max_tokens: int, temperature: float, top_k: int, top_p: float,
                 seed: int, *, job_id: int, resume_tokens: Sequence[int], rng_state: int | None) -> Any: ...

    def preempt(self, job_id: int) -> bool: ...

    def set_rate(self, tokens_per_s: float | None) -> None: ...

    def restart(self, cause: str | None = None) -> None: ...

    def repair(self) -> None: ...


class CounterStore(Protocol):
    def load(self) -> dict[str, float]: ...

    def save(self, values: dict[str, float]) -> None: ...


class Downlink(Protocol):
    """What the executive hands to the link."""

    def publish_result(self, job_id: int, data: bytes, spi: int | None) -> bool: ...

    def send_tokens(self, job_id: int, first_index: int, tokens: list[tuple[int, str]]) -> None: ...

    def emit_event(self, name: str, **args: Any) -> bool: ...


@dataclass
class ExecutiveConfig:
    levels: tuple[PowerLevel, ...]
    n_batch: int
    n_ctx: int
    tick_hz: float = 10.0
    auto_inference: bool = True
    battery_floor_wh: float = 20.0
    thermal_limit_c: float = 85.0
    thermal_margin_c: float = 10.0
    aging_per_s: float = 1.0 / 300.0
    hysteresis: float = 0.5
    horizon_min_s: float = 600.0
    cap_throughput: bool = True  # hold the engine to the level's tokens/s (the sim backend: levels made physical)


@dataclass
class _Run:
    """A job the executive holds: queued, running, or on its way out of the engine."""

    job: Job
    tokens: list[int] = field(default_factory=list)
    rng_state: int | None = None
    preemptions: int = 0
    restarts: int = 0
    state: str = "queued"  # queued | running | stopping (preempt or cancel sent, its end not back yet)
    cancel: bool = False
    saved_n: int = 0  # tokens covered by the last progress commit
    streamed_n: int = 0  # tokens already sent as JOB_TOKENS
    pieces: list[tuple[int, str]] = field(default_factory=list)  # streamed, not yet sent
    text: str = ""  # as reported by the engine at the job's end


class Executive:
    def __init__(self, config: ExecutiveConfig, dictionary: Dictionary, engine: EngineControl, downlink: Downlink,
                 sensors: SensorBackend, jobs: JobStore, modes: ModeMachine, accountant: Accountant,
                 counters: CounterStore, fdir: Fdir, *, link_channels: Callable[[], Mapping[str, Any]] = dict,
                 link_reset: Callable[[], object] | None = None, clock: Callable[[], float] = time.time,
                 on_tick: Callable[[], object] | None = None):
        """link_channels: the link's housekeeping values the FDIR rules may watch (by name);
        link_reset: FDIR's command-loss action (reset the radio port to its defaults)."""
        self.config = config
        self._d = dictionary
        self._engine = engine
        self._downlink = downlink
        self._sensors = sensors
        self._store = jobs
        self._modes = modes
        self._acct = accountant
        self._counter_store = counters
        self._fdir = fdir
        self._fdir_holds: set[str] = set()  # rules whose STANDBY keeps auto_inference off until they clear
        self._fdir_caps: set[str] = set()  # rules whose POWER_DOWN holds the level cap down until they clear
        self._link_channels = link_channels
        self._link_reset = link_reset
        self._base: dict[str, float] = {}  # lifetime counters as of this start
        self._counters_saved = time.monotonic()
        self.clock = clock
        self._on_tick = on_tick  # after every tick (the systemd watchdog)
        self._lock = threading.RLock()
        self._runs: dict[int, _Run] = {}
        self._ended: queue.SimpleQueue[Any] = queue.SimpleQueue()  # EngineJobs whose end came back
        self._max_level = -1
        self._commanded_max_level = -1  # POWER_LEVEL_SET's: the cap again once no FDIR POWER_DOWN holds
        self._scheduler = self._make_scheduler()
        self._decision: Decision | None = None
        self._reason = "IDLE_MODE"
        self._level = -1
        self._compute_w = 0.0
        self._rate: float | None = None
        self._sunlit_solar_w: float | None = None
        self._commanded_standby = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._reviving: threading.Thread | None = None  # FDIR's restart of a failed engine
        self._last_tick = time.monotonic()
        self._engine_restarts_seen = 0
        self._engine_failed_reported = False
        self._engine_fault_reported: str | None = None
        self._token_times: deque[float] = deque()
        self._lateness: deque[tuple[float, float]] = deque()
        self._overruns = 0
        self._tick_us = 0.0
        # this start's counts, by channel name; LIFETIME adds the accountant's totals and the base
        self._counts = dict.fromkeys(("JOB_SUBMITTED", "JOB_COMPLETED", "JOB_PREEMPTIONS", "JOB_CANCELLED",
                                      "JOB_FAILED", "ENGINE_TOKENS"), 0)
        self._channels: dict[str, Any] = {}

    # -- wiring -----------------------------------------------------------------------------------

    def handlers(self) -> dict[str, Callable[[dict[str, Any], CommandOrigin], dict[str, Any] | None]]:
        """The executive's own commands, by name (the node registers them with the link)."""
        return {"MODE_SET": self._mode_set, "POWER_LEVEL_SET": self._power_level_set,
                "ENGINE_RESTART": self._engine_restart, "FDIR_RULE_ENABLE": self._fdir_rule_enable}

    def on_mode_change(self, previous: str, mode: str, cause: str) -> None:
        """ModeMachine's listener: an event and the housekeeping value."""
        self._downlink.emit_event("MODE_CHANGED", previous=self._d.enum_value("MODE", previous),
                                  mode=self._d.enum_value("MODE", mode), cause=self._d.enum_value("MODE_CAUSE", cause))

    def on_token(self, event: Any) -> None:
        """The engine supervisor's per-token callback (its thread): append, count, save every SAVE_EVERY."""
        with self._lock:
            run = self._runs.get(event.job_id)
            if run is None or event.index != len(run.tokens):
                return
            run.tokens.append(event.token)
            run.rng_state = event.rng_state
            if run.job.stream:
                run.pieces.append((event.token, event.piece))
            self._counts["ENGINE_TOKENS"] += 1
            self._token_times.append(time.monotonic())
            due = len(run.tokens) - run.saved_n >= SAVE_EVERY
        self._acct.tokens(event.job_id, 1)
        if due:
            self._save_progress(run)

    def on_done(self, engine_job: Any) -> None:
        """The engine supervisor's end-of-job callback (its thread): the next tick takes it."""
        self._ended.put(engine_job)

    # -- commands ---------------------------------------------------------------------------------

    def submit(self, job: Job) -> None:
        """A job newly stored by JOB_SUBMIT joins the table."""
        with self._lock:
            self._runs[job.job_id] = _Run(job)
            self._counts["JOB_SUBMITTED"] += 1

    def cancel(self, job_id: int) -> int:
        """JOB_CANCEL: tokens made so far; CommandFailure if there is nothing to cancel."""
        with self._lock:
            run = self._runs.get(job_id)
            if run is None:
                found = self._store.job(job_id)
                if found is None:
                    raise CommandFailure("UNKNOWN_JOB", f"no job {job_id} onboard")
                raise CommandFailure("JOB_ENDED", f"job {job_id} has ended ({found[1]})")
            done = len(run.tokens)
            if run.cancel:
                return done
            run.cancel = True
            was = run.state
            if was != "stopping":
                run.state = "stopping"
        # engine calls outside the lock: the engine's thread takes it in on_token
        if was == "running":
            self._engine.preempt(job_id)
        elif was == "queued" and run.tokens:
            # its text needs the tokenizer: the engine answers a job whose tokens already reach
            # max_tokens at once, without running the model
            self._engine.generate(self._prompt_ids(run), done, run.job.temperature, run.job.top_k, run.job.top_p,
                                  run.job.seed, job_id=job_id, resume_tokens=list(run.tokens), rng_state=run.rng_state)
        elif was == "queued":
            self._finish(run, "cancelled", "")
        return done

    def _mode_set(self, args: dict[str, Any], origin: CommandOrigin) -> dict[str, Any]:
        target = self._d.enums["MODE"].name_of(args["mode"])
        try:
            self._modes.request(target, "COMMAND")
        except ModeRefused as exc:
            raise CommandFailure("MODE_REFUSED", str(exc)) from None
        self._commanded_standby = target == "STANDBY"
        return {"mode": args["mode"]}

    def _power_level_set(self, args: dict[str, Any], origin: CommandOrigin) -> dict[str, Any]:
        level = args["max_level"]
        if level >= len(self.config.levels):
            raise CommandFailure("BAD_ARGUMENT", f"max_level {level}: the table has levels 0 to "
                                                 f"{len(self.config.levels) - 1}")
        with self._lock:
            self._commanded_max_level = level
        self._cap_level(level)
        return {"max_level": level}

    def _cap_level(self, level: int) -> None:
        with self._lock:
            self._max_level = level
            self._scheduler = self._make_scheduler()
        self._downlink.emit_event("SCHED_MAX_LEVEL_SET", max_level=level)

    def _fdir_rule_enable(self, args: dict[str, Any], origin: CommandOrigin) -> dict[str, Any]:
        with self._lock:  # the loop evaluates the rules under the same lock
            try:
                self._fdir.enable(args["rule"], args["enabled"])
            except KeyError:
                raise CommandFailure("BAD_ARGUMENT", f"no FDIR rule {args['rule'][:64]!r}; rules: "
                                                     f"{', '.join(self._fdir.rules)}") from None
        self._downlink.emit_event("FDIR_RULE_SET", rule=args["rule"], state="enabled" if args["enabled"] else "disabled")
        return {"rule": args["rule"], "enabled": args["enabled"]}

    def _engine_restart(self, args: dict[str, Any], origin: CommandOrigin) -> None:
        try:
            self._engine.restart()
        except Exception as exc:  # EngineError: a failed engine that still does not load
            raise CommandFailure("ENGINE_UNAVAILABLE", str(exc)) from None

    def _make_scheduler(self) -> Scheduler:
        c = self.config
        levels = c.levels if self._max_level < 0 else c.levels[:self._max_level + 1]
        return Scheduler(levels, c.n_batch, aging_per_s=c.aging_per_s, hysteresis=c.hysteresis,
                         horizon_min_s=c.horizon_min_s)

    # -- start, loop, stop ------------------------------------------------------------------------

    def start(self) -> None:
        """Take up the stored queue (progress and accounts included), leave BOOT, start the loop."""
        self._base = self._counter_store.load()
        for job in self._store.queued_jobs():
            run = _Run(job)
            progress = self._store.progress(job.job_id)
            if progress is not None:
                run.tokens = list(progress.tokens)
                run.rng_state = progress.rng_state
                run.saved_n = run.streamed_n = len(run.tokens)
                run.preemptions = progress.preemptions
                run.restarts = progress.restarts + 1  # the node stopped or died while it was under way
                self._acct.restore(job.job_id, len(run.tokens), progress.joules, progress.compute_s)
            self._runs[job.job_id] = run
        self._modes.start()
        self._thread = threading.Thread(target=self._loop, name="executive", daemon=True)
        self._thread.start()

    def stop(self, engine_stop: Callable[[], object]) -> None:
        """Stop the loop, then the engine (engine_stop: its jobs end at a token boundary), then
        save what they made."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        engine_stop()
        self._take_ended(shutting_down=True)
        with self._lock:
            runs = [run for run in self._runs.values() if run.tokens and len(run.tokens) > run.saved_n]
        for run in runs:
            self._save_progress(run)
        self._save_counters()

    def _loop(self) -> None:
        period = 1.0 / self.config.tick_hz
        due = time.monotonic()
        while not self._stop.wait(max(0.0, due - time.monotonic())):
            started = time.monotonic()
            self._lateness.append((started, started - due))
            try:
                self.tick()
            except Exception:  # a bug in one tick must not end the node's loop
                log.exception("executive tick failed")
            self._tick_us = (time.monotonic() - started) * 1e6
            if self._on_tick is not None:
                self._on_tick()
            due += period
            if time.monotonic() - due > period:  # more than a whole period behind: skip, do not burst
                self._overruns += 1
                due = time.monotonic()

    def tick(self) -> None:
        """One pass: sensors, accounting, ended jobs, mode, decision, engine, streams, housekeeping."""
        now_mono = time.monotonic()
        dt, self._last_tick = now_mono - self._last_tick, now_mono
        reading = self._sensors.read()
        if not reading.in_eclipse:
            self._sunlit_solar_w = reading.solar_w
        self._acct.charge(dt, reading.compute_w)
        self._take_ended(shutting_down=False)
        self._watch_engine()
        self._auto_mode(reading)
        decision = self._decide(reading)
        self._apply(decision)
        self._flush_streams()
        self._publish(reading, decision)
        self._run_fdir()

    # -- the tick's parts -------------------------------------------------------------------------

    def _take_ended(self, shutting_down: bool) -> None:
        while True:
            try:
                engine_job = self._ended.get_nowait()
            except queue.Empty:
                return
            with self._lock:
                run = self._runs.get(engine_job.job_id)
            if run is None:
                continue
            self._ended_job(run, engine_job, shutting_down)

    def _ended_job(self, run: _Run, engine_job: Any, shutting_down: bool) -> None:
        if engine_job.error is not None and self._engine.state in ("failed", "stopped"):
            # the engine gave up (or is stopping), not the job: it waits for the engine
            with self._lock:
                run.tokens, run.rng_state = list(engine_job.tokens), engine_job.rng_state
                run.state = "queued"
            self._save_progress(run)
            return
        if engine_job.error is not None:
            with self._lock:
                self._runs.pop(run.job.job_id, None)
                self._counts["JOB_FAILED"] += 1
            self._store.fail_job(run.job.job_id)
            self._acct.forget(run.job.job_id)
            self._downlink.emit_event("JOB_FAILED", job_id=run.job.job_id, detail=engine_job.error[:200])
            return
        result = engine_job.result
        with self._lock:
            run.tokens = list(result.tokens)
            run.rng_state = result.rng_state
            run.restarts += result.restarts
            run.text = result.text
        if run.cancel:
            self._finish(run, "cancelled", result.text)
        elif result.stop_reason != "request":
            self._finish(run, result.stop_reason, result.text)
        else:  # preempted (or stopped with the node): back to the queue, progress saved
            with self._lock:
                run.state = "queued"
                if not shutting_down:
                    run.preemptions += 1
                    self._counts["JOB_PREEMPTIONS"] += 1
            self._save_progress(run)
            if not shutting_down:
                self._downlink.emit_event("JOB_PREEMPTED", job_id=run.job.job_id, tokens_done=len(run.tokens))

    def _finish(self, run: _Run, stop_reason: str, text: str) -> None:
        """Store the job's result (which ends it) and queue it for the downlink."""
        job = run.job
        account = self._acct.job(job.job_id)
        n = len(run.tokens)
        fields = {
            "job_id": job.job_id, "text": text, "tokens": n, "token_ids": list(run.tokens) if job.token_ids else [],
            "stop_reason": stop_reason,
            "prompt_tokens": len(self._prompt_ids(run)), "compute_s": account.compute_s,
            "tokens_per_s": n / account.compute_s if account.compute_s > 0 else 0.0,
            "joules": account.joules, "joules_per_token": account.joules / n if n else 0.0,
            "cost_usd": account.cost_usd, "usd_per_token": account.cost_usd / n if n else 0.0,
            "preemptions": run.preemptions, "restarts": run.restarts, "finished": self.clock(),
        }
        data = encode_result(fields, self._d)
        with self._lock:  # the stream's last tokens go before the result, never after it
            pieces, first = run.pieces, run.streamed_n
            run.pieces = []
        if pieces:
            self._downlink.send_tokens(job.job_id, first, pieces)
        self._downlink.publish_result(job.job_id, data, job.spi)
        with self._lock:
            self._runs.pop(job.job_id, None)
            self._counts["JOB_CANCELLED" if stop_reason == "cancelled" else "JOB_COMPLETED"] += 1
        self._acct.forget(job.job_id)
        self._save_counters()
        if stop_reason == "cancelled":
            self._downlink.emit_event("JOB_CANCELLED", job_id=job.job_id, tokens_done=n)
        self._downlink.emit_event("JOB_FINISHED", job_id=job.job_id,
                                  stop_reason=self._d.enum_value("JOB_STOP", stop_reason), tokens=n,
                                  joules=float(account.joules), result_octets=len(data))

    def _save_progress(self, run: _Run) -> None:
        with self._lock:
            if run.rng_state is None or not run.tokens:
                return
            tokens, state = list(run.tokens), run.rng_state
            preemptions, restarts = run.preemptions, run.restarts
        account = self._acct.job(run.job.job_id)
        self._store.save_progress(run.job.job_id, tokens, state, joules=account.joules,
                                  compute_s=account.compute_s, preemptions=preemptions, restarts=restarts)
        with self._lock:
            run.saved_n = max(run.saved_n, len(tokens))

    def _watch_engine(self) -> None:
        restarts = self._engine.restarts
        if restarts != self._engine_restarts_seen:
            self._engine_restarts_seen = restarts
            cause = (self._engine.last_restart_cause or "died").upper()
            self._downlink.emit_event("ENGINE_RESTARTED", cause=self._d.enum_value("ENGINE_RESTART_CAUSE", cause),
                                      count=restarts)
        failed = self._engine.state == "failed"
        if failed and not self._engine_failed_reported:
            self._downlink.emit_event("ENGINE_FAILED", detail=str(self._engine.failed)[:200])
        self._engine_failed_reported = failed
        fault = self._engine.fault
        if fault is not None and fault != self._engine_fault_reported:
            self._downlink.emit_event("ENGINE_ISOLATED", fault=self._d.enum_value("ENGINE_FAULT", fault.upper()))
        self._engine_fault_reported = fault

    def _run_fdir(self) -> None:
        """Evaluate the FDIR rules on this tick's housekeeping and the link's, and act."""
        channels = dict(self._channels)
        try:
            channels.update(self._link_channels())
        except Exception:  # the link's values are evidence, not a reason to skip the rules
            log.exception("link channels for FDIR")
        with self._lock:
            firings = self._fdir.evaluate(time.monotonic(), channels)
            self._fdir_holds = {name for name in self._fdir_holds if self._fdir.holding(name)}
            caps = {name for name in self._fdir_caps if self._fdir.holding(name)}
            # a lowered power level is a response to a condition, not a new setting: it goes with it
            uncap = bool(self._fdir_caps) and not caps and self._max_level != self._commanded_max_level
            self._fdir_caps = caps
        if uncap:
            self._cap_level(self._commanded_max_level)
        for firing in firings:
            self._act(firing)
        self._channels = {**self._channels, "FDIR_FIRINGS": sum(self._fdir.firings.values()),
                          "FDIR_RULES_DISABLED": self._fdir.disabled}

    def _act(self, firing: Firing) -> None:
        rule = self._fdir.rules[firing.rule]
        self._downlink.emit_event("FDIR_FIRED", rule=firing.rule, channel=rule.channel, value=float(firing.value),
                                  action=firing.action, latency_ms=min(int(firing.latency_s * 1000), 0xFFFFFFFF),
                                  late=", LATE" if firing.late else "", count=self._fdir.firings[firing.rule])
        try:
            if firing.action == "SAFE":  # left by command only: auto_inference never leaves SAFE
                self._modes.request("SAFE", "FDIR")
            elif firing.action == "STANDBY":
                with self._lock:
                    self._fdir_holds.add(firing.rule)
                if self._modes.mode == "INFERENCE":
                    self._modes.request("STANDBY", "FDIR")
            elif firing.action == "POWER_DOWN":
                with self._lock:
                    self._fdir_caps.add(firing.rule)
                self._cap_level(max(0, (self._level if self._level >= 0 else len(self.config.levels) - 1) - 1))
            elif firing.action == "ENGINE_RESTART":
                cause = _RESTART_CAUSE_BY_CHANNEL.get(rule.channel)
                if self._engine.state == "failed":  # a whole model load: not on the loop's time
                    self._revive_engine(firing.rule, cause)
                else:
                    self._engine.restart(cause)
            elif firing.action == "LINK_RESET" and self._link_reset is not None:
                self._link_reset()
            elif firing.action == "SCRUB_REPAIR":
                self._engine.repair()
        except Exception as exc:  # a refused mode change, an engine that still does not load
            log.warning("FDIR %s: %s failed: %s", firing.rule, firing.action, exc)

    def _revive_engine(self, rule: str, cause: str | None) -> None:
        """Restart a failed engine on a thread of its own: loading the model takes seconds (a
        minute at worst), through which the loop must keep ticking (sensors, FDIR, watchdog)."""
        if self._reviving is not None and self._reviving.is_alive():
            return

        def revive() -> None:
            try:
                self._engine.restart(cause)
            except Exception as exc:  # EngineError: it still does not load; ENGINE_FAILED says so
                log.warning("FDIR %s: ENGINE_RESTART failed: %s", rule, exc)

        self._reviving = threading.Thread(target=revive, name="engine-revive", daemon=True)
        self._reviving.start()

    def _auto_mode(self, reading: SensorReading) -> None:
        """auto_inference: STANDBY -> INFERENCE once energy allows, unless STANDBY was commanded
        or an FDIR rule that put the node in STANDBY still holds."""
        if (self.config.auto_inference and self._modes.mode == "STANDBY" and not self._commanded_standby
                and not self._fdir_holds and reading.battery_wh > self.config.battery_floor_wh):
            try:
                self._modes.request("INFERENCE", "AUTO")
            except ModeRefused:  # a command changed the mode in between
                pass

    def _decide(self, reading: SensorReading) -> Decision | None:
        """The scheduler's decision, or None when it is not consulted (self._reason says why)."""
        if self._modes.mode != "INFERENCE":
            self._reason = "IDLE_MODE"
            return None
        if self._engine.state in ("failed", "stopped"):
            self._reason = "IDLE_ENGINE"
            return None
        with self._lock:
            table = [SchedJob(id=run.job.job_id, priority=run.job.priority,
                              tokens_remaining=max(0, run.job.max_tokens - len(run.tokens)),
                              tokens_done=len(run.tokens), arrival_s=run.job.submitted, deadline_s=run.job.deadline,
                              running=run.state == "running")
                     for run in self._runs.values() if not run.cancel]
            scheduler = self._scheduler
        energy = Energy.from_reading(reading, floor_wh=self.config.battery_floor_wh, compute_w=reading.compute_w,
                                     sunlit_solar_w=self._sunlit_solar_w)
        thermal = Thermal(reading.board_temperature_c, self.config.thermal_limit_c, self.config.thermal_margin_c)
        decision = scheduler.decide(self.clock(), table, energy, thermal)
        self._reason = decision.reason
        if (decision.reason == "RUN" and self._max_level >= 0
                and self._max_level < len(self.config.levels) - 1):
            self._reason = "CAPPED_COMMAND"
        return decision

    def _apply(self, decision: Decision | None) -> None:
        """Preempt what left the batch, start what joined it (token boundaries: the engine's), set power."""
        batch = set(decision.batch_ids) if decision is not None else set()
        starts: list[_Run] = []
        stops: list[int] = []
        with self._lock:
            for job_id, run in self._runs.items():
                if run.state == "running" and job_id not in batch:
                    run.state = "stopping"
                    stops.append(job_id)
                elif run.state == "queued" and job_id in batch and not run.cancel:
                    starts.append(run)
        self._level = decision.level if decision is not None else -1
        level = self.config.levels[self._level] if self._level >= 0 else None
        rate = level.tokens_per_s if level is not None and self.config.cap_throughput else None
        if rate != self._rate:  # before any start: the cap holds from a job's first token
            self._rate = rate
            self._engine.set_rate(rate)
        for job_id in stops:  # outside the lock, as in cancel()
            self._engine.preempt(job_id)
        for run in starts:
            self._start(run)
        with self._lock:
            running = any(run.state == "running" for run in self._runs.values())
        compute_w = level.watts if level is not None and running else 0.0
        if compute_w != self._compute_w:
            self._compute_w = compute_w
            self._sensors.report_compute_power(compute_w)

    def _start(self, run: _Run) -> None:
        job = run.job
        with self._lock:
            if run.state != "queued" or run.cancel:  # cancelled since the decision
                return
            resume, state = list(run.tokens), run.rng_state
        try:
            self._engine.generate(self._prompt_ids(run), job.max_tokens, job.temperature, job.top_k, job.top_p,
                                  job.seed, job_id=job.job_id, resume_tokens=resume,
                                  rng_state=state if resume else None)
        except Exception as exc:  # the engine refused (restarting, failed): try again next tick
            log.warning("job %d not started: %s", job.job_id, exc)
            return
        with self._lock:
            cancelled = run.cancel
            run.state = "stopping" if cancelled else "running"
        if cancelled:  # JOB_CANCEL came while it was being sent: it ends as cancelled
            self._engine.preempt(job.job_id)
            return
        self._downlink.emit_event("JOB_STARTED", job_id=job.job_id, tokens_done=len(resume))

    @staticmethod
    def _prompt_ids(run: _Run) -> list[int]:
        return list(run.job.prompt_ids)

    def _flush_streams(self) -> None:
        sends = []
        with self._lock:
            for run in self._runs.values():
                if run.pieces:
                    sends.append((run.job.job_id, run.streamed_n, run.pieces))
                    run.streamed_n += len(run.pieces)
                    run.pieces = []
        for job_id, first, pieces in sends:
            self._downlink.send_tokens(job_id, first, pieces)

    def _publish(self, reading: SensorReading, decision: Decision | None) -> None:
        now = time.monotonic()
        while self._token_times and now - self._token_times[0] > 1.0:
            self._token_times.popleft()
        while self._lateness and now - self._lateness[0][0] > _LATENESS_WINDOW_S:
            self._lateness.popleft()
        late = sorted(x for _, x in self._lateness)
        with self._lock:
            running = sum(1 for run in self._runs.values() if run.state == "running")
            queued = len(self._runs)
        d = self._d
        channels: dict[str, Any] = {
            "MODE_CURRENT": d.enum_value("MODE", self._modes.mode),
            "EPS_BATTERY_WH": reading.battery_wh, "EPS_BATTERY_SOC": reading.state_of_charge,
            "EPS_SOLAR_W": reading.solar_w, "EPS_LOAD_W": reading.load_w, "EPS_COMPUTE_W": reading.compute_w,
            "EPS_IN_ECLIPSE": reading.in_eclipse, "EPS_ECLIPSE_ENTRY_S": min(reading.eclipse_entry_in_s, 3e38),
            "EPS_ECLIPSE_EXIT_S": min(reading.eclipse_exit_in_s, 3e38),
            "THERM_BOARD_C": reading.board_temperature_c,
            "ENGINE_STATE": d.enum_value("ENGINE_STATE", self._engine.state.upper()),
            "ENGINE_RESTARTS": self._engine.restarts,
            "ENGINE_FAULT": d.enum_value("ENGINE_FAULT", (self._engine.fault or "none").upper()),
            "ENGINE_HEARTBEAT_AGE_S": self._engine.heartbeat_age_s,
            "ENGINE_TOKEN_SILENCE_S": self._engine.token_silence_s,
            "ENGINE_TOKENS_PER_S": float(len(self._token_times)),
            "SCHED_LEVEL": self._level, "SCHED_REASON": d.enum_value("SCHED_REASON", self._reason),
            "SCHED_MAX_LEVEL": self._max_level,
            "JOB_QUEUE_DEPTH": queued, "JOB_RUNNING": running,
            "EXEC_TICK_US": self._tick_us, "EXEC_OVERRUNS": self._overruns,
            "EXEC_LATE_MS_P99": late[min(len(late) - 1, int(0.99 * len(late)))] * 1e3 if late else 0.0,
        }
        if decision is not None:
            channels.update(decision.housekeeping())
            channels["SCHED_REASON"] = d.enum_value("SCHED_REASON", self._reason)
        else:
            channels.update(SCHED_BATCH=0, SCHED_PREEMPTED=0)
        channels.update(self._acct.totals())
        channels.update(self._lifetime())
        tokens = channels["ACCT_TOKENS"]
        channels["ACCT_J_PER_TOKEN"] = channels["ACCT_JOULES"] / tokens if tokens else 0.0
        channels["ACCT_USD_PER_TOKEN"] = channels["ACCT_USD"] / tokens if tokens else 0.0
        self._channels = channels
        if now - self._counters_saved >= COUNTERS_SAVE_S:
            self._save_counters()

    def _lifetime(self) -> dict[str, float]:
        """The LIFETIME counters: this start's, on top of what the last start left."""
        current = dict(self._acct.totals())
        with self._lock:
            current.update(self._counts)
        return {name: self._base.get(name, 0) + current[name] for name in LIFETIME}

    def _save_counters(self) -> None:
        self._counter_store.save(self._lifetime())
        self._counters_saved = time.monotonic()

    def channels(self) -> dict[str, Any]:
        """Housekeeping values as of the last tick (the link's channel source)."""
        return self._channels

    def lateness_ms(self) -> list[float]:
        """Main-loop lateness of the ticks of the last 10 s, ms (for benchmarks)."""
        return [x * 1e3 for _, x in self._lateness]
