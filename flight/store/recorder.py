"""The onboard recorder: events and housekeeping snapshots kept in a bounded table of the onboard
database, so that what the ground did not hear can be played back to it (as cFS's Data Storage
or F Prime's BufferLogger keep what the spacecraft said while nobody listened).

A record is (seq, onboard time of the original, kind, body, in_contact, owed): seq counts records
over the node's life and is never reused, so the ground sees gaps; kind is an opaque small
integer to this store (the link maps it to the ICD's REC_KIND); body is the packet's msgpack body
exactly as the live packet carried it; in_contact says whether the link was in contact when it
was recorded; owed says the ground presumably has not heard it yet (recorded out of contact, or
sent in the last moments before contact was found lost) and it has not been played back since.

Bounded: past capacity_records records or capacity_octets octets of bodies, the oldest records
are dropped first and counted in a persisted counter, owed or not.

Writes are cheap: record() appends to a buffer in memory; a flush thread commits the buffer, the
owed marks and the counters every flush_period_s in one transaction (one fsync, since the
onboard database is synchronous=FULL). What a kill -9 or a power cut loses is what was recorded
since the last commit, at most flush_period_s of records, and the owed marks set since, which
at worst plays a few records back twice. If the database refuses writes (disk full), records
wait in the buffer, up to BUFFER_LIMIT of them (the oldest are dropped, and counted, beyond).
"""
from __future__ import annotations

import logging
import sqlite3
import threading
from collections import deque
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from flight.store.onboard_db import OnboardDb

log = logging.getLogger(__name__)

DEFAULT_CAPACITY_RECORDS = 500_000
# A housekeeping snapshot is about 0.6 kB: 64 MiB hold about twelve days of one every 10 s.
DEFAULT_CAPACITY_OCTETS = 64 * 1024 * 1024
DEFAULT_FLUSH_PERIOD_S = 1.0
BUFFER_LIMIT = 100_000
_DROP_CHUNK = 1024

_SCHEMA = """
CREATE TABLE IF NOT EXISTS recorder (
    seq INTEGER PRIMARY KEY,
    time REAL NOT NULL,
    kind INTEGER NOT NULL,
    in_contact INTEGER NOT NULL,
    owed INTEGER NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS recorder_time ON recorder (time);
CREATE INDEX IF NOT EXISTS recorder_owed ON recorder (kind, seq) WHERE owed = 1;
"""
_Row = tuple[int, float, int, int, int, bytes]  # seq, time, kind, in_contact, owed, body: the table's columns
_META = {"next_seq": "recorder:next_seq", "dropped": "recorder:dropped", "played_back": "recorder:played_back"}


@dataclass(frozen=True, slots=True)
class Record:
    seq: int
    time: float  # onboard time of the original, s since 1970
    kind: int
    in_contact: bool
    body: bytes


@dataclass(frozen=True)
class RecorderStats:
    records: int  # held, committed or waiting in the buffer
    octets: int  # of their bodies
    fill: float  # the larger of records and octets over its capacity, 0..1
    owed: int  # committed records the ground has presumably not heard
    dropped: int  # over the node's life (persisted)
    played_back: int  # over the node's life (persisted)
    write_errors: int  # failed commits since this start


