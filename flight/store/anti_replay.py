"""The onboard anti-replay state: the last accepted ARSN of each SPI, and the recovery challenge.

An ARSN is accepted only inside a window above the last accepted one, as SDLS's ARSN window:
last < arsn <= last + window. The window keeps one authentic packet with a far-future ARSN (a
ground clock gone wrong, a corrupted counter) from locking every later command out for good.

Recovery keys do not count: their packets must carry the node's current recovery challenge as
their ARSN, a random value replaced (and persisted) each time one is used. A recovery ground
thus never has a counter of its own to lose, and an old recovery packet never verifies again.

Every change is committed (fsynced) before the packet carrying it is acted on or acknowledged,
so after any restart a replayed packet, or any older one, is still refused. ARSNs are unsigned
64-bit; SQLite integers are signed, so they are stored as 8 big-endian octets.
"""
from __future__ import annotations

import secrets

from flight.store.onboard_db import OnboardDb

ARSN_TOP = (1 << 64) - 1


class AntiReplayCounter:
    def __init__(self, db: OnboardDb):
        self._db = db

    def last(self, spi: int) -> int:
        rows = self._db.query("SELECT last_arsn FROM anti_replay WHERE spi = ?", (spi,))
        return int.from_bytes(rows[0][0], "big") if rows else 0

    def highest(self) -> int:
        rows = self._db.query("SELECT last_arsn FROM anti_replay")
        return max((int.from_bytes(row[0], "big") for row in rows), default=0)

    def accept(self, spi: int, arsn: int, window: int) -> str | None:
        """Record arsn if last < arsn <= last + window (last is 0 before any) and return None;
        otherwise record nothing and return the REASON name: REPLAY or OUT_OF_WINDOW."""
        with self._db.transaction() as conn:
            row = conn.execute("SELECT last_arsn FROM anti_replay WHERE spi = ?", (spi,)).fetchone()
            last = int.from_bytes(row[0], "big") if row else 0
            if arsn <= last:
                return "REPLAY"
            if arsn - last > window:
                return "OUT_OF_WINDOW"
            self._store(conn, spi, arsn)
            return None

    def set(self, spi: int, arsn: int, allow_lower: bool) -> tuple[int, int]:
        """Recovery: make arsn the last accepted ARSN of spi (only upwards unless allow_lower);
        returns (previous, new)."""
        with self._db.transaction() as conn:
            row = conn.execute("SELECT last_arsn FROM anti_replay WHERE spi = ?", (spi,)).fetchone()
            previous = int.from_bytes(row[0], "big") if row else 0
            new = arsn if allow_lower else max(arsn, previous)
            self._store(conn, spi, new)
            return previous, new

    def challenge(self) -> int:
        """The ARSN the next recovery-key packet must carry (drawn on first use)."""
        with self._db.transaction() as conn:
            return self._challenge(conn)

    def take_challenge(self, arsn: int) -> bool:
        """True, and a fresh challenge committed, if arsn is the current challenge."""
        with self._db.transaction() as conn:
            if arsn != self._challenge(conn):
                return False
            conn.execute("UPDATE meta SET value = ? WHERE key = 'recovery_challenge'", (_draw(),))
            return True

    @staticmethod
    def _challenge(conn) -> int:
        conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('recovery_challenge', ?)", (_draw(),))
        return conn.execute("SELECT value FROM meta WHERE key = 'recovery_challenge'").fetchone()[0]

    @staticmethod
    def _store(conn, spi: int, arsn: int) -> None:
        conn.execute(
            "INSERT INTO anti_replay (spi, last_arsn) VALUES (?, ?) "
            "ON CONFLICT(spi) DO UPDATE SET last_arsn = excluded.last_arsn",
            (spi, arsn.to_bytes(8, "big")),
        )


def _draw() -> int:
    # 63 bits: the meta table holds SQLite (signed) integers; 1 or more, so never a fresh ARSN 0.
    return secrets.randbits(63) | 1
