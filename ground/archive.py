"""The ground archive: SQLite file holding what the ground must not forget across restarts.

- the last ARSN used per SPI, so a restarted ground never reuses one (the flight would refuse it);
- the last job id handed out, and the jobs submitted;
- result segments received, and results reassembled from them (each job's result at most once);
- the event log.

ARSNs and job ids are floored by the clock (microseconds and seconds since 1970), so even a
ground starting from an empty archive issues numbers above those it used before.
"""
from __future__ import annotations

import os
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


class GroundArchive(SqliteDb):
    def __init__(self, path: str | os.PathLike[str]):
        super().__init__(path, _SCHEMA)

    def _next(self, name: str, floor: int, top: int) -> int:
        with self.transaction() as conn:
            row = conn.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
            last = int.from_bytes(row[0], "big") if row else 0
            value = max(last + 1, floor)
            if value > top:
                raise OverflowError(f"{name} exhausted")
            conn.execute("INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                         (name, value.to_bytes(8, "big")))
            return value

    def next_arsn(self, spi: int) -> int:
        """A fresh anti-replay sequence number for spi, committed before it is used."""
        return self._next(f"arsn:{spi}", time.time_ns() // 1000, (1 << 64) - 1)

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
