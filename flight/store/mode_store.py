"""The executive's mode, persisted in the onboard database (meta table, as its MODE enum value),
so a start knows the mode the node was in when it last stopped or died."""
from __future__ import annotations

from flight.store.onboard_db import OnboardDb


class PersistedMode:
    def __init__(self, db: OnboardDb):
        self._db = db

    def load(self) -> int | None:
        rows = self._db.query("SELECT value FROM meta WHERE key = 'mode'")
        return rows[0][0] if rows else None

    def save(self, value: int) -> None:
        """Commit (fsync) the mode before it takes effect."""
        with self._db.transaction() as conn:
            conn.execute("INSERT INTO meta (key, value) VALUES ('mode', ?) "
                         "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (value,))
