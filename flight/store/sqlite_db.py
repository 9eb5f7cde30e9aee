"""A SQLite file shared by threads: serialised write transactions and reads, in WAL mode.

Used by the onboard store and by the ground archive; each adds its own schema.
"""
from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class SqliteDb:
    def __init__(self, path: str | os.PathLike[str], schema: str, synchronous_full: bool = False):
        self.path = os.fspath(path)
        self._conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None, check_same_thread=False)
        self._lock = threading.RLock()
        self._conn.execute("PRAGMA journal_mode=WAL")
        if synchronous_full:  # fsync every commit before it returns
            self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.executescript(schema)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A serialised write transaction, committed on exit, rolled back on error."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()
