"""A SQLite file shared by threads: serialised write transactions and reads, in WAL mode.

Used by the onboard store and by the ground archive; each adds its own schema.
"""
from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path


class SqliteDb:
    def __init__(self, path: str | os.PathLike[str], schema: str, synchronous_full: bool = False, create: bool = True):
        """Open (create=True: or create, and add the schema's missing tables) the file at path.
        create=False opens an existing file only and changes nothing in it: a reader's mode;
        sqlite3.OperationalError if the file is missing."""
        self.path = os.fspath(path)
        # mode=rw is SQLite's own "open, never create"; a plain path creates a missing file.
        target, uri = (self.path, False) if create else (Path(self.path).absolute().as_uri() + "?mode=rw", True)
        self._conn = sqlite3.connect(target, timeout=10.0, isolation_level=None, check_same_thread=False, uri=uri)
        self._lock = threading.RLock()
        if synchronous_full:  # fsync every commit before it returns
            self._conn.execute("PRAGMA synchronous=FULL")
        if create:
            self._conn.execute("PRAGMA journal_mode=WAL")  # persistent: it is written into the file
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

    def add_missing_columns(self, columns: Sequence[tuple[str, str, str]]) -> None:
        """ALTER TABLE ADD COLUMN for each (table, column, declaration) the file lacks: how a
        file written by an earlier release opens and keeps its data."""
        with self.transaction() as conn:
            for table, column, declaration in columns:
                if column not in {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}:
                    conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")


def job_option_columns() -> tuple[tuple[str, str, str], ...]:
    """The jobs table's columns for JOB_SUBMIT's optional arguments, from the dictionary (one
    definition for the onboard store and the ground archive): integers and flags as INTEGER,
    floats as REAL, each defaulting to the argument's default."""
    from flight.link.dictionary import load_dictionary

    submit = load_dictionary().command_by_name["JOB_SUBMIT"]
    return tuple(("jobs", arg.name, f"{'REAL' if arg.type.startswith('f') else 'INTEGER'} NOT NULL DEFAULT "
                                    f"{int(arg.default) if isinstance(arg.default, bool) else arg.default}")
                 for arg in submit.args if arg.optional)
