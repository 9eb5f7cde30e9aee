"""The ground archive: job ids never shared between ground processes, job options recorded, and
an archive written before the options existed opens with its data intact."""
from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from flight.link.dictionary import load_dictionary
from ground.archive import JOB_OPTIONS, GroundArchive

REPO = Path(__file__).resolve().parents[2]

# The archive as the releases before the JOB_SUBMIT options wrote it.
OLD_SCHEMA = """
CREATE TABLE counters (name TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE jobs (job_id INTEGER PRIMARY KEY, prompt TEXT NOT NULL, max_tokens INTEGER NOT NULL,
                   submitted REAL NOT NULL);
CREATE TABLE segments (
    job_id INTEGER NOT NULL, segment INTEGER NOT NULL, segment_count INTEGER NOT NULL,
    result_octets INTEGER NOT NULL, result_crc32 INTEGER NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (job_id, segment)
);
CREATE TABLE results (job_id INTEGER PRIMARY KEY, data BLOB NOT NULL, segment_count INTEGER NOT NULL,
                      received REAL NOT NULL);
CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, received REAL NOT NULL, onboard_time REAL NOT NULL,
                     name TEXT NOT NULL, severity TEXT NOT NULL, message TEXT NOT NULL);
"""


def test_two_ground_processes_on_one_archive_never_share_a_job_id(tmp_path):
    archive = tmp_path / "shared.sqlite"
    GroundArchive(archive).close()
    script = textwrap.dedent(f"""
        from ground.archive import GroundArchive
        archive = GroundArchive({str(archive)!r})
        print(" ".join(str(archive.next_job_id()) for _ in range(200)))
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    taken = [int(value) for proc in procs for value in proc.communicate(timeout=60)[0].split()]
    assert len(taken) == 400 and len(set(taken)) == 400
    assert sorted(taken) == list(range(min(taken), min(taken) + 400))  # one counter, nothing skipped


def test_threads_with_their_own_connections_never_share_a_job_id(tmp_path):
    path = tmp_path / "shared.sqlite"
    GroundArchive(path).close()
    archives = [GroundArchive(path) for _ in range(4)]
    taken: list[list[int]] = [[] for _ in archives]
    start = threading.Barrier(len(archives))

    def allocate(n: int) -> None:
        start.wait()
        taken[n].extend(archives[n].next_job_id() for _ in range(50))

    threads = [threading.Thread(target=allocate, args=(n,)) for n in range(len(archives))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for archive in archives:
        archive.close()
    ids = [job_id for batch in taken for job_id in batch]
    assert len(ids) == 200 and len(set(ids)) == 200


def test_job_options_are_recorded_and_unknown_ones_refused(tmp_path):
    archive = GroundArchive(tmp_path / "a.sqlite")
    archive.record_job(7, "why orbit?", 32, {"chat": True, "priority": -3, "deadline": 1.7e9, "top_p": 0.9})
    archive.record_job(8, "plain", 4)
    job = archive.job(7)
    assert job["prompt"] == "why orbit?" and job["max_tokens"] == 32
    assert {name: job[name] for name in JOB_OPTIONS} == {
        "chat": True, "stream": False, "priority": -3, "deadline": 1.7e9, "temperature": 0.0, "top_k": 0,
        "top_p": 0.9, "seed": 0, "token_ids": False}
    defaults = {arg.name: arg.default for arg in load_dictionary().command_by_name["JOB_SUBMIT"].args if arg.optional}
    assert set(JOB_OPTIONS) == set(defaults)
    assert {name: archive.job(8)[name] for name in JOB_OPTIONS} == defaults  # options not given: the node's defaults
    archive.record_job(7, "resubmitted", 1, {"seed": 5})  # a job id keeps its first record
    assert archive.job(7)["prompt"] == "why orbit?" and archive.job(7)["seed"] == 0
    assert archive.job(9) is None
    with pytest.raises(ValueError, match="unknown job options"):
        archive.record_job(10, "x", 1, {"temprature": 1.0})
    archive.close()


def test_an_archive_from_before_the_job_options_opens_with_its_data(tmp_path):
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as conn:
        conn.executescript(OLD_SCHEMA)
        conn.execute("INSERT INTO counters VALUES ('job_id', ?)", ((4000).to_bytes(8, "big"),))
        conn.execute("INSERT INTO counters VALUES ('arsn:1', ?)", ((77).to_bytes(8, "big"),))
        conn.execute("INSERT INTO jobs VALUES (4000, 'old prompt', 16, 1.0)")
        conn.execute("INSERT INTO results VALUES (4000, X'6f6c64', 1, 2.0)")
    conn.close()
    reader = GroundArchive(path, create=False)  # a reader changes nothing, and still reads
    assert reader.results() == {4000: b"old"}
    reader.close()
    with sqlite3.connect(path) as conn:
        assert "chat" not in {row[1] for row in conn.execute("PRAGMA table_info(jobs)")}
    conn.close()
    archive = GroundArchive(path)
    assert archive.results() == {4000: b"old"}
    assert archive.last_arsn(1) == 77 and archive.next_arsn(1) == 78
    assert archive.job(4000) == {"job_id": 4000, "prompt": "old prompt", "max_tokens": 16, "submitted": 1.0,
                                 "chat": False, "stream": False, "priority": 0, "deadline": 0.0,
                                 "temperature": 0.0, "top_k": 0, "top_p": 1.0, "seed": 0, "token_ids": False}
    archive.record_job(archive.next_job_id(), "new prompt", 8, {"stream": True})
    archive.close()
    again = GroundArchive(path)  # opening an upgraded archive again changes nothing
    [new_id] = [job_id for job_id, in again.query("SELECT job_id FROM jobs WHERE job_id != 4000")]
    assert new_id > 4000 and again.job(new_id)["stream"] is True
    again.close()
