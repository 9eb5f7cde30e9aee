"""`hil run`: one scenario (hil/scenario.py) flown by the node, judged and reported.

    report = run_scenario("scenarios/nominal.toml", seed=1, out_dir=Path("out"))   # a campaign calls this

What runs, all on this machine unless ports say otherwise:

    Environment ── world thread ── RigSensorBus ── pty ── flight run --sensors hil ── engine
     (K sim s per wall s)  │                                  │ radio pty                  ▲
                           └── contact ── LinkRelay(accel=K) ─┘              SEU flips     │
                                              │ pty                     (/proc/PID/mem)    │
                                         GroundClient ── operator thread     world thread ─┘

- The world thread advances the environment by K x the wall time elapsed, in steps of at most one
  simulated second, serving a READING for each step, reading the node's compute power back, gating
  the radio by the environment's contact (and the scenario's outages), and writing the upsets the
  radiation model draws into the engine child (ENGINE_PID from housekeeping, checked to be the
  flight's child). It keeps the battery's least margin over its floor and the board's peak.
- The main thread plays the timeline: ground actions go to the operator thread (a submission due
  out of contact waits for the next pass, as an operator's would), faults are applied at once. It
  records the housekeeping and events the ground receives (live and played back) and samples the
  series the figures are drawn from.
- After the timeline the environment is held and the link kept up, the post-test downlink, until
  every result is in and every upset repaired or a scrub period old, for at most one scrub period
  plus DRAIN_S wall seconds: a result still missing then is lost.

Times: the scenario's are simulated seconds; a job's deadline goes up as onboard (wall) time,
now + deadline_s / K; the [link] timers are converted by hil/flight_config.py.
"""
from __future__ import annotations

import heapq
import itertools
import logging
import math
import queue
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from flight.engine import default_model_path
from flight.engine.manifest import DEFAULT_BLOCK_OCTETS, make_manifest, manifest_path
from flight.link.job_result import ResultDecodeError, decode_result
from flight.link.keys import write_new_key_file
from ground.client import CommandError, EventRecord, GroundClient
from hil import criteria, flight_config, report as report_files
from hil.env.environment import EnvConfig, Environment, EnvState
from hil.env.radiation import flip_in_process
from hil.flight_process import FlightProcess
from hil.link import LinkRelay
from hil.scenario import MAX_ACCEL, Command, Fault, Scenario, ScenarioError, Submit, impairments, jittered, load
from hil.sensor_bus import RigSensorBus

log = logging.getLogger(__name__)

TICK_S = 0.05  # main loop and world thread period, wall seconds
DRAIN_S = 30.0  # the post-test downlink's longest wait beyond one scrub period, wall seconds
MAX_SAMPLES = 3000  # points per plotted series
OPERATOR_WAIT_SIM_S = 60.0
SYNTH_N_CTX = 2048  # the node's default context, so no [engine] n_ctx is needed
MODE_NAMES = {"BOOT": 0, "SAFE": 1, "STANDBY": 2, "INFERENCE": 3}


@dataclass(frozen=True)
class Ports:
    """Attach to a board instead of starting flight run: its radio and sensor-bus serial devices."""

    flight: str | None = None
    ground: str | None = None
    sensor: str | None = None

    @property
    def attached(self) -> bool:
        return any((self.flight, self.ground, self.sensor))


def run_scenario(scenario_path: str | Path, *, seed: int | None = None, out_dir: str | Path,
                 accel: float | None = None, model: str | Path | None = None,
                 overrides: dict[str, Any] | None = None, ports: Ports | None = None,
                 progress: bool = False) -> dict[str, Any]:
    """Run the scenario and return its report (also written to out_dir). ScenarioError (one line)
    for a scenario, model or port that cannot be used; RunError if the run could not be carried out."""
    scenario = load(scenario_path)
    if overrides:
        scenario = scenario.with_overrides(overrides)
    return Run(scenario, seed=scenario.seed if seed is None else seed, out_dir=Path(out_dir),
               accel=scenario.accel if accel is None else accel, model=model, ports=ports or Ports(),
               progress=progress).execute()


