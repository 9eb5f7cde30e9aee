"""The TLE the ground last uplinked (TLE_UPLOAD), persisted in the onboard database, so a node
that restarts predicts eclipses at once instead of waiting for the next pass to bring one.

One row in its own table. The table is created by the first save, not when the store opens:
opening must not write (the boot count is the node's first write, where a read-only or full
disk shows as one start-up line), and a store that never had a TLE needs none.
"""
from __future__ import annotations

from flight.store.onboard_db import OnboardDb

_TABLE = "CREATE TABLE IF NOT EXISTS tle (id INTEGER PRIMARY KEY CHECK (id = 1), text TEXT NOT NULL)"


class PersistedTle:
    def __init__(self, db: OnboardDb):
        self._db = db

    def load(self) -> str | None:
        """The stored TLE's text (2 or 3 lines), or None if none was ever stored."""
        if not self._db.query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'tle'"):
            return None
        rows = self._db.query("SELECT text FROM tle WHERE id = 1")
        return rows[0][0] if rows else None

    def save(self, text: str) -> None:
        """Commit (fsync) the TLE, replacing the one stored; before the command completes."""
        with self._db.transaction() as conn:
            conn.execute(_TABLE)
            conn.execute("INSERT INTO tle (id, text) VALUES (1, ?) ON CONFLICT(id) DO UPDATE SET text = excluded.text",
                         (text,))
