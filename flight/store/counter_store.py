"""The executive's lifetime counters (jobs, tokens, energy, cost), persisted in the onboard
database's meta table under "counter:NAME", so housekeeping counts across restarts, kill -9
included (up to the last save: the executive saves at every job's end and every few seconds)."""
from __future__ import annotations

from flight.store.onboard_db import OnboardDb

_PREFIX = "counter:"


class PersistedCounters:
    def __init__(self, db: OnboardDb):
        self._db = db

    def load(self) -> dict[str, float]:
        rows = self._db.query("SELECT key, value FROM meta WHERE key LIKE ?", (_PREFIX + "%",))
        return {key[len(_PREFIX):]: value for key, value in rows}

    def save(self, values: dict[str, float]) -> None:
        """Commit (fsync) every value at once."""
        with self._db.transaction() as conn:
            conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?) "
                             "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                             [(_PREFIX + name, value) for name, value in values.items()])
