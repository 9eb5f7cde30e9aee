"""The node's topology: the one place that builds and wires link, stores, executive, engine and
sensors (as an F Prime topology does). `flight run` (flight/cli.py) runs it.

    keys, port ──> LinkService ──(commands)──> JobService, Executive handlers
                        ^                            │
                        │ results, tokens, events    v
    OnboardDb ──> JobStore, ResultStore,      Executive ──> EngineSupervisor ──> engine process
                  AntiReplayCounter, mode,       │  ^             │ scrub reports (its scrubber)
                  Recorder, TLE                  │  │             v
                                                 │  │        WeightScrub (SCRUB_NOW, TEST_INJECT_SEU)
                                                 v  │ power, battery, eclipse, temperature
                                              SensorBackend (sim; hil: the rig's sensor bus;
                                                jetson: sysfs, the EPS board's sensor bus and
                                                OrbitService's eclipses from the uplinked TLE)

Start order, each failure one NodeStartError line before anything stored is touched: the
config (already loaded), the key files, the model file and its weight manifest, the data
directory, the sysfs root (jetson), the serial ports, the engine process (the model is checked
against its manifest and loads; its weight scrubber starts), then the onboard database and its
recorder, the link (the boot count is its first write), the stored TLE and the executive (it
takes up the stored queue, then leaves BOOT). Stop: the executive's loop, the engine at a token boundary with
every running job's progress saved, the link (the port closes), the recorder (its last commit),
the database.
"""
from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import threading
from pathlib import Path
from typing import Any, Callable, Sequence

import serial

from flight.config import SCHEMA, NodeConfig
from flight.engine import EngineError
from flight.engine.manifest import manifest_path
from flight.engine.model_path import default_model_path
from flight.executive.accounting import Accountant
from flight.executive.cost_model import CostModel
from flight.executive.engine_supervisor import EngineSupervisor
from flight.executive.executive import Executive, ExecutiveConfig
from flight.executive.fdir import Fdir
from flight.executive.weight_scrub import WeightScrub
from flight.executive.job_service import JobService
from flight.executive.modes import ModeMachine
from flight.executive.orbit_service import OrbitService
from flight.link.cli_support import serial_error
from flight.link.dictionary import load_dictionary
from flight.link.keys import KeyFileError, KeyRing
from flight.link.serial_port import SerialPort
from flight.link.service import CommandOrigin, LinkConfig, LinkService
from flight.sensors.hil import HilSensors
from flight.sensors.jetson_backend import JetsonSensors
from flight.sensors.reading import SensorBackend
from flight.sensors.sim import SimSensors
from flight.store.anti_replay import AntiReplayCounter
from flight.store.counter_store import PersistedCounters
from flight.store.job_store import JobStore
from flight.store.mode_store import PersistedMode
from flight.store.onboard_db import OnboardDb
from flight.store.recorder import Recorder
from flight.store.result_store import ResultStore
from flight.store.tle_store import PersistedTle

log = logging.getLogger(__name__)

DB_FILE = "onboard.sqlite"


class NodeStartError(Exception):
    """The node cannot start; the message is one line naming the problem."""


def _check_data_dir(path: Path) -> None:
    if not path.exists():
        raise NodeStartError(f"data directory {path} does not exist")
    if not path.is_dir():
        raise NodeStartError(f"data directory {path} is not a directory")
    if not os.access(path, os.R_OK | os.W_OK | os.X_OK):
        raise NodeStartError(f"data directory {path} is not writable")


def _check_jetson(sensors: dict[str, Any]) -> None:
    if not sensors["port"]:
        raise NodeStartError("sensors jetson needs --sensor-port (or [sensors] port): the EPS board's serial line "
                             "(battery and solar do not come from the Jetson)")
    root = Path(sensors["sysfs_root"])
    if not root.is_dir():
        problem = "is not a directory" if root.exists() else "does not exist"
        raise NodeStartError(f"sensors jetson: sysfs root {root} {problem} (--sysfs-root, [sensors] sysfs_root)")


