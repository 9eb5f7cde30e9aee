"""Fixtures for two-ended link tests: real ptys joined by a simulated radio, a flight link
service (in this process, with a stand-in job source, or as a separate `flight run` process) and a
ground client."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Callable

import pytest

from flight.link.keys import KeyRing, write_new_key_file
from flight.link.serial_port import SerialPort
from flight.link.service import LinkConfig, LinkService
from flight.link.dictionary import load_dictionary
from flight.store.anti_replay import AntiReplayCounter
from flight.store.job_store import JobStore
from flight.store.onboard_db import OnboardDb
from flight.store.result_store import ResultStore
from ground.client import GroundClient
from tests.link.radio_relay import RadioRelay
from tests.node.helpers import FlightRun
from tests.link.stand_in_jobs import StandInJobs

REPO = Path(__file__).resolve().parents[2]
D = load_dictionary()
# Short timings keep two-ended tests quick; they change no protocol logic.
FAST = LinkConfig(hk_period_s=0.1, contact_timeout_s=1.0, rto_s=0.3)


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
    """An in-process flight side: link service, onboard store and the stand-in job source."""

    def __init__(self, port: str, db_path: Path, keyfile: Path | list[Path], config: LinkConfig = FAST):
        self.db = OnboardDb(db_path)
        keys = KeyRing.load_all(keyfile if isinstance(keyfile, list) else [keyfile])
        self.service = LinkService(SerialPort(port), keys, ResultStore(self.db, D.segment_octets),
                                   AntiReplayCounter(self.db), config)
        self.jobs = JobStore(self.db)
        self.runner = StandInJobs(self.service, self.jobs)
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


# The node process of the link tests: `flight run` on a small synthetic model (its output is
# engine output all the same, computed again in process by synth_completion) with fast link
# timers, and power levels far above what the synthetic model needs, so jobs finish quickly.
SYNTH_N_CTX = 1024
NODE_CONFIG = f"""[link]
hk_period_s = 0.1
contact_timeout_s = 1.0
rto_s = 0.3
[engine]
n_ctx = {SYNTH_N_CTX}
threads = 1
[[power_levels]]
name = "FAST"
watts = 10.0
tokens_per_s = 5000.0
"""


@pytest.fixture(scope="session")
def synth_node_model(tmp_path_factory) -> Path:
    from flight.engine.manifest import make_manifest
    from hil.synth_gguf import write_llama_gguf

    model = write_llama_gguf(tmp_path_factory.mktemp("node-model") / "synth.gguf", n_ctx=SYNTH_N_CTX)
    make_manifest(model)  # as installing a model does: flight run refuses a model without one
    return model


def synth_completion(model: Path, prompt: str, max_tokens: int) -> str:
    """What the node answers a greedy job with, computed in process."""
    from flight.engine import Engine

    with Engine.load(model, threads=1, n_ctx=SYNTH_N_CTX) as engine:
        return engine.generate(prompt, max_tokens=max_tokens).text


@pytest.fixture
def node_factory(tmp_path: Path, keyfile: Path, synth_node_model: Path) -> Iterator[Callable[[str], FlightRun]]:
    """`flight run` processes on the synthetic model, to be killed with SIGKILL."""
    nodes: list[FlightRun] = []

    def make(port: str) -> FlightRun:
        data_dir = tmp_path / "node-data"
        data_dir.mkdir(exist_ok=True)
        config = tmp_path / "node.toml"
        config.write_text(NODE_CONFIG)
        node = FlightRun(port, keyfile, data_dir, tmp_path / "node.log", "--config", str(config),
                         "--model", str(synth_node_model))
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.stop()
