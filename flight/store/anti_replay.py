"""The onboard anti-replay counter: the last accepted ARSN of each SPI, persisted.

An ARSN is committed (fsynced) before the packet carrying it is acted on or acknowledged, so
after any restart a replayed packet, or any older one, is still refused. ARSNs are unsigned
64-bit; SQLite integers are signed, so they are stored as 8 big-endian octets.
"""
from __future__ import annotations

from flight.store.onboard_db import OnboardDb


class AntiReplayCounter:
    def __init__(self, db: OnboardDb):
        self._db = db

    def last(self, spi: int) -> int:
        rows = self._db.query("SELECT last_arsn FROM anti_replay WHERE spi = ?", (spi,))
        return int.from_bytes(rows[0][0], "big") if rows else 0

    def highest(self) -> int:
        rows = self._db.query("SELECT last_arsn FROM anti_replay")
        return max((int.from_bytes(row[0], "big") for row in rows), default=0)

    def accept(self, spi: int, arsn: int) -> bool:
        """Record arsn if it is above the last one of spi (0 before any); False (nothing recorded) if not."""
        with self._db.transaction() as conn:
            row = conn.execute("SELECT last_arsn FROM anti_replay WHERE spi = ?", (spi,)).fetchone()
            if arsn <= (int.from_bytes(row[0], "big") if row else 0):
                return False
            conn.execute(
                "INSERT INTO anti_replay (spi, last_arsn) VALUES (?, ?) "
                "ON CONFLICT(spi) DO UPDATE SET last_arsn = excluded.last_arsn",
                (spi, arsn.to_bytes(8, "big")),
            )
            return True
