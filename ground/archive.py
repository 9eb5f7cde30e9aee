"""The ground archive: SQLite file holding what the ground must not forget across restarts.

- the last ARSN used per SPI, so a restarted ground never reuses one (the flight would refuse it);
- the last job id handed out, and the jobs submitted with their options (JOB_SUBMIT's optional
  arguments, as sent: chat, stream, priority, deadline in onboard time, sampling);
- result segments received, and results reassembled from them (each job's result at most once);
- the event log: events as they came live, and events played back from the onboard recorder at
  their original onboard time, marked so and kept once per recorder seq;
- housekeeping snapshots played back from the onboard recorder (live housekeeping is not kept).

ARSNs come from the persisted counter alone, allocated in one SQLite write transaction, so two
ground processes sharing an archive never use the same one. Not from the clock: a clock far in
the future would push the node's counter out of reach (the node now also refuses a jump beyond
its anti-replay window). A ground that lost its archive resynchronises with `ground recover`.
Job ids come from a persisted counter the same way (two ground processes never hand out the same
one), floored by the clock (seconds since 1970) so a fresh archive does not reuse old ids.

Columns added after the first release are added to an archive written before them when it is
opened for writing (_ADDED_COLUMNS), so it keeps its data; a reader (create=False) changes nothing.
"""
from __future__ import annotations

import json
import math
import os
import sqlite3
import time
from collections.abc import Mapping
from typing import Any

from flight.link.dictionary import load_dictionary
from flight.store.sqlite_db import SqliteDb, job_option_columns

_SCHEMA = """
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (job_id INTEGER PRIMARY KEY, prompt TEXT NOT NULL, max_tokens INTEGER NOT NULL,
                                 submitted REAL NOT NULL);
CREATE TABLE IF NOT EXISTS segments (
    job_id INTEGER NOT NULL, segment INTEGER NOT NULL, segment_count INTEGER NOT NULL,
    result_octets INTEGER NOT NULL, result_crc32 INTEGER NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (job_id, segment)
);
CREATE TABLE IF NOT EXISTS results (job_id INTEGER PRIMARY KEY, data BLOB NOT NULL, segment_count INTEGER NOT NULL,
                                    received REAL NOT NULL);
CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY AUTOINCREMENT, received REAL NOT NULL, onboard_time REAL NOT NULL,
                                   name TEXT NOT NULL, severity TEXT NOT NULL, message TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS housekeeping (rec_seq INTEGER PRIMARY KEY, onboard_time REAL NOT NULL, received REAL NOT NULL,
                                         channels TEXT NOT NULL);
"""
# Columns added after the first release: (table, column, declaration). Jobs recorded before the
# JOB_SUBMIT options existed were submitted with the defaults, which is what they read as; events
# logged before playback existed were live ones.
_ADDED_COLUMNS = (*job_option_columns(), ("events", "played_back", "INTEGER NOT NULL DEFAULT 0"),
                  ("events", "rec_seq", "INTEGER"))
# Once the columns exist: a played-back event is kept once however often it comes (NULLs, the
# live events, are all distinct to a unique index).
_INDEXES = "CREATE UNIQUE INDEX IF NOT EXISTS events_rec_seq ON events (rec_seq)"
# The JOB_SUBMIT options the jobs table records, in its column order; bool ones are stored as 0/1.
JOB_OPTIONS = tuple(column for table, column, _ in _ADDED_COLUMNS if table == "jobs")
_BOOL_OPTIONS = tuple(arg.name for arg in load_dictionary().command_by_name["JOB_SUBMIT"].args
                      if arg.optional and arg.type == "bool")
_U32 = (1 << 32) - 1


class CounterExhausted(ValueError):
    """A persisted counter has no next value."""


class ArchiveError(Exception):
    """The archive cannot be opened: missing (when it must exist) or not a SQLite database."""


