"""Fixtures for two-ended link tests: real ptys joined by a simulated radio, a flight link
service (in this process or as a separate `python -m flight.link.node` process) and a ground client."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

import pytest

from flight.link.keys import KeyRing, write_new_key_file
from flight.link.placeholder_job_runner import PlaceholderJobRunner
from flight.link.serial_port import SerialPort
from flight.link.service import LinkConfig, LinkService
from flight.link.dictionary import load_dictionary
from flight.store.anti_replay import AntiReplayCounter
from flight.store.job_store import JobStore
from flight.store.onboard_db import OnboardDb
from flight.store.result_store import ResultStore
from ground.client import GroundClient
from tests.link.radio_relay import RadioRelay

REPO = Path(__file__).resolve().parents[2]
D = load_dictionary()
# Short timings keep two-ended tests quick; they change no protocol logic.
FAST = LinkConfig(hk_period_s=0.1, contact_timeout_s=1.0, rto_s=0.3)
NODE_ARGS = ["--hk-period", "0.1", "--contact-timeout", "1.0", "--rto", "0.3", "--log-level", "WARNING"]


@pytest.fixture
def keyfile(tmp_path: Path) -> Path:
    path = tmp_path / "link-keys.json"
    write_new_key_file(path)
    return path


@pytest.fixture
def relay() -> Iterator[RadioRelay]:
    with RadioRelay(seed=1) as radio:
        yield radio


class FlightUnderTest:
    """An in-process flight side: link service, onboard store and placeholder job runner."""

    def __init__(self, port: str, db_path: Path, keyfile: Path | list[Path], config: LinkConfig = FAST):
        self.db = OnboardDb(db_path)
        keys = KeyRing.load_all(keyfile if isinstance(keyfile, list) else [keyfile])
        self.service = LinkService(SerialPort(port), keys, ResultStore(self.db, D.segment_octets),
                                   AntiReplayCounter(self.db), config)
        self.jobs = JobStore(self.db)
        self.runner = PlaceholderJobRunner(self.service, self.jobs)
        self.runner.start()
        self.service.start(self.db.increment_boot_count())

    def stop(self) -> None:
        self.service.stop()
        self.runner.stop()
        self.db.close()


@pytest.fixture
def flight(relay: RadioRelay, tmp_path: Path, keyfile: Path) -> Iterator[FlightUnderTest]:
    side = FlightUnderTest(relay.flight_path, tmp_path / "onboard.sqlite", keyfile)
    yield side
    side.stop()


def open_ground(relay: RadioRelay, tmp_path: Path, keyfile: Path, archive: str = "ground.sqlite") -> GroundClient:
    client = GroundClient(relay.ground_path, keys=keyfile, archive=tmp_path / archive, sack_interval_s=0.1).connect()
    client.await_telemetry("LINK_CONTACT", lambda v: v is True, timeout=10)
    return client


@pytest.fixture
def ground(relay: RadioRelay, tmp_path: Path, keyfile: Path, flight: FlightUnderTest) -> Iterator[GroundClient]:
    client = open_ground(relay, tmp_path, keyfile)
    yield client
    client.close()


class NodeProcess:
    """`python -m flight.link.node` as a real process, to be killed with SIGKILL."""

    def __init__(self, port: str, db: Path, keys: Path, log: Path):
        self.args = [sys.executable, "-m", "flight.link.node", "--port", port, "--db", str(db), "--keys", str(keys), *NODE_ARGS]
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.args, cwd=REPO, stderr=log)

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@pytest.fixture
def node_factory(tmp_path: Path, keyfile: Path) -> Iterator[Callable[[str], NodeProcess]]:
    nodes: list[NodeProcess] = []

    def make(port: str) -> NodeProcess:
        node = NodeProcess(port, tmp_path / "onboard.sqlite", keyfile, tmp_path / "node.log")
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.stop()
