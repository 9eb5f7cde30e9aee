"""Onboard job results, with the ground's acknowledgement state of each result (the jobs
themselves are the job store's; the two share the onboard database, so storing a result and
marking its job done is one transaction).

A result is split into segments of segment_octets for the downlink; `acked` is a bitmap with
one bit per segment, set when the ground acknowledges holding it. A result is delivered once
every bit is set. Results are immutable once stored: the first one stored for a job wins,
which makes re-running a job after a crash harmless.
"""
from __future__ import annotations

import time
import zlib
from dataclasses import dataclass

from flight.store.onboard_db import OnboardDb


@dataclass(frozen=True)
class PendingResult:
    job_id: int
    result_octets: int
    crc32: int
    segment_count: int
    acked: frozenset[int]
    spi: int
    mac: bytes  # sdls.result_mac of the whole result; empty for a result stored before MACs existed


def _bits(bitmap: bytes) -> frozenset[int]:
    return frozenset(i for i in range(len(bitmap) * 8) if bitmap[i // 8] >> (i % 8) & 1)


class ResultStore:
    def __init__(self, db: OnboardDb, segment_octets: int):
        self._db = db
        self.segment_octets = segment_octets

    def store_result(self, job_id: int, data: bytes, spi: int, mac: bytes) -> bool:
        """Persist a job's result with its MAC and mark the job done, atomically; False if it already had one."""
        segment_count = max(1, -(-len(data) // self.segment_octets))
        with self._db.transaction() as conn:
            if conn.execute("SELECT 1 FROM results WHERE job_id = ?", (job_id,)).fetchone():
                return False
            conn.execute(
                "INSERT INTO results (job_id, data, crc32, segment_count, acked, spi, mac, stored) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (job_id, data, zlib.crc32(data), segment_count, bytes(-(-segment_count // 8)), spi, mac, time.time()),
            )
            conn.execute("UPDATE jobs SET state = 'done' WHERE job_id = ?", (job_id,))
            conn.execute("DELETE FROM job_progress WHERE job_id = ?", (job_id,))  # the result supersedes it
            return True

    def pending_results(self) -> list[PendingResult]:
        return self._pending("delivered = 0 ORDER BY stored, job_id", ())

    def pending_result(self, job_id: int) -> PendingResult | None:
        found = self._pending("job_id = ? AND delivered = 0", (job_id,))
        return found[0] if found else None

    def _pending(self, where: str, params: tuple) -> list[PendingResult]:
        rows = self._db.query(
            f"SELECT job_id, length(data), crc32, segment_count, acked, spi, mac FROM results WHERE {where}", params)
        return [PendingResult(job_id, octets, crc, count, _bits(acked), spi, mac)
                for job_id, octets, crc, count, acked, spi, mac in rows]

    def sign_result(self, job_id: int, spi: int, mac: bytes) -> None:
        """Give a result stored before results carried MACs its MAC."""
        with self._db.transaction() as conn:
            conn.execute("UPDATE results SET spi = ?, mac = ? WHERE job_id = ?", (spi, mac, job_id))

    def segment(self, job_id: int, index: int) -> bytes:
        # substr() on a BLOB slices octets, so a segment is read without loading the result;
        # on an empty BLOB it gives NULL, hence the coalesce.
        return self._db.query(
            "SELECT coalesce(substr(data, ?, ?), X'') FROM results WHERE job_id = ?",
            (index * self.segment_octets + 1, self.segment_octets, job_id),
        )[0][0]

    def acknowledge(self, job_id: int, indices: set[int]) -> tuple[frozenset[int], bool]:
        """Record that the ground holds exactly these segments (a segment it discarded is no longer
        acknowledged): (acked segments now, delivered now). Nothing changes once delivered."""
        with self._db.transaction() as conn:
            row = conn.execute(
                "SELECT segment_count, delivered FROM results WHERE job_id = ?", (job_id,)
            ).fetchone()
            if row is None or row[1]:
                return frozenset(), False
            count = row[0]
            bitmap = bytearray(-(-count // 8))
            for index in indices:
                if 0 <= index < count:
                    bitmap[index // 8] |= 1 << (index % 8)
            acked = _bits(bytes(bitmap))
            delivered = len(acked) == count
            conn.execute(
                "UPDATE results SET acked = ?, delivered = ? WHERE job_id = ?", (bytes(bitmap), int(delivered), job_id)
            )
            return acked, delivered

    def result(self, job_id: int) -> bytes | None:
        rows = self._db.query("SELECT data FROM results WHERE job_id = ?", (job_id,))
        return rows[0][0] if rows else None

    def purge_delivered(self) -> int:
        with self._db.transaction() as conn:
            jobs = [row[0] for row in conn.execute("SELECT job_id FROM results WHERE delivered = 1")]
            conn.executemany("DELETE FROM results WHERE job_id = ?", [(j,) for j in jobs])
            conn.executemany("DELETE FROM jobs WHERE job_id = ?", [(j,) for j in jobs])
            return len(jobs)