class GroundArchive(SqliteDb):
    def __init__(self, path: str | os.PathLike[str], *, create: bool = True):
        """Open the archive at path; create=False for readers, which must never create one (nor
        add tables to some other SQLite file given by mistake)."""
        where = os.fspath(path)
        if not create and not os.path.exists(path):
            raise ArchiveError(f"archive {where} does not exist")
        try:
            super().__init__(path, _SCHEMA, create=create)
            tables = {row[0] for row in self.query("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.Error as exc:  # not a database, unreadable, locked
            raise ArchiveError(f"cannot open archive {where}: {exc}") from None
        if not {"counters", "results", "segments"} <= tables:
            self.close()
            raise ArchiveError(f"{where} is not a ground archive (no archive tables in it)")
        if create:
            try:
                self.add_missing_columns(_ADDED_COLUMNS)
                with self.transaction() as conn:
                    conn.execute(_INDEXES)
            except sqlite3.Error as exc:  # read-only file, locked beyond the timeout
                self.close()
                raise ArchiveError(f"cannot upgrade archive {where}: {exc}") from None

    def _next(self, name: str, floor: int, top: int) -> int:
        with self.transaction() as conn:
            row = conn.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
            last = int.from_bytes(row[0], "big") if row else 0
            value = max(last + 1, floor)
            if value > top:
                raise CounterExhausted(f"the archive's {name} counter is at its top ({last}); "
                                       + ("resynchronise it with `ground recover`" if name.startswith("arsn") else
                                          "start a new archive"))
            _store_counter(conn, name, value)
            return value

    def next_arsn(self, spi: int) -> int:
        """A fresh anti-replay sequence number for spi, committed before it is used."""
        return self._next(f"arsn:{spi}", 1, (1 << 64) - 1)

    def last_arsn(self, spi: int) -> int:
        rows = self.query("SELECT value FROM counters WHERE name = ?", (f"arsn:{spi}",))
        return int.from_bytes(rows[0][0], "big") if rows else 0

    def set_arsn(self, spi: int, last: int) -> None:
        """Recovery: continue spi's ARSNs after last (the node's counter, as it reported it)."""
        with self.transaction() as conn:
            _store_counter(conn, f"arsn:{spi}", last)

    def next_job_id(self) -> int:
        """A job id no other user of this archive (thread or process) ever gets, committed before
        it is used."""
        return self._next("job_id", int(time.time()), _U32)

    def record_job(self, job_id: int, prompt: str, max_tokens: int, options: Mapping[str, Any] | None = None) -> None:
        """Record a submitted job with its JOB_SUBMIT options (names in JOB_OPTIONS; one not
        given is at its default). A job id recorded already keeps its first record."""
        options = dict(options or {})
        unknown = sorted(set(options) - set(JOB_OPTIONS))
        if unknown:
            raise ValueError(f"unknown job options {unknown}")
        columns = ("job_id", "prompt", "max_tokens", "submitted", *options)
        values = (job_id, prompt, max_tokens, time.time(),
                  *(int(v) if name in _BOOL_OPTIONS else v for name, v in options.items()))
        with self.transaction() as conn:
            conn.execute(f"INSERT OR IGNORE INTO jobs ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                         values)

    def job(self, job_id: int) -> dict[str, Any] | None:
        """A recorded job: job_id, prompt, max_tokens, submitted (ground Unix time) and every
        option in JOB_OPTIONS; None if this archive has no record of it."""
        names = ("job_id", "prompt", "max_tokens", "submitted", *JOB_OPTIONS)
        rows = self.query(f"SELECT {', '.join(names)} FROM jobs WHERE job_id = ?", (job_id,))
        if not rows:
            return None
        job = dict(zip(names, rows[0]))
        for name in _BOOL_OPTIONS:
            job[name] = bool(job[name])
        return job

    def first_segment_meta(self, job_id: int) -> tuple[int, int, int] | None:
        """(segment_count, result_octets, result_crc32) of the segments held for job_id."""
        rows = self.query("SELECT segment_count, result_octets, result_crc32 FROM segments WHERE job_id = ? LIMIT 1",
                          (job_id,))
        return rows[0] if rows else None

    def add_segment(self, job_id: int, segment: int, segment_count: int, result_octets: int, result_crc32: int,
                    data: bytes) -> bool:
        """Store a segment; False if it was already held."""
        with self.transaction() as conn:
            cursor = conn.execute("INSERT OR IGNORE INTO segments VALUES (?, ?, ?, ?, ?, ?)",
                                  (job_id, segment, segment_count, result_octets, result_crc32, data))
            return cursor.rowcount == 1

    def held_segments(self, job_id: int) -> set[int]:
        return {row[0] for row in self.query("SELECT segment FROM segments WHERE job_id = ?", (job_id,))}

    def segments_data(self, job_id: int) -> bytes:
        return b"".join(row[0] for row in self.query("SELECT data FROM segments WHERE job_id = ? ORDER BY segment", (job_id,)))

    def complete_result(self, job_id: int, data: bytes, segment_count: int) -> None:
        """Store the reassembled result and drop its segments, atomically."""
        with self.transaction() as conn:
            conn.execute("INSERT OR IGNORE INTO results VALUES (?, ?, ?, ?)", (job_id, data, segment_count, time.time()))
            conn.execute("DELETE FROM segments WHERE job_id = ?", (job_id,))

    def drop_segments(self, job_id: int) -> None:
        with self.transaction() as conn:
            conn.execute("DELETE FROM segments WHERE job_id = ?", (job_id,))

    def result_segment_count(self, job_id: int) -> int | None:
        rows = self.query("SELECT segment_count FROM results WHERE job_id = ?", (job_id,))
        return rows[0][0] if rows else None

    def incomplete_jobs(self) -> list[int]:
        return [row[0] for row in self.query("SELECT DISTINCT job_id FROM segments ORDER BY job_id")]

    def result(self, job_id: int) -> bytes | None:
        rows = self.query("SELECT data FROM results WHERE job_id = ?", (job_id,))
        return rows[0][0] if rows else None

    def results(self) -> dict[int, bytes]:
        return dict(self.query("SELECT job_id, data FROM results ORDER BY job_id"))

    def log_event(self, onboard_time: float, name: str, severity: str, message: str) -> None:
        with self.transaction() as conn:
            conn.execute("INSERT INTO events (received, onboard_time, name, severity, message) VALUES (?, ?, ?, ?, ?)",
                         (time.time(), onboard_time, name, severity, message))

    def log_playback(self, events: list[tuple[int, float, str, str, str]],
                     housekeeping: list[tuple[int, float, dict[str, Any]]]) -> None:
        """Keep what a REC_PLAYBACK packet brought, at its original onboard time: events as
        (rec_seq, onboard_time, name, severity, message), snapshots as (rec_seq, onboard_time,
        channels by name). A rec_seq held already is skipped."""
        now = time.time()
        with self.transaction() as conn:
            conn.executemany("INSERT OR IGNORE INTO events (received, onboard_time, name, severity, message, "
                             "played_back, rec_seq) VALUES (?, ?, ?, ?, ?, 1, ?)",
                             [(now, t, name, severity, message, seq) for seq, t, name, severity, message in events])
            conn.executemany("INSERT OR IGNORE INTO housekeeping (rec_seq, onboard_time, received, channels) "
                             "VALUES (?, ?, ?, ?)", [(seq, t, now, json.dumps(channels)) for seq, t, channels in housekeeping])

    def events(self, start: float = 0.0, end: float = math.inf) -> list[dict[str, Any]]:
        """Events logged with an onboard time from start to end, in onboard time order: onboard_time,
        name, severity, message, played_back (bool) and rec_seq (None for a live one)."""
        names = ("onboard_time", "name", "severity", "message", "played_back", "rec_seq")
        rows = self.query(f"SELECT {', '.join(names)} FROM events WHERE onboard_time >= ? AND onboard_time <= ? "
                          "ORDER BY onboard_time, id", (start, end))
        return [dict(zip(names, row), played_back=bool(row[4])) for row in rows]

    def housekeeping(self, start: float = 0.0, end: float = math.inf) -> list[tuple[int, float, dict[str, Any]]]:
        """Played-back snapshots from start to end (onboard time): (rec_seq, onboard_time, channels by name)."""
        rows = self.query("SELECT rec_seq, onboard_time, channels FROM housekeeping WHERE onboard_time >= ? AND "
                          "onboard_time <= ? ORDER BY onboard_time", (start, end))
        return [(seq, t, json.loads(channels)) for seq, t, channels in rows]

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _store_counter(conn: sqlite3.Connection, name: str, value: int) -> None:
    conn.execute("INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                 (name, value.to_bytes(8, "big")))
