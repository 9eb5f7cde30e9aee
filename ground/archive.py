"""The ground archive: SQLite file holding what the ground must not forget across restarts.

- the last ARSN used per SPI, so a restarted ground never reuses one (the flight would refuse it);
- the last job id handed out, and the jobs submitted;
- result segments received, and results reassembled from them (each job's result at most once);
- the event log.

ARSNs come from the persisted counter alone, allocated in one SQLite write transaction, so two
ground processes sharing an archive never use the same one. Not from the clock: a clock far in
the future would push the node's counter out of reach (the node now also refuses a jump beyond
its anti-replay window). A ground that lost its archive resynchronises with `ground recover`.
Job ids are floored by the clock (seconds since 1970) so a fresh archive does not reuse old ids.
"""
from __future__ import annotations

import os
import sqlite3
import time

from flight.store.sqlite_db import SqliteDb

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
"""
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
        return self._next("job_id", int(time.time()), _U32)

    def record_job(self, job_id: int, prompt: str, max_tokens: int) -> None:
        with self.transaction() as conn:
            conn.execute("INSERT OR IGNORE INTO jobs VALUES (?, ?, ?, ?)", (job_id, prompt, max_tokens, time.time()))

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

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _store_counter(conn: sqlite3.Connection, name: str, value: int) -> None:
    conn.execute("INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                 (name, value.to_bytes(8, "big")))