class Recorder:
    def __init__(self, db: OnboardDb, capacity_records: int = DEFAULT_CAPACITY_RECORDS,
                 capacity_octets: int = DEFAULT_CAPACITY_OCTETS, flush_period_s: float = DEFAULT_FLUSH_PERIOD_S):
        """Open (or create) the recorder's table; sqlite3.Error if the database refuses."""
        self._db = db
        self.capacity_records = capacity_records
        self.capacity_octets = capacity_octets
        self._flush_period_s = flush_period_s
        with db.transaction() as conn:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
        meta = dict(db.query(f"SELECT key, value FROM meta WHERE key IN ({', '.join('?' * len(_META))})",
                             tuple(_META.values())))
        records, octets, last_seq = db.query("SELECT count(*), coalesce(sum(length(body)), 0), "
                                             "coalesce(max(seq), 0) FROM recorder")[0]
        self._records, self._octets = records, octets
        self._owed = db.query("SELECT count(*) FROM recorder WHERE owed = 1")[0][0]
        self._next_seq = max(meta.get(_META["next_seq"], 1), last_seq + 1)
        self._dropped = meta.get(_META["dropped"], 0)
        self._played_back = meta.get(_META["played_back"], 0)
        self._write_errors = 0
        self._lock = threading.Lock()  # the buffer, the pending marks and the counters
        self._flush_lock = threading.Lock()  # one commit at a time
        self._buffer: deque[_Row] = deque()
        self._buffer_octets = 0
        self._owe_since: float | None = None
        self._marks: dict[int, bool] = {}  # seq -> owed, set since the last commit
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)

    # --- writing -------------------------------------------------------------------------------
    def record(self, kind: int, onboard_time: float, body: bytes, in_contact: bool) -> int:
        """Buffer a record (committed within flush_period_s); its seq."""
        with self._lock:
            seq = self._next_seq
            self._next_seq += 1
            if len(self._buffer) >= BUFFER_LIMIT:  # the database has refused writes for a while
                self._buffer_octets -= len(self._buffer.popleft()[5])
                self._dropped += 1
            self._buffer.append((seq, onboard_time, kind, int(in_contact), int(not in_contact), body))
            self._buffer_octets += len(body)
            return seq

    def owe_since(self, onboard_time: float) -> None:
        """Every record from onboard_time on is owed again: the ground may not have heard it."""
        with self._lock:
            self._owe_since = onboard_time if self._owe_since is None else min(self._owe_since, onboard_time)

    def played(self, seqs: Iterable[int]) -> None:
        """These records went down in playback: no longer owed; counted."""
        with self._lock:
            for seq in seqs:
                self._marks[seq] = False
                self._played_back += 1

    def owe(self, seqs: Iterable[int]) -> None:
        """These records are owed again (played back while the ground was, as it turned out, gone)."""
        with self._lock:
            self._marks.update(dict.fromkeys(seqs, True))

    def flush(self) -> None:
        """Commit the buffer, the owed marks and the counters, and drop the oldest records beyond
        capacity, in one transaction. sqlite3.Error if it fails: then nothing is lost from memory."""
        with self._flush_lock:
            with self._lock:
                if not (self._buffer or self._marks or self._owe_since is not None):
                    return  # no commit, no fsync: an idle node records a snapshot every 10 s, not every second
                buffer, self._buffer, buffered_octets = self._buffer, deque(), self._buffer_octets
                owe_since, self._owe_since = self._owe_since, None
                marks, self._marks = self._marks, {}
                self._buffer_octets = 0
                counters = {_META["next_seq"]: self._next_seq, _META["dropped"]: self._dropped,
                            _META["played_back"]: self._played_back}
            try:
                with self._db.transaction() as conn:
                    owed = self._owed + sum(row[4] for row in buffer)
                    conn.executemany("INSERT INTO recorder (seq, time, kind, in_contact, owed, body) "
                                     "VALUES (?, ?, ?, ?, ?, ?)", buffer)
                    if owe_since is not None:
                        owed += conn.execute("UPDATE recorder SET owed = 1 WHERE time >= ? AND owed = 0",
                                             (owe_since,)).rowcount
                    for value in (True, False):
                        seqs = [(int(value), seq, int(not value)) for seq, v in marks.items() if v is value]
                        if seqs:
                            changed = conn.executemany("UPDATE recorder SET owed = ? WHERE seq = ? AND owed = ?",
                                                       seqs).rowcount
                            owed += changed if value else -changed
                    records, octets = self._records + len(buffer), self._octets + buffered_octets
                    dropped, dropped_owed, records, octets = self._drop_oldest(conn, records, octets)
                    counters[_META["dropped"]] += dropped
                    conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?) "
                                     "ON CONFLICT(key) DO UPDATE SET value = excluded.value", list(counters.items()))
            except sqlite3.Error:
                self._restore(buffer, buffered_octets, owe_since, marks)
                raise
            with self._lock:
                self._records, self._octets, self._owed = records, octets, owed - dropped_owed
                self._dropped += dropped

    def _drop_oldest(self, conn: sqlite3.Connection, records: int, octets: int) -> tuple[int, int, int, int]:
        """Delete the oldest records until both capacities hold: (dropped, of them owed, records, octets)."""
        dropped = dropped_owed = 0
        last = 0
        while records > self.capacity_records or octets > self.capacity_octets:
            rows = conn.execute("SELECT seq, length(body), owed FROM recorder WHERE seq > ? ORDER BY seq LIMIT ?",
                                (last, _DROP_CHUNK)).fetchall()
            if not rows:
                break
            for seq, size, owed in rows:
                if records <= self.capacity_records and octets <= self.capacity_octets:
                    break
                last, records, octets = seq, records - 1, octets - size
                dropped += 1
                dropped_owed += owed
        if dropped:
            conn.execute("DELETE FROM recorder WHERE seq <= ?", (last,))
        return dropped, dropped_owed, records, octets

    def _restore(self, buffer: deque[_Row], octets: int, owe_since: float | None, marks: dict[int, bool]) -> None:
        """A failed commit: put back what it took, ahead of what came since."""
        with self._lock:
            buffer.extend(self._buffer)
            self._buffer = buffer
            self._buffer_octets += octets
            if owe_since is not None:
                self._owe_since = owe_since if self._owe_since is None else min(self._owe_since, owe_since)
            self._marks = {**marks, **self._marks}
            self._write_errors += 1

    # --- reading -------------------------------------------------------------------------------
    def owed(self, kind: int, after_seq: int, limit: int) -> list[Record]:
        """Committed owed records of a kind with seq above after_seq, oldest first."""
        return self._records_where("owed = 1 AND kind = ? AND seq > ? ORDER BY seq LIMIT ?", (kind, after_seq, limit))

    def between(self, start: float, end: float, kinds: Collection[int], after_seq: int, limit: int) -> list[Record]:
        """Committed records recorded from start to end (onboard time, inclusive) of the kinds,
        with seq above after_seq, in seq order."""
        marks = ", ".join("?" * len(kinds))
        return self._records_where(f"time >= ? AND time <= ? AND kind IN ({marks}) AND seq > ? ORDER BY seq LIMIT ?",
                                   (start, end, *kinds, after_seq, limit))

    def count_between(self, start: float, end: float, kinds: Collection[int]) -> tuple[int, int | None, int | None]:
        """(count, first seq, last seq) of the committed records between() would give."""
        marks = ", ".join("?" * len(kinds))
        return self._db.query(f"SELECT count(*), min(seq), max(seq) FROM recorder WHERE time >= ? AND time <= ? "
                              f"AND kind IN ({marks})", (start, end, *kinds))[0]

    def _records_where(self, where: str, params: tuple) -> list[Record]:
        rows = self._db.query(f"SELECT seq, time, kind, in_contact, body FROM recorder WHERE {where}", params)
        return [Record(seq, time, kind, bool(in_contact), body) for seq, time, kind, in_contact, body in rows]

    def stats(self) -> RecorderStats:
        with self._lock:
            records, octets = self._records + len(self._buffer), self._octets + self._buffer_octets
            fill = max(records / self.capacity_records, octets / self.capacity_octets)
            return RecorderStats(records, octets, min(fill, 1.0), self._owed, self._dropped, self._played_back,
                                 self._write_errors)

    # --- the flush thread ----------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stop the flush thread and commit what is left (the database stays open)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5.0)
        self._flush_logged()

    def _run(self) -> None:
        while not self._stop.wait(self._flush_period_s):
            self._flush_logged()

    def _flush_logged(self) -> None:
        try:
            self.flush()
        except sqlite3.Error as exc:  # kept in memory and tried again next period; counted
            log.warning("recorder commit failed, %d records wait in memory: %s", len(self._buffer), exc)
