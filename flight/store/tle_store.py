"""The TLE the ground last uplinked (TLE_UPLOAD), persisted in the onboard database (its `tle`
table, one row), so a node that restarts predicts eclipses at once instead of waiting for the
next pass to bring one."""
from __future__ import annotations

from flight.store.onboard_db import OnboardDb


class PersistedTle:
    def __init__(self, db: OnboardDb):
        self._db = db

    def load(self) -> str | None:
        """The stored TLE's text (2 or 3 lines), or None if none was ever stored."""
        rows = self._db.query("SELECT text FROM tle WHERE id = 1")
        return rows[0][0] if rows else None

    def save(self, text: str) -> None:
        """Commit (fsync) the TLE, replacing the one stored; before the command completes."""
        with self._db.transaction() as conn:
            conn.execute("INSERT INTO tle (id, text) VALUES (1, ?) ON CONFLICT(id) DO UPDATE SET text = excluded.text",
                         (text,))
