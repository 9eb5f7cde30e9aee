"""An onboard store written by the first release (dictionary 1.0.0: no key per job, no result MAC)
opens with its data intact, and its pending results go down authenticated."""
import sqlite3
import zlib
from pathlib import Path

from flight.link.keys import KeyRing
from flight.link.sdls import result_mac
from flight.link.serial_port import SerialPort
from flight.link.service import LinkService
from flight.store.anti_replay import AntiReplayCounter
from flight.store.job_store import JobStore
from flight.store.onboard_db import OnboardDb
from flight.store.result_store import ResultStore

FIRST_RELEASE_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE anti_replay (spi INTEGER PRIMARY KEY, last_arsn BLOB NOT NULL);
CREATE TABLE jobs (job_id INTEGER PRIMARY KEY, prompt TEXT NOT NULL, max_tokens INTEGER NOT NULL,
                   state TEXT NOT NULL CHECK (state IN ('queued', 'done', 'failed')), submitted REAL NOT NULL);
CREATE TABLE results (job_id INTEGER PRIMARY KEY REFERENCES jobs(job_id), data BLOB NOT NULL, crc32 INTEGER NOT NULL,
                      segment_count INTEGER NOT NULL, acked BLOB NOT NULL, delivered INTEGER NOT NULL DEFAULT 0,
                      stored REAL NOT NULL);
"""


def test_first_release_store_is_upgraded_and_its_results_signed(tmp_path: Path):
    path = tmp_path / "onboard.sqlite"
    data = b"a result stored before results carried MACs"
    with sqlite3.connect(path) as conn:
        conn.executescript(FIRST_RELEASE_SCHEMA)
        conn.execute("INSERT INTO anti_replay VALUES (1, ?)", ((4242).to_bytes(8, "big"),))
        conn.execute("INSERT INTO jobs VALUES (7, 'old prompt', 16, 'done', 1.0)")
        conn.execute("INSERT INTO jobs VALUES (8, 'still queued', 16, 'queued', 2.0)")
        conn.execute("INSERT INTO results VALUES (7, ?, ?, 1, X'00', 0, 1.0)", (data, zlib.crc32(data)))
    conn.close()
    key = bytes(range(32))
    db = OnboardDb(path)
    service = LinkService(SerialPort("loop://"), KeyRing({1: key}), ResultStore(db, 1024), AntiReplayCounter(db))
    [pending] = service.results.pending_results()
    assert (pending.job_id, pending.spi, pending.mac) == (7, 1, result_mac(key, 7, data))
    assert service.results.result(7) == data
    assert [job.job_id for job in JobStore(db).queued_jobs()] == [8]
    assert service._replay.last(1) == 4242
    service.publish_result(8, b"run after the upgrade", JobStore(db).queued_jobs()[0].spi)  # 0: none recorded
    result = next(r for r in service.results.pending_results() if r.job_id == 8)
    assert (result.spi, result.mac) == (1, result_mac(key, 8, b"run after the upgrade"))
    db.close()
