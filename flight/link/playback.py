"""Playback of the onboard recorder in REC_PLAYBACK packets: a bulk source of the TM writer.

Two kinds of pass:
- automatic, at each contact: the records the ground has presumably not heard (owed), events
  first (they tell what happened: an FDIR firing in a long eclipse must not wait behind hours of
  housekeeping snapshots), then housekeeping, each oldest first;
- commanded (RECORDER_PLAYBACK): a time range in seq order, whether played back before or not.
  Commanded passes go first, in the order they came; an automatic pass under way resumes after.

Where playback stands on the line: after every live queue (the writer polls bulk sources only
when those are empty), and after result segments, which are the product and are acknowledged;
but while both wait, playback gets at least one bulk packet in PLAYBACK_EVERY (SharedBulk), so a
long result backlog cannot starve it for a whole pass. A playback packet holds records up to
about a result segment's octets, so that share is one of octets too: at 115200 baud, about
1.4 kB/s, which brings a 90-minute orbit's events down in seconds and its snapshots (one every
10 s, about 0.6 kB each) in a few minutes; with no result due it takes the whole idle line.

Best effort, no acknowledgement: a record is marked played back as its packet goes to the
writer. When contact is then found lost, what was played back after the last uplink is owed
again (the ground may have gone before it came), so the next contact sends it once more; the
ground drops copies by seq.
"""
from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from flight.link.dictionary import Dictionary
from flight.link.event_reporter import EventReporter
from flight.store.recorder import Record, RecorderStats

log = logging.getLogger(__name__)

PLAYBACK_EVERY = 8  # while results also wait, one bulk packet in this many is playback
MAX_REQUESTS = 4  # commanded passes waiting at once; more is BUSY
_FETCH = 64  # records read from the store at a time
STORE_RETRY_S = 1.0  # after a failed read of the store
# msgpack of a record beyond its body, at most: array header, seq, time, kind, flag, bin header.
RECORD_OVERHEAD_OCTETS = 1 + 9 + 9 + 1 + 1 + 3


class RecordStore(Protocol):
    """What the link needs of the onboard recorder (flight.store.recorder.Recorder)."""

    def record(self, kind: int, onboard_time: float, body: bytes, in_contact: bool) -> int: ...
    def owe_since(self, onboard_time: float) -> None: ...
    def owe(self, seqs: list[int]) -> None: ...
    def played(self, seqs: list[int]) -> None: ...
    def owed(self, kind: int, after_seq: int, limit: int) -> list[Record]: ...
    def between(self, start: float, end: float, kinds: list[int], after_seq: int, limit: int) -> list[Record]: ...
    def count_between(self, start: float, end: float, kinds: list[int]) -> tuple[int, int | None, int | None]: ...
    def flush(self) -> None: ...
    def stats(self) -> RecorderStats: ...


class PlaybackBusy(Exception):
    """MAX_REQUESTS commanded playbacks wait already."""


class _Pass:
    """One playback pass: fetches its records from the store and cuts them into packets."""

    def __init__(self, source: str, fetch: Callable[[int], list[Record]]):
        self.source = source
        self.sent = 0
        self.packets = 0
        self._fetch = fetch
        self._ready: deque[Record] = deque()

    def next_packet(self, octets: int) -> list[Record]:
        """Records for one packet of about `octets` (at least one record); [] when the pass is done."""
        if not self._ready:
            self._ready.extend(self._fetch(_FETCH))
        packet: list[Record] = []
        size = 0
        while self._ready and (not packet or size + len(self._ready[0].body) + RECORD_OVERHEAD_OCTETS <= octets):
            record = self._ready.popleft()
            packet.append(record)
            size += len(record.body) + RECORD_OVERHEAD_OCTETS
        self.sent += len(packet)
        self.packets += bool(packet)
        return packet


class _Cursor:
    """Where a pass stands in the store: after this seq, within the current kind of an ordered list."""

    def __init__(self, kinds: list[int]):
        self.kinds = kinds
        self.after = 0