def _model_path(configured: str | None) -> Path:
    try:
        path = Path(configured) if configured else default_model_path()
    except EngineError as exc:
        raise NodeStartError(str(exc)) from None
    try:
        with open(path, "rb") as handle:
            handle.read(4)
    except OSError as exc:
        raise NodeStartError(f"cannot read model {path}: {exc.strerror}") from None
    if not manifest_path(path).is_file():  # the scrubber's reference, made at install
        raise NodeStartError(f"model {path} has no manifest {manifest_path(path).name}: make it when installing "
                             f"the model (flight manifest {path})")
    return path


class Node:
    """The wired node. Node(...) checks and opens everything (NodeStartError); start() runs it."""

    def __init__(self, config: NodeConfig, key_paths: Sequence[str | os.PathLike[str]], data_dir: str | os.PathLike[str],
                 on_tick: Callable[[], object] | None = None):
        self.config = config
        link_cfg, engine_cfg, exe_cfg, sched_cfg = (config["link"], config["engine"], config["executive"],
                                                    config["scheduler"])
        dictionary = load_dictionary()
        try:
            keys = KeyRing.load_all(key_paths)
        except KeyFileError as exc:
            raise NodeStartError(str(exc)) from None
        if keys.recovery_spis == set(keys.spis):
            raise NodeStartError("no operations key: every key given is a recovery key; add the operations key file")
        model = _model_path(engine_cfg["model"])
        self.data_dir = Path(data_dir)
        _check_data_dir(self.data_dir)
        backend = config["sensors"]["backend"]
        if backend == "hil" and not config["sensors"]["port"]:
            raise NodeStartError("sensors hil needs --sensor-port (or [sensors] port): the rig's serial line")
        if backend == "jetson":
            _check_jetson(config["sensors"])
        self.port = SerialPort(link_cfg["port"], link_cfg["baud"])
        try:
            self.port.open()
        except (serial.SerialException, ValueError) as exc:
            self.port.close()
            raise NodeStartError(serial_error(link_cfg["port"], exc)) from None

        self.link: LinkService | None = None
        # sensor faults before the link serves (the jetson backend's discovery) wait for start()
        self._fault_backlog: list[tuple[str, str]] | None = []
        self._fault_lock = threading.Lock()
        self.orbit: OrbitService | None = None  # the jetson backend's eclipse timing, once the database is open
        self.sensors: SensorBackend = SimSensors()
        if backend in ("hil", "jetson"):
            sensor_port = config["sensors"]["port"]
            eps = HilSensors(sensor_port, on_fault=self._on_sensor_fault)
            try:
                eps.start()
            except (serial.SerialException, ValueError) as exc:
                self.port.close()
                raise NodeStartError(serial_error(sensor_port, exc)) from None
            self.sensors = eps if backend == "hil" else JetsonSensors(
                config["sensors"]["sysfs_root"], eps, eclipse=self._eclipse_at,
                board_zone=config["sensors"]["board_zone"], on_fault=self._on_sensor_fault)

        self.executive: Executive | None = None  # the engine's callbacks reach it once it exists
        # auto_restart off: a dead or hung engine is the FDIR rules' to restart (a response that can be disabled)
        self.engine = EngineSupervisor(model, engine_cfg["threads"], engine_cfg["n_ctx"], simd=engine_cfg["simd"],
                                       n_batch=engine_cfg["n_batch"], on_token=self._on_token, on_done=self._on_done,
                                       auto_restart=False,
                                       manifest=manifest_path(model), scrub_period_s=engine_cfg["scrub_period_s"],
                                       on_scrub=self._on_scrub)
        self.weight_scrub: WeightScrub | None = None  # the scrubber's reports reach it once it exists
        try:
            self.loaded = self.engine.start()
        except EngineError as exc:
            self._close_ports()
            raise NodeStartError(f"model {model}: {exc}") from None

        rec_cfg = config["recorder"]
        try:
            self.db = OnboardDb(self.data_dir / DB_FILE)
            self.recorder = (Recorder(self.db, rec_cfg["capacity_records"], rec_cfg["capacity_octets"],
                                      rec_cfg["flush_period_s"]) if rec_cfg["enabled"] else None)
        except sqlite3.Error as exc:
            self.engine.stop()
            self._close_ports()
            raise NodeStartError(f"cannot open onboard database {self.data_dir / DB_FILE}: {exc}") from None
        self.jobs = JobStore(self.db)
        self.results = ResultStore(self.db, dictionary.segment_octets)
        self.link = LinkService(self.port, keys, self.results, AntiReplayCounter(self.db), LinkConfig(
            hk_period_s=link_cfg["hk_period_s"], contact_timeout_s=link_cfg["contact_timeout_s"],
            rto_s=link_cfg["rto_s"], arsn_window=link_cfg["arsn_window"], record_hk_period_s=rec_cfg["hk_period_s"]),
            dictionary, recorder=self.recorder)
        self.orbit = OrbitService(PersistedTle(self.db), self.link.emit_event, self._on_sensor_fault)
        self.accountant = Accountant(CostModel(**config["cost"]))
        self.modes = ModeMachine(dictionary, PersistedMode(self.db), self._on_mode_change)
        fdir = Fdir(config.fdir_rules)
        self.weight_scrub = weight_scrub = WeightScrub(self.engine, self.link.emit_event,
                                                       lambda: fdir.holding_action("SCRUB_REPAIR"))
        self.executive = Executive(
            ExecutiveConfig(levels=config.power_levels, n_batch=engine_cfg["n_batch"], n_ctx=self.loaded["n_ctx"],
                            tick_hz=exe_cfg["tick_hz"], auto_inference=exe_cfg["auto_inference"],
                            battery_floor_wh=sched_cfg["battery_floor_wh"],
                            thermal_limit_c=sched_cfg["thermal_limit_c"], thermal_margin_c=sched_cfg["thermal_margin_c"],
                            aging_per_s=sched_cfg["aging_per_s"], hysteresis=sched_cfg["hysteresis"],
                            horizon_min_s=sched_cfg["horizon_min_s"], cap_throughput=True),
            dictionary, self.engine, self.link, self.sensors, self.jobs, self.modes, self.accountant,
            PersistedCounters(self.db), fdir,
            link_channels=lambda: {"LINK_SILENCE_S": self.link.silence_s(), **weight_scrub.channels()},
            link_reset=self._reset_radio,
            on_tick=on_tick)
        self.job_service = JobService(self.jobs, self.executive, self.engine, self.loaded["n_ctx"],
                                      self.link.emit_event, clock=self.executive.clock)
        for name, handler in {**self.job_service.handlers(), **self.executive.handlers(), **weight_scrub.handlers(),
                              **self.orbit.handlers(),
                              "STORE_PURGE_DELIVERED": self._purge}.items():
            self.link.register_handler(name, handler)
        self.link.add_channel_source(self.executive.channels)
        self.link.add_channel_source(weight_scrub.channels)
        self.link.add_channel_source(self._store_channels)
        self.link.add_channel_source(self._sensor_channels)

    def start(self) -> None:
        """Serve: the link (its boot count first), then the executive. NodeStartError if the
        database cannot be written."""
        try:
            boot = self.db.increment_boot_count()
        except sqlite3.Error as exc:  # the first write: a read-only or full disk shows here
            self.stop()
            raise NodeStartError(f"onboard database {self.db.path}: {exc}") from None
        if self.recorder is not None:
            self.recorder.start()
        self.link.start(boot)
        loaded = self.loaded
        self.link.emit_event("ENGINE_STARTED", pid=loaded["pid"], threads=loaded["threads"], simd=loaded["simd"],
                             n_batch=self.config["engine"]["n_batch"], n_ctx=loaded["n_ctx"])
        with self._fault_lock:
            backlog, self._fault_backlog = self._fault_backlog or [], None
        for kind, detail in backlog:
            self._emit_sensor_fault(kind, detail)
        assert self.executive is not None and self.orbit is not None
        self.orbit.restore()
        self.executive.start()

    def stop(self) -> None:
        assert self.executive is not None and self.link is not None
        self.executive.stop(engine_stop=self.engine.stop)
        self.link.stop()  # closes the radio port
        if self.recorder is not None:
            self.recorder.close()  # commits what it still holds
        self._stop_sensors()
        self.db.close()

    def _close_ports(self) -> None:
        """A start that failed after the ports opened: close them."""
        self.port.close()
        self._stop_sensors()

    def _stop_sensors(self) -> None:
        if isinstance(self.sensors, (HilSensors, JetsonSensors)):
            self.sensors.stop()

    # -- wiring helpers -------------------------------------------------------------------------

    def _on_token(self, event: Any) -> None:
        if self.executive is not None:
            self.executive.on_token(event)

    def _on_scrub(self, kind: str, fields: dict[str, Any]) -> None:
        if self.weight_scrub is not None:
            self.weight_scrub.on_scrub(kind, fields)

    def _on_done(self, engine_job: Any) -> None:
        if self.executive is not None:
            self.executive.on_done(engine_job)

    def _on_mode_change(self, previous: str, mode: str, cause: str) -> None:
        assert self.executive is not None
        self.executive.on_mode_change(previous, mode, cause)

    def _purge(self, args: dict[str, Any], origin: CommandOrigin) -> dict[str, Any]:
        count = self.results.purge_delivered()
        self.link.emit_event("STORE_RESULTS_PURGED", count=count)
        return {"count": count}

    def _reset_radio(self) -> None:
        """FDIR's command-loss action: the radio port back to its default line settings (a ground
        that lost us may be calling at the default rate), reported; results stay onboard."""
        baud = SCHEMA["link"]["baud"][0]
        silence = self.link.silence_s()
        self.port.reset(baud)
        self.link.emit_event("LINK_PORT_RESET", baud=baud, silence_s=min(int(silence), 0xFFFFFFFF))

    def _on_sensor_fault(self, kind: str, detail: str) -> None:
        with self._fault_lock:
            if self._fault_backlog is not None:
                self._fault_backlog.append((kind, detail))
                return
        self._emit_sensor_fault(kind, detail)

    def _emit_sensor_fault(self, kind: str, detail: str) -> None:
        assert self.link is not None
        self.link.emit_event("SENSOR_FAULT", kind=kind, detail=detail[:200])

    def _eclipse_at(self, t: float) -> tuple[bool, float, float] | None:
        return self.orbit.at(t) if self.orbit is not None else None

    def _eclipse_source(self) -> str:
        if isinstance(self.sensors, JetsonSensors):
            return self.sensors.eclipse_source
        if isinstance(self.sensors, HilSensors):  # the rig's world: its eclipse is the truth there
            return "EPS" if self.sensors.fresh() else "NONE"
        return "SIM"

    def _sensor_channels(self) -> dict[str, Any]:
        assert self.link is not None and self.orbit is not None
        channels = {**self.orbit.channels(),
                    "ORBIT_ECLIPSE_SOURCE": self.link.dictionary.enum_value("ECLIPSE_SOURCE", self._eclipse_source())}
        if isinstance(self.sensors, JetsonSensors):
            mode = self.sensors.power_mode
            channels["SENSOR_POWER_MODE"] = mode if mode is not None and mode < 1 << 15 else -1  # i16
        return channels

    def _store_channels(self) -> dict[str, Any]:
        assert self.orbit is not None
        faults = sum(self.sensors.faults.values()) if isinstance(self.sensors, (HilSensors, JetsonSensors)) else 0
        return {"STORE_DISK_FREE": shutil.disk_usage(self.data_dir).free, "SENSOR_FAULTS": faults + self.orbit.faults,
                "ENGINE_PID": self.engine.pid or 0, "ENGINE_THREADS": self.loaded["threads"]}
