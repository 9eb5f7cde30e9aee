"""kill -9 of `flight run` at random instants, in a loop, with greedy and seeded sampled jobs on
the real model, through `hil link` at 115200 baud, with a ground client collecting all along.
Each kill's instant is drawn from one of three triggers, so that kills land in every phase: a
random delay after the start; a random delay of up to 50 ms after the ground next receives a
result segment; or the moment the onboard write-ahead log next grows (a commit under way).

After the last restart every accepted job's result has arrived exactly once, and its tokens and
text equal those of an uninterrupted run. Each kill is classified by where it landed, from what
the ground last heard and from the onboard database's write-ahead log right after the kill:
  generation  a job was running (JOB_RUNNING > 0 in the last housekeeping);
  commit      the WAL ends in frames of a transaction that has no commit frame yet (the kill
              landed while SQLite was writing one: progress, a result, an acknowledgement);
  downlink    a stored result was still owed to the ground (not yet acknowledged in full);
and, for the commit trigger, "at a commit" when the kill followed the WAL's growth by microseconds
(the transaction may or may not have finished: the WAL check above tells).
A kill can land in several at once. 5 kills in make test, 20 in make test-full.
"""
from __future__ import annotations

import random
import sqlite3
import struct
import time
from pathlib import Path

import pytest

from flight.engine import Engine
from flight.link.job_result import decode_result
from ground.client import GroundClient
from tests.node.helpers import FlightRun, HilLink, new_keys, write_config

SAMPLED = dict(temperature=0.8, top_k=40, top_p=0.95)
JOBS = [  # (prompt, max_tokens, sampling)
    ("Explain why satellites need batteries.", 160, {}),
    ("Write a short poem about the Moon.", 160, dict(SAMPLED, seed=11)),
    ("List the planets of the solar system:", 120, {}),
    ("Describe a day on the International Space Station.", 200, dict(SAMPLED, seed=12345)),
]


def wal_mid_transaction(wal: Path) -> bool:
    """The WAL's last frame of the current generation is not a commit frame (SQLite's WAL format:
    a 32-octet header with two salts at 16..23; frames of a 24-octet header, whose octets 4..7
    are the database size after a commit frame and 0 otherwise, and 8..15 the header's salts)."""
    try:
        data = wal.read_bytes()
    except FileNotFoundError:
        return False
    if len(data) < 32:
        return False
    page_size = struct.unpack(">I", data[8:12])[0]
    salts = data[16:24]
    last_commit = None
    offset = 32
    while offset + 24 + page_size <= len(data):
        header = data[offset:offset + 24]
        if header[8:16] != salts:
            break
        last_commit = struct.unpack(">I", header[4:8])[0] != 0
        offset += 24 + page_size
    return last_commit is False


def owed_results(db: Path) -> int:
    """Results stored onboard and not yet delivered (read after the kill: the node is dead)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return conn.execute("SELECT count(*) FROM results WHERE delivered = 0").fetchone()[0]


@pytest.fixture(scope="module")
def uninterrupted(real_model_path) -> dict[str, list[int]]:
    with Engine.load(real_model_path, threads=1) as e:
        return {prompt: e.generate(prompt, max_tokens=n, **kw).tokens for prompt, n, kw in JOBS}


def run_kill_loop(tmp_path: Path, kills: int, uninterrupted: dict[str, list[int]], seed: int,
                  refill_every: int | None = None) -> dict[str, int]:
    """kills kill -9s; refill_every: after every that many kills, submit the JOBS again (new job
    ids, the same prompts), so that generation goes on through a long loop."""
    rng = random.Random(seed)
    keys = new_keys(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    config = write_config(tmp_path / "node.toml")
    hil = HilLink()
    node = FlightRun(hil.flight, keys, data, tmp_path / "flight.log", "--config", str(config))
    ground = GroundClient(hil.ground, keys=keys, archive=tmp_path / "ground.sqlite", sack_interval_s=0.2)
    landed = {"generation": 0, "commit": 0, "at_commit": 0, "downlink": 0, "kills": 0}
    try:
        node.start()
        ground.connect()
        ground.await_telemetry("LINK_CONTACT", lambda v: v is True, timeout=20)
        def submit_all() -> dict[int, str]:
            return {ground.submit_job(prompt, n, timeout=2.0, attempts=10, token_ids=True, **kw): prompt
                    for prompt, n, kw in JOBS}

        jobs = submit_all()
        wal = data / "onboard.sqlite-wal"
        for k in range(kills):
            if refill_every and k and k % refill_every == 0:
                jobs.update(submit_all())
            grew = False
            trigger = rng.choice(("delay", "delay", "segment", "commit"))
            if trigger == "delay":
                time.sleep(rng.uniform(0.1, 2.5))
            elif trigger == "segment":
                try:
                    ground.await_packet(lambda p: p.name == "JOB_RESULT_SEGMENT", timeout=5.0,
                                        since=ground.history_index())
                except TimeoutError:
                    pass
                time.sleep(rng.uniform(0.0, 0.05))
            else:
                size, end = wal.stat().st_size, time.monotonic() + 5.0
                while not grew and time.monotonic() < end:
                    grew = wal.stat().st_size != size
            hk = ground.latest_housekeeping()
            node.kill9()
            landed["kills"] += 1
            landed["generation"] += int((hk.get("JOB_RUNNING") or 0) > 0)
            landed["commit"] += int(wal_mid_transaction(wal))  # before anything opens the database
            landed["at_commit"] += int(grew)
            landed["downlink"] += int(owed_results(data / "onboard.sqlite") > 0)
            node.start()
        results = {job_id: decode_result(ground.await_result(job_id, timeout=180)) for job_id in jobs}
        end = time.monotonic() + 30
        while ground.await_telemetry("DL_RESULTS_PENDING", since=ground.history_index(), timeout=10).value:
            assert time.monotonic() < end, "results never all acknowledged"
    finally:
        ground.close()
        node.stop()
        hil.stop()
    for job_id, prompt in jobs.items():
        assert results[job_id]["token_ids"] == uninterrupted[prompt], f"job {job_id} differs from the uninterrupted run"
        assert results[job_id]["job_id"] == job_id
    with sqlite3.connect(tmp_path / "ground.sqlite") as conn:
        archived = [row[0] for row in conn.execute("SELECT job_id FROM results ORDER BY job_id")]
    assert archived == sorted(jobs)
    print(f"\nkill -9 x{landed['kills']} of flight run, {len(jobs)} jobs: {landed['generation']} mid-generation, "
          f"{landed['commit']} mid-commit (WAL ends in an unfinished transaction), {landed['at_commit']} at a commit "
          f"(killed as the WAL grew), {landed['downlink']} mid-downlink; restarts per job "
          f"{[r['restarts'] for r in results.values()]}")
    return landed


def test_kill9_loop(tmp_path, uninterrupted, record_property):
    landed = run_kill_loop(tmp_path, 5, uninterrupted, seed=7)
    record_property("kills", landed)
    assert landed["generation"] >= 1


@pytest.mark.full
def test_kill9_loop_long(tmp_path, uninterrupted, record_property):
    landed = run_kill_loop(tmp_path, 20, uninterrupted, seed=2026, refill_every=4)
    record_property("kills", landed)
    assert landed["generation"] >= 5