class RunError(RuntimeError):
    """The run could not be carried out (the flight did not start, the link failed); one line."""


@dataclass
class _Sampled:
    columns: dict[str, list[float]] = field(default_factory=dict)

    def add(self, **values: float) -> None:
        for key, value in values.items():
            self.columns.setdefault(key, []).append(float(value))


class Run:
    def __init__(self, scenario: Scenario, *, seed: int, out_dir: Path, accel: float, model: str | Path | None,
                 ports: Ports, progress: bool):
        if not 0 < accel <= MAX_ACCEL:
            raise ScenarioError(f"accel must be above 0 and at most {MAX_ACCEL:g}, got {accel!r}")
        if ports.attached and (ports.ground or not (ports.flight and ports.sensor)):
            raise ScenarioError("to attach to a board give --flight-port and --sensor-port (the rig's ground "
                                "client always works through the link emulator; --ground-port is not supported yet)")
        if ports.attached and any(f.kind in ("kill9", "seu_burst") for f in scenario.faults):
            raise ScenarioError("kill9 and seu_burst need the flight process on this machine, not an attached board")
        self.scenario, self.seed, self.accel, self.ports, self.progress = scenario, seed, accel, ports, progress
        self.out = out_dir
        self.work = out_dir / "work"
        shutil.rmtree(self.work, ignore_errors=True)  # a run starts from a node and a ground that know nothing
        self.work.mkdir(parents=True)
        self.model = self._model(model)
        env_table = dict(scenario.environment)
        env_table.setdefault("weights_octets", self.model.stat().st_size)  # the radiation's target is the model flown
        self.env = Environment(EnvConfig.from_dict(env_table), scenario.start_unix, seed)
        self.floor_wh = self.env.state.battery_floor_wh
        tables = flight_config.compose(scenario.flight, accel, self.floor_wh)
        self.node_config = flight_config.write(tables, self.work / "flight.toml")
        self.limit_c = scenario.criteria.get("temperature_limit_c",
                                             self.node_config.values["scheduler"]["thermal_limit_c"])
        self.scrub_period_s = float(self.node_config.values["engine"]["scrub_period_s"])
        self.rng = np.random.default_rng(seed)
        self.fault_rng = np.random.default_rng([seed, 1])  # its own stream: the SEU draws do not move it
        # shared between the threads; each written by one thread only
        self.sim_s = 0.0
        self.engine_pid = 0
        self.mode = -1  # unknown until the first housekeeping
        self.outage = False
        self.extra_w = 0.0
        self.hold = threading.Event()  # the world stands still (start-up, post-test downlink)
        self.hold.set()
        self.force_contact = False
        self.min_margin_wh = math.inf
        self.max_board_c = -math.inf
        self.upsets: list[criteria.Upset] = []
        self.void_upsets = 0
        self.restarts: list[tuple[float, int]] = []
        self.jobs: dict[int, criteria.JobRecord] = {}
        self.not_submitted = 0
        self.ground_errors: list[str] = []
        self.events: list[tuple[str, dict[str, Any], float]] = []
        self._event_keys: set[tuple[Any, ...]] = set()  # an event heard live and played back counts once
        self.brownouts: list[list[float]] = []  # [start, end] of each, wall Unix time (the node's clock)
        self.modes: list[tuple[float, int]] = []  # (wall Unix time, mode): housekeeping and MODE_CHANGED
        self.hk: dict[str, Any] = {}
        self.series = _Sampled()
        self._last_tokens: tuple[float, float] | None = None  # (monotonic, ENGINE_TOKENS) at the last sample
        self._stop = threading.Event()
        self.world_error: str | None = None
        self.flight: FlightProcess | None = None

    def _model(self, model: str | Path | None) -> Path:
        if model is not None:
            path = Path(model)
            if not path.is_file():
                raise ScenarioError(f"model {path}: no such file")
            if not manifest_path(path).exists():
                raise ScenarioError(f"model {path} has no manifest: make one with `flight manifest {path}`")
            return path
        if self.scenario.model == "synthetic":
            from hil.synth_gguf import write_llama_gguf
            path = write_llama_gguf(self.work / "synthetic.gguf", n_ctx=SYNTH_N_CTX)
            make_manifest(path)
            return path
        return default_model_path()

    # --- the run -------------------------------------------------------------------------------
    def execute(self) -> dict[str, Any]:
        wall_start = time.monotonic()
        self.started_unix = time.time()
        flight_log, ground_log = self.out / "flight.log", self.out / "ground.log"
        flight_log.unlink(missing_ok=True)  # this run's starts only (a restart appends to it)
        handler = logging.FileHandler(ground_log, mode="w")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        watched = [logging.getLogger(name) for name in ("ground", "hil")]
        for logger in watched:
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)
        bus = relay = flight = gc = world = None
        try:
            bus = RigSensorBus(self.ports.sensor)
            relay = LinkRelay(self.ports.flight, None, baud=self.scenario.link["baud"],
                              impairments=impairments(self.scenario.link, self.seed), accel=self.accel)
            keys = self.work / "keys.json"
            write_new_key_file(keys)
            world = threading.Thread(target=self._world, args=(bus, relay), name="hil world", daemon=True)
            self.bus, self.relay = bus, relay
            world.start()
            if not self.ports.attached:
                data = self.work / "node-data"
                data.mkdir(exist_ok=True)
                flight = FlightProcess(["--port", relay.flight_path, "--keys", str(keys), "--data-dir", str(data),
                                        "--config", str(self.work / "flight.toml"), "--model", str(self.model),
                                        "--sensors", "hil", "--sensor-port", bus.node_path, "--log-level", "INFO"],
                                       flight_log)
                try:
                    flight.start()
                except RuntimeError as exc:
                    raise RunError(str(exc)) from None
            self.flight = flight
            timers = flight_config.wall_link_timers(self.scenario.flight, self.accel)
            gc = GroundClient(relay.ground_path, keys=keys, archive=self.work / "ground.sqlite",
                              sack_interval_s=min(1.0, timers["contact_timeout_s"] / 4))
            gc.connect()
            self.gc = gc
            self._play(gc)
        finally:
            if gc is not None:
                gc.close()
            if flight is not None:
                flight.stop()
            self._stop.set()
            if world is not None:
                world.join()  # before the bus and the relay close: it writes to both
            if relay is not None:
                relay.close()
            if bus is not None:
                bus.close()
            for logger in watched:
                logger.removeHandler(handler)
            handler.close()
        result = self._report(time.monotonic() - wall_start)
        report_files.write(result, self.series.columns, self.out)
        return result

    def _world(self, bus: RigSensorBus, relay: LinkRelay) -> None:
        try:
            self._turn(bus, relay)
        except Exception as exc:  # a model refusing its state: the run cannot go on, visibly
            log.exception("the world thread failed")
            self.world_error = f"environment failed: {type(exc).__name__}: {exc}"

    def _turn(self, bus: RigSensorBus, relay: LinkRelay) -> None:
        last = time.monotonic()
        while not self._stop.wait(TICK_S / 2):
            now = time.monotonic()
            elapsed, last = (now - last) * self.accel, now
            self.env.set_compute_power(bus.compute_w + self.extra_w)
            if self.hold.is_set():
                states = [self.env.state]
            else:
                steps = max(1, math.ceil(elapsed))  # a READING at least once a simulated second
                states = [self.env.step(elapsed / steps) for _ in range(steps)]
                self.sim_s = self.env.state.t - self.scenario.start_unix
            for state in states:
                bus.serve(state)
                self.min_margin_wh = min(self.min_margin_wh, state.battery_wh - state.battery_floor_wh)
                self.max_board_c = max(self.max_board_c, state.board_c)
            relay.set_contact(self.force_contact or (self.env.state.contact and not self.outage))
            for upset in self.env.due_upsets():
                self._flip(upset.offset, upset.bit)

    def _flip(self, offset: int, bit: int) -> None:
        pid = self._engine_pid()
        if pid is None:
            self.void_upsets += 1  # no engine holds the weights in memory now: nothing to upset
            return
        wall = time.time()
        try:
            flip_in_process(pid, self.model, offset, bit)
        except OSError as exc:
            log.warning("upset at octet %d not written into engine %d: %s", offset, pid, exc)
            self.void_upsets += 1
            return
        self.upsets.append(criteria.Upset(wall, offset, pid))

    def _engine_pid(self) -> int | None:
        """The engine child's pid from housekeeping, if it is still the flight process's child."""
        pid, flight = self.engine_pid, self.flight
        if not pid or flight is None or not flight.running or flight.proc is None:
            return None
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        return pid if parent == flight.proc.pid else None

    def _play(self, gc: GroundClient) -> None:
        actions: list[tuple[float, int, Callable[[], None]]] = []
        counter = itertools.count()

        def at(t: float, action: Callable[[], None]) -> None:
            heapq.heappush(actions, (t, next(counter), action))

        operator: queue.Queue[Submit | Command | None] = queue.Queue()
        for item in (*self.scenario.submits, *self.scenario.commands):
            at(item.at_s, lambda item=item: operator.put(item))
        for fault in self.scenario.faults:
            self._schedule(jittered(fault, self.fault_rng, self.scenario.duration_s), at)
        worker = threading.Thread(target=self._operate, args=(gc, operator), name="hil operator", daemon=True)
        worker.start()
        progress = _Progress(self.scenario.name, self.scenario.duration_s) if self.progress else None
        since = 0
        self.hold.clear()  # the world starts now
        try:
            while self.sim_s < self.scenario.duration_s:
                if self.relay.error or self.world_error:
                    raise RunError(self.world_error or f"link emulator failed: {self.relay.error}")
                while actions and actions[0][0] <= self.sim_s:
                    heapq.heappop(actions)[2]()
                since = self._receive(gc, since)
                self._sample()
                if progress is not None:
                    progress.update(self.sim_s, self._status())
                time.sleep(TICK_S)
            self.hold.set()
            self.force_contact = True
            self.relay.set_contact(True)  # now, not at the world thread's next turn: commands follow
            operator.put(None)
            worker.join(timeout=DRAIN_S)
            end = time.monotonic() + self.scrub_period_s + DRAIN_S
            while time.monotonic() < end and (self._missing() or self._unrepaired()):
                since = self._receive(gc, since)
                time.sleep(TICK_S * 4)
            self._receive(gc, self._play_back_everything(gc, since))
            self._missing()  # the last results in, while the archive is open
        finally:
            if progress is not None:
                progress.close()

    def _play_back_everything(self, gc: GroundClient, since: int) -> int:
        """Ask the recorder for every event of the run, as `ground playback` would: the node plays
        back by itself only what it recorded out of contact, and events sent in the seconds before
        it noticed a pass had ended were sent live into a dead radio."""
        since = self._receive(gc, since)
        try:
            gc.await_packet(lambda packet: packet.name == "HK", timeout=DRAIN_S, since=since)  # the link is up
            for attempt in range(3):  # a bad link may lose the command or its completion
                try:
                    gc.send_and_await_completion("RECORDER_PLAYBACK", timeout=self._patience(),
                                                 start=self.started_unix, end=time.time(), kinds=1)
                    break
                except TimeoutError:
                    if attempt == 2:
                        raise
            gc.await_event("REC_PLAYBACK_FINISHED", since=since, timeout=DRAIN_S)
        except (TimeoutError, CommandError) as exc:
            self.ground_errors.append(f"recorder playback: {exc}")
        return since

    def _schedule(self, fault: Fault, at: Callable[[float, Callable[[], None]], None]) -> None:
        end = fault.at_s + fault.duration_s
        at(fault.at_s, lambda: log.info("fault %s %s at simulated %.0f s", fault.kind, fault.params, self.sim_s))
        if fault.duration_s:
            at(end, lambda: log.info("fault %s over at simulated %.0f s", fault.kind, self.sim_s))
        if fault.kind == "kill9":
            at(fault.at_s, self._kill9)
            at(fault.at_s + fault.params["restart_after_s"], self._restart)
        elif fault.kind == "brownout":
            level = fault.params.get("level_wh", self.floor_wh / 2)
            window = [math.inf, math.inf]
            self.brownouts.append(window)

            def sag(to: float | None, edge: int) -> None:
                self.bus.brownout_wh = to
                window[edge] = time.time()
            at(fault.at_s, lambda: sag(level, 0))
            at(end, lambda: sag(None, 1))
        elif fault.kind == "link_outage":
            at(fault.at_s, lambda: setattr(self, "outage", True))
            at(end, lambda: setattr(self, "outage", False))
        elif fault.kind == "seu_burst":
            def burst(count: int = fault.params["count"]) -> None:
                for _ in range(count):
                    self._flip(int(self.rng.integers(0, self.model.stat().st_size)), int(self.rng.integers(0, 8)))
            at(fault.at_s, burst)
        elif fault.kind == "sensor_fail":
            flag = fault.params["mode"]  # "silent" or "garbled": the bus's attribute of that name
            at(fault.at_s, lambda: setattr(self.bus, flag, True))
            at(end, lambda: setattr(self.bus, flag, False))
        elif fault.kind == "hot_case":
            at(fault.at_s, lambda: setattr(self, "extra_w", fault.params["extra_w"]))
            at(end, lambda: setattr(self, "extra_w", 0.0))

    def _kill9(self) -> None:
        assert self.flight is not None  # a kill9 scenario is refused when attached
        self.flight.kill9()
        self.engine_pid = 0

    def _restart(self) -> None:
        # as a watchdog would; in a thread of its own, since start-up takes wall seconds the world
        # and the timeline go on through
        flight = self.flight
        assert flight is not None

        def start() -> None:
            try:
                flight.start()
                log.info("flight run restarted at simulated %.0f s", self.sim_s)
            except RuntimeError as exc:
                self.ground_errors.append(f"restart: {exc}")
        threading.Thread(target=start, name="hil watchdog", daemon=True).start()

    def _operate(self, gc: GroundClient, work: queue.Queue[Submit | Command | None]) -> None:
        """The ground operator: each action in turn, held until the link is up, as an operator's is."""
        while (item := work.get()) is not None:
            while self.sim_s < self.scenario.duration_s and not self._in_contact():
                time.sleep(TICK_S)
            if self.sim_s >= self.scenario.duration_s:  # no pass left: it and the rest stay on the ground
                self.not_submitted += sum(isinstance(i, Submit) for i in [item, *list(work.queue)])
                return
            try:
                if isinstance(item, Submit):
                    deadline = gc.onboard_time() + item.deadline_s / self.accel if item.deadline_s else 0.0
                    job = gc.submit_job(item.prompt, item.max_tokens, priority=item.priority, chat=item.chat,
                                        deadline=deadline, timeout=self._patience())
                    self.jobs[job] = criteria.JobRecord(job, self.sim_s, deadline)
                    log.info("job %d submitted at simulated %.0f s", job, self.sim_s)
                else:
                    gc.send_and_await_completion(item.name, timeout=self._patience(),
                                                 confirm_hazardous=item.confirm_hazardous, **item.args)
                    log.info("%s %s completed at simulated %.0f s", item.name, item.args, self.sim_s)
            except (TimeoutError, CommandError, ValueError) as exc:
                self.ground_errors.append(f"{type(item).__name__.lower()} at {item.at_s:g} s: {exc}")
                log.warning("%s", self.ground_errors[-1])
                if isinstance(item, Submit):
                    self.not_submitted += 1

    def _patience(self) -> float:
        """How long the operator waits for a completion before sending again: a simulated minute,
        within 2 to 10 wall seconds (the link's round trip is wall time, whatever K)."""
        return min(max(OPERATOR_WAIT_SIM_S / self.accel, 2.0), 10.0)

    def _in_contact(self) -> bool:
        return self.force_contact or (self.env.state.contact and not self.outage)

    def _receive(self, gc: GroundClient, since: int) -> int:
        """Housekeeping and events received since the index, recorded; the next index."""
        packets, since = gc.received_since(since)
        for item in packets:
            packet = item.packet
            if packet.name == "HK":
                by_id = gc.dictionary.channel_by_id
                self.hk.update({by_id[cid].name: v for cid, v in packet.fields["channels"].items() if cid in by_id})
                pid = int(self.hk.get("ENGINE_PID", 0) or 0)
                if pid and pid != self.engine_pid:
                    self.restarts.append((time.time(), pid))  # a new engine: upsets in the old one are gone
                self.engine_pid = pid
                mode = self.hk.get("MODE_CURRENT", self.mode)
                self.mode = MODE_NAMES.get(mode, mode) if isinstance(mode, str) else int(mode)
                self.modes.append((item.received, self.mode))
            elif packet.name == "EVENT":
                self._event(gc.event_record(packet))
            elif packet.name == "REC_PLAYBACK":
                for rec in gc.playback_records(packet):
                    if rec.event is not None:
                        self._event(rec.event)
        return since

    def _event(self, record: EventRecord) -> None:
        if record.name == "MODE_CHANGED":  # heard live or played back: the mode even out of contact
            mode = record.args["mode"]
            self.modes.append((record.onboard_time, MODE_NAMES.get(mode, -1) if isinstance(mode, str) else int(mode)))
        # the live and the recorded copy of an event carry times a few ms apart
        key = (record.name, round(record.onboard_time), tuple(sorted(record.args.items())))
        if key not in self._event_keys:
            self._event_keys.add(key)
            self.events.append((record.name, record.args, record.onboard_time))

    def _unrepaired(self) -> bool:
        """An upset younger than a scrub period has no repair yet (the scrubber may still find it)."""
        repairs = [(int(args["block"]), t) for name, args, t in self.events if name == "SCRUB_UPSET_REPAIRED"]
        young = time.time() - self.scrub_period_s
        return any(u.wall_time > young and not any(block == u.offset // DEFAULT_BLOCK_OCTETS and t >= u.wall_time
                                                   for block, t in repairs) for u in self.upsets)

    def _missing(self) -> list[int]:
        return [j for j, rec in self.jobs.items() if rec.result is None and not self._collect(rec)]

    def _collect(self, rec: criteria.JobRecord) -> bool:
        data = self.gc.archive.result(rec.job_id)
        if data is None:
            return False
        try:
            rec.result = decode_result(data)
        except ResultDecodeError as exc:
            self.ground_errors.append(f"job {rec.job_id}: {exc}")
            return False
        return True

    def _sample(self) -> None:
        columns = self.series.columns
        step = self.scenario.duration_s / MAX_SAMPLES
        if columns.get("t_s") and self.sim_s - columns["t_s"][-1] < step:
            return
        s: EnvState = self.env.state
        counters = self.relay.counters()
        tokens = float(self.hk.get("ENGINE_TOKENS", 0) or 0)
        now = time.monotonic()
        previous = self._last_tokens or (now, tokens)
        rate = (tokens - previous[1]) / (now - previous[0]) if now > previous[0] else 0.0
        self._last_tokens = (now, tokens)
        self.series.add(t_s=self.sim_s, soc=s.soc, floor_soc=s.battery_floor_wh / s.battery_capacity_wh,
                        solar_w=s.solar_w, load_w=s.bus_load_w + s.compute_w, compute_w=s.compute_w, board_c=s.board_c,
                        radiator_c=s.radiator_c, limit_c=self.limit_c, mode=self.mode if self.mode >= 0 else math.nan,
                        tokens_per_s=max(rate, 0.0),
                        contact=1.0 if self._in_contact() else 0.0, up_bytes=counters["uplink"]["bytes_passed"],
                        down_bytes=counters["downlink"]["bytes_passed"], submitted=len(self.jobs),
                        delivered=sum(1 for r in list(self.jobs.values()) if r.result is not None or self._collect(r)))

    def _status(self) -> str:
        s = self.env.state
        mode = {v: k for k, v in MODE_NAMES.items()}.get(self.mode, "?")
        delivered = sum(1 for r in list(self.jobs.values()) if r.result is not None)
        return (f"{mode:9} soc {100 * s.soc:5.1f}%  board {s.board_c:5.1f} °C  "
                f"{'contact' if self._in_contact() else 'no contact'}  jobs {delivered}/{len(self.jobs)}")

    # --- the verdict ---------------------------------------------------------------------------
    def _report(self, wall_s: float) -> dict[str, Any]:
        completed = int(self.hk.get("JOB_COMPLETED", 0) or 0)
        counts = criteria.job_counts(list(self.jobs.values()), completed)
        counts["not_submitted"] = self.not_submitted
        results = [r.result for r in self.jobs.values() if r.result is not None]
        tokens = sum(r["tokens"] for r in results)
        joules = sum(r["joules"] for r in results)
        usd = sum(r["cost_usd"] for r in results)
        compute_s = sum(r["compute_s"] for r in results)
        j_per_token = joules / tokens if tokens else None
        usd_per_token = usd / tokens if tokens else None
        scrub = [criteria.ScrubEvent(name, int(args["block"]), t) for name, args, t in self.events
                 if name in ("SCRUB_UPSET_DETECTED", "SCRUB_UPSET_REPAIRED")]
        seu = criteria.seu_outcomes(self.upsets, scrub, self.restarts, self.scrub_period_s)
        firings = [args for name, args, _ in self.events if name == "FDIR_FIRED"]
        checks = [*criteria.results(counts, self.scenario.criteria.get("min_delivered")),
                  criteria.battery(self.min_margin_wh, self.floor_wh),
                  criteria.temperature(self.max_board_c, self.limit_c),
                  criteria.fdir(firings),
                  criteria.deadline_rate(counts, self.scenario.criteria.get("deadline_hit_rate_min", 1.0)),
                  criteria.seu(seu, self.scrub_period_s)]
        if self.brownouts and self.scenario.criteria.get("safe_after_brownout", True):
            checks.append(criteria.brownout([(start, end) for start, end in self.brownouts], self.modes))
        checks.append(criteria.cost(j_per_token, usd_per_token))
        sim_s = min(self.sim_s, self.scenario.duration_s) if self.sim_s else 0.0
        return {
            "scenario": self.scenario.name, "description": self.scenario.description, "seed": self.seed,
            "accel": self.accel, "model": "synthetic" if self.scenario.model == "synthetic" and not self.ports.attached
            else str(self.model),
            "passed": all(c.passed for c in checks), "criteria": [c.as_dict() for c in checks],
            "jobs": counts, "tokens": tokens, "joules_per_token": j_per_token, "usd_per_token": usd_per_token,
            "compute_s": compute_s, "sim_seconds": round(sim_s, 3), "wall_seconds": round(wall_s, 3),
            "time_figures": report_files.time_figures(sim_s=sim_s, wall_s=wall_s, accel=self.accel, tokens=tokens,
                                                      compute_s=compute_s, joules=joules, usd=usd),
            "seu": {"injected": len(self.upsets), "void_no_engine": self.void_upsets, "outcomes": seu},
            "fdir_firings": firings, "flight_starts": self.flight.starts if self.flight else 0,
            "link": self.relay.counters(), "sensor_bus": {"readings_sent": self.bus.readings_sent,
                                                          "from_node": self.bus.counters},
            "ground_errors": self.ground_errors,
        }


class _Progress:
    """The rich progress bar over simulated time, with the node's state beside it."""

    def __init__(self, name: str, total: float):
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                                  TextColumn("{task.completed:>7.0f}/{task.total:.0f} sim s"), TimeElapsedColumn(),
                                  TextColumn("{task.fields[status]}"), console=Console(stderr=True))
        self._task = self._progress.add_task(name, total=total, status="")
        self._progress.start()

    def update(self, done: float, status: str) -> None:
        self._progress.update(self._task, completed=min(done, self._progress.tasks[0].total or done), status=status)

    def close(self) -> None:
        self._progress.stop()
