"""The onboard SQLite database: one file, durable writes, shared by the onboard stores.

WAL with synchronous=FULL fsyncs every commit before it returns, so a value committed before
a packet is acknowledged survives a power cut or kill -9 that follows the acknowledgement.
"""
from __future__ import annotations

import os

from flight.store.sqlite_db import SqliteDb, job_option_columns

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS anti_replay (spi INTEGER PRIMARY KEY, last_arsn BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    job_id INTEGER PRIMARY KEY,
    prompt TEXT NOT NULL,
    max_tokens INTEGER NOT NULL,
    spi INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL CHECK (state IN ('queued', 'done', 'failed')),
    submitted REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS job_progress (
    job_id INTEGER PRIMARY KEY REFERENCES jobs(job_id),
    tokens BLOB NOT NULL,
    rng_state BLOB NOT NULL,
    saved REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS results (
    job_id INTEGER PRIMARY KEY REFERENCES jobs(job_id),
    data BLOB NOT NULL,
    crc32 INTEGER NOT NULL,
    segment_count INTEGER NOT NULL,
    acked BLOB NOT NULL,
    spi INTEGER NOT NULL DEFAULT 0,
    mac BLOB NOT NULL DEFAULT X'',
    delivered INTEGER NOT NULL DEFAULT 0,
    stored REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS tle (id INTEGER PRIMARY KEY CHECK (id = 1), text TEXT NOT NULL);
"""
# Columns added after the first release, so a store written by it opens and keeps its data.
# Results stored before carry no MAC; the link service signs them when it starts. Jobs stored
# before the job arguments existed run with the defaults (greedy, no chat, no deadline).
_ADDED_COLUMNS = (
    ("jobs", "spi", "INTEGER NOT NULL DEFAULT 0"),
    ("results", "spi", "INTEGER NOT NULL DEFAULT 0"),
    ("results", "mac", "BLOB NOT NULL DEFAULT X''"),
    *job_option_columns(),
    ("jobs", "prompt_ids", "BLOB NOT NULL DEFAULT X''"),
    ("job_progress", "joules", "REAL NOT NULL DEFAULT 0"),
    ("job_progress", "compute_s", "REAL NOT NULL DEFAULT 0"),
    ("job_progress", "preemptions", "INTEGER NOT NULL DEFAULT 0"),
    ("job_progress", "restarts", "INTEGER NOT NULL DEFAULT 0"),
)


class OnboardDb(SqliteDb):
    def __init__(self, path: str | os.PathLike[str]):
        super().__init__(path, _SCHEMA, synchronous_full=True)
        self.add_missing_columns(_ADDED_COLUMNS)

    def increment_boot_count(self) -> int:
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('boot_count', 1) "
                "ON CONFLICT(key) DO UPDATE SET value = value + 1"
            )
            return conn.execute("SELECT value FROM meta WHERE key = 'boot_count'").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._conn.close()
