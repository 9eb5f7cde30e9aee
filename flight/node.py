"""The node's topology: the one place that builds and wires link, stores, executive, engine and
sensors (as an F Prime topology does). `flight run` (flight/cli.py) runs it.

    keys, port ──> LinkService ──(commands)──> JobService, Executive handlers
                        ^                            │
                        │ results, tokens, events    v
    OnboardDb ──> JobStore, ResultStore,      Executive ──> EngineSupervisor ──> engine process
                  AntiReplayCounter, mode        │  ^
                                                 v  │ power, battery, eclipse, temperature
                                              SensorBackend (sim, or hil: the rig's sensor bus)

Start order, each failure one NodeStartError line before anything stored is touched: the
config (already loaded), the key files, the model file, the data directory, the serial port, the
engine process (the model loads), then the onboard database, the link (the boot count is its
first write) and the executive (it takes up the stored queue, then leaves BOOT). Stop: the
executive's loop, the engine at a token boundary with every running job's progress saved, the
link (the port closes), the database.
"""
from __future__ import annotations

import logging
import os
import shutil
import sqlite3
from pathlib import Path
from typing import Any, Callable, Sequence

import serial

from flight.config import SCHEMA, NodeConfig
from flight.engine import EngineError
from flight.engine.model_path import default_model_path
from flight.executive.accounting import Accountant
from flight.executive.cost_model import CostModel
from flight.executive.engine_supervisor import EngineSupervisor
from flight.executive.executive import Executive, ExecutiveConfig
from flight.executive.fdir import Fdir
from flight.executive.job_service import JobService
from flight.executive.modes import ModeMachine
from flight.link.cli_support import serial_error
from flight.link.dictionary import load_dictionary
from flight.link.keys import KeyFileError, KeyRing
from flight.link.serial_port import SerialPort
from flight.link.service import CommandOrigin, LinkConfig, LinkService
from flight.sensors.hil import HilSensors
from flight.sensors.reading import SensorBackend
from flight.sensors.sim import SimSensors
from flight.store.anti_replay import AntiReplayCounter
from flight.store.counter_store import PersistedCounters
from flight.store.job_store import JobStore
from flight.store.mode_store import PersistedMode
from flight.store.onboard_db import OnboardDb
from flight.store.result_store import ResultStore

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
        if backend == "jetson":
            raise NodeStartError("sensors jetson: not available in this build yet (it needs the EPS board's "
                                 "frames and onboard SGP4 for battery and eclipse); use sim or hil")
        if backend == "hil" and not config["sensors"]["port"]:
            raise NodeStartError("sensors hil needs --sensor-port (or [sensors] port): the rig's serial line")
        self.port = SerialPort(link_cfg["port"], link_cfg["baud"])
        try:
            self.port.open()
        except (serial.SerialException, ValueError) as exc:
            self.port.close()
            raise NodeStartError(serial_error(link_cfg["port"], exc)) from None

        self.link: LinkService | None = None  # the sensors' fault reports reach it once it exists
        self.sensors: SensorBackend = SimSensors()
        if backend == "hil":
            sensor_port = config["sensors"]["port"]
            self.sensors = hil = HilSensors(sensor_port, on_fault=self._on_sensor_fault)
            try:
                hil.start()
            except (serial.SerialException, ValueError) as exc:
                self.port.close()
                raise NodeStartError(serial_error(sensor_port, exc)) from None

        self.executive: Executive | None = None  # the engine's callbacks reach it once it exists
        self.engine = EngineSupervisor(model, engine_cfg["threads"], engine_cfg["n_ctx"], simd=engine_cfg["simd"],
                                       n_batch=engine_cfg["n_batch"], on_token=self._on_token, on_done=self._on_done)
        try:
            self.loaded = self.engine.start()
        except EngineError as exc:
            self._close_ports()
            raise NodeStartError(f"model {model}: {exc}") from None

        try:
            self.db = OnboardDb(self.data_dir / DB_FILE)
        except sqlite3.Error as exc:
            self.engine.stop()
            self._close_ports()
            raise NodeStartError(f"cannot open onboard database {self.data_dir / DB_FILE}: {exc}") from None
        self.jobs = JobStore(self.db)
        self.results = ResultStore(self.db, dictionary.segment_octets)
        self.link = LinkService(self.port, keys, self.results, AntiReplayCounter(self.db), LinkConfig(
            hk_period_s=link_cfg["hk_period_s"], contact_timeout_s=link_cfg["contact_timeout_s"],
            rto_s=link_cfg["rto_s"], arsn_window=link_cfg["arsn_window"]), dictionary)
        self.accountant = Accountant(CostModel(**config["cost"]))
        self.modes = ModeMachine(dictionary, PersistedMode(self.db), self._on_mode_change)
        self.executive = Executive(
            ExecutiveConfig(levels=config.power_levels, n_batch=engine_cfg["n_batch"], n_ctx=self.loaded["n_ctx"],
                            tick_hz=exe_cfg["tick_hz"], auto_inference=exe_cfg["auto_inference"],
                            battery_floor_wh=sched_cfg["battery_floor_wh"],
                            thermal_limit_c=sched_cfg["thermal_limit_c"], thermal_margin_c=sched_cfg["thermal_margin_c"],
                            aging_per_s=sched_cfg["aging_per_s"], hysteresis=sched_cfg["hysteresis"],
                            horizon_min_s=sched_cfg["horizon_min_s"], cap_throughput=True),
            dictionary, self.engine, self.link, self.sensors, self.jobs, self.modes, self.accountant,
            PersistedCounters(self.db), Fdir(config.fdir_rules),
            link_channels=lambda: {"LINK_SILENCE_S": self.link.silence_s()}, link_reset=self._reset_radio,
            on_tick=on_tick)
        self.job_service = JobService(self.jobs, self.executive, self.engine, self.loaded["n_ctx"],
                                      self.link.emit_event, clock=self.executive.clock)
        for name, handler in {**self.job_service.handlers(), **self.executive.handlers(),
                              "STORE_PURGE_DELIVERED": self._purge}.items():
            self.link.register_handler(name, handler)
        self.link.add_channel_source(self.executive.channels)
        self.link.add_channel_source(self._store_channels)

    def start(self) -> None:
        """Serve: the link (its boot count first), then the executive. NodeStartError if the
        database cannot be written."""
        try:
            boot = self.db.increment_boot_count()
        except sqlite3.Error as exc:  # the first write: a read-only or full disk shows here
            self.stop()
            raise NodeStartError(f"onboard database {self.db.path}: {exc}") from None
        self.link.start(boot)
        loaded = self.loaded
        self.link.emit_event("ENGINE_STARTED", pid=loaded["pid"], threads=loaded["threads"], simd=loaded["simd"],
                             n_batch=self.config["engine"]["n_batch"], n_ctx=loaded["n_ctx"])
        assert self.executive is not None
        self.executive.start()

    def stop(self) -> None:
        assert self.executive is not None and self.link is not None
        self.executive.stop(engine_stop=self.engine.stop)
        self.link.stop()  # closes the radio port
        self._stop_sensors()
        self.db.close()

    def _close_ports(self) -> None:
        """A start that failed after the ports opened: close them."""
        self.port.close()
        self._stop_sensors()

    def _stop_sensors(self) -> None:
        if isinstance(self.sensors, HilSensors):
            self.sensors.stop()

    # -- wiring helpers -------------------------------------------------------------------------

    def _on_token(self, event: Any) -> None:
        if self.executive is not None:
            self.executive.on_token(event)

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
        if self.link is not None:
            self.link.emit_event("SENSOR_FAULT", kind=kind, detail=detail[:200])

    def _store_channels(self) -> dict[str, Any]:
        faults = sum(self.sensors.faults.values()) if isinstance(self.sensors, HilSensors) else 0
        return {"STORE_DISK_FREE": shutil.disk_usage(self.data_dir).free, "SENSOR_FAULTS": faults,
                "ENGINE_PID": self.engine.pid or 0, "ENGINE_THREADS": self.loaded["threads"]}