class Playback:
    def __init__(self, store: RecordStore, dictionary: Dictionary, events: EventReporter,
                 link_up: Callable[[], bool], contact_timeout_s: float, packet_octets: int):
        self._store = store
        self._events = events
        self._link_up = link_up
        self._packet_octets = packet_octets
        self._kinds = dictionary.enums["REC_KIND"].values  # name -> value; the values are also bits
        self._sources = dictionary.enums["REC_SOURCE"].values
        # Played-back packets are kept this long for contact_lost(): the contact timeout is the
        # longest the node can go on sending to a ground that has gone.
        self._recent_s = 2 * contact_timeout_s
        self._requests: deque[_Pass] = deque()
        self._auto: _Pass | None = None
        self._recent: deque[tuple[float, list[int]]] = deque()  # (onboard time sent, seqs)
        self._lock = threading.Lock()

    # --- starting passes -----------------------------------------------------------------------
    def begin_auto(self) -> None:
        """Contact acquired: start (or restart) the automatic pass over the owed records."""
        try:
            self._store.flush()  # so the pass sees what was recorded up to now, and the owed marks
        except sqlite3.Error as exc:
            log.warning("recorder not committed before playback: %s", exc)
        owed = self._store.stats().owed
        cursor = _Cursor([self._kinds["EVENT"], self._kinds["HK"]])
        with self._lock:
            self._auto = _Pass("AUTO", lambda limit: self._owed(cursor, limit)) if owed else None
        if owed:
            self._events.emit("REC_PLAYBACK_STARTED", source=self._sources["AUTO"], records=min(owed, 0xFFFFFFFF))

    def request(self, start: float, end: float, kinds: int) -> dict[str, Any]:
        """RECORDER_PLAYBACK: queue the records from start to end (onboard time) whose REC_KIND
        value is a bit of kinds; the completion data. PlaybackBusy, or sqlite3.Error."""
        wanted = [value for value in self._kinds.values() if value & kinds]
        self._store.flush()  # the range includes what was recorded up to the command
        count, first, last = self._store.count_between(start, end, wanted)
        if count:
            cursor = _Cursor(wanted)

            def fetch(limit: int) -> list[Record]:
                records = self._store.between(start, end, cursor.kinds, cursor.after, limit)
                cursor.after = records[-1].seq if records else cursor.after
                return records

            with self._lock:
                if len(self._requests) >= MAX_REQUESTS:
                    raise PlaybackBusy(f"{MAX_REQUESTS} commanded playbacks wait already")
                self._requests.append(_Pass("COMMAND", fetch))
            self._events.emit("REC_PLAYBACK_STARTED", source=self._sources["COMMAND"], records=min(count, 0xFFFFFFFF))
        return {"records": count, "first_seq": first, "last_seq": last}

    def _owed(self, cursor: _Cursor, limit: int) -> list[Record]:
        """The automatic pass's next owed records: each kind in turn, oldest first."""
        while cursor.kinds:
            records = self._store.owed(cursor.kinds[0], cursor.after, limit)
            if records:
                cursor.after = records[-1].seq
                return records
            cursor.kinds.pop(0)
            cursor.after = 0
        return []

    def contact_lost(self, last_heard: float) -> None:
        """What was played back after last_heard (onboard time of the last uplink) is owed again."""
        with self._lock:
            seqs = [seq for sent, batch in self._recent if sent >= last_heard for seq in batch]
            self._recent.clear()
        if seqs:
            self._store.owe(seqs)

    # --- the bulk source -----------------------------------------------------------------------
    def poll(self, now: float) -> tuple[tuple[str, dict[str, Any]] | None, float | None]:
        if not self._link_up():
            return None, None
        finished: list[_Pass] = []
        with self._lock:
            try:
                packet, source = self._take(finished)
            except sqlite3.Error as exc:  # the writer thread must not die of it; try again later
                log.warning("recorder not readable for playback: %s", exc)
                return None, STORE_RETRY_S
            if packet:
                sent = time.time()
                self._recent.append((sent, [record.seq for record in packet]))
                while self._recent[0][0] < sent - self._recent_s:
                    self._recent.popleft()
        # Events outside the lock, as everywhere here: the writer thread holds its own lock when it
        # takes this one, so no thread may hold this one while it waits for the writer's.
        for done in finished:
            self._events.emit("REC_PLAYBACK_FINISHED", source=self._sources[done.source],
                              records=min(done.sent, 0xFFFFFFFF), packets=min(done.packets, 0xFFFFFFFF))
        if not packet:
            return None, None
        self._store.played([record.seq for record in packet])
        return ("REC_PLAYBACK", {"source": self._sources[source], "records": [
            [record.seq, record.time, record.kind, record.in_contact, record.body] for record in packet]}), 0.0

    def _take(self, finished: list[_Pass]) -> tuple[list[Record], str]:
        """The next packet's records and its pass's source; passes that ran out go to finished."""
        while True:
            current = self._requests[0] if self._requests else self._auto
            if current is None:
                return [], ""
            packet = current.next_packet(self._packet_octets)
            if packet:
                return packet, current.source
            finished.append(current)
            if self._requests:
                self._requests.popleft()
            else:
                self._auto = None
