"""The onboard recorder's store: bounded (oldest dropped first, counted), persistent across a
reopen, seqs never reused, time-range and owed queries, and a failed commit loses nothing."""
from __future__ import annotations

import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from flight.store.onboard_db import OnboardDb
from flight.store.recorder import Recorder
from tests.link.helpers import wait_until

EVENT, HK = 1, 2


def open_recorder(path: Path, **kwargs) -> tuple[OnboardDb, Recorder]:
    db = OnboardDb(path)
    return db, Recorder(db, **kwargs)


def seqs(records) -> list[int]:
    return [r.seq for r in records]


def test_oldest_records_are_dropped_first_and_counted(tmp_path):
    db, rec = open_recorder(tmp_path / "db", capacity_records=5)
    for i in range(8):
        rec.record(EVENT, 1000.0 + i, b"e%d" % i, in_contact=False)
    rec.flush()
    assert seqs(rec.between(0, 2000, [EVENT], 0, 100)) == [4, 5, 6, 7, 8]
    stats = rec.stats()
    assert (stats.records, stats.dropped, stats.owed, stats.fill) == (5, 3, 5, 1.0)
    rec.record(EVENT, 2000.0, b"e8", in_contact=True)
    rec.flush()
    assert seqs(rec.between(0, 3000, [EVENT], 0, 100)) == [5, 6, 7, 8, 9]
    assert (rec.stats().dropped, rec.stats().owed) == (4, 4)  # seq 4 was owed; 9 was recorded in contact
    db.close()


def test_capacity_in_octets(tmp_path):
    db, rec = open_recorder(tmp_path / "db", capacity_octets=100)
    for i in range(10):
        rec.record(HK, 1000.0 + i, bytes(30), in_contact=True)
    rec.flush()
    stats = rec.stats()
    assert (stats.records, stats.octets, stats.dropped) == (3, 90, 7)
    assert seqs(rec.between(0, 2000, [HK], 0, 100)) == [8, 9, 10]
    db.close()


def test_records_counters_and_seqs_survive_a_reopen(tmp_path):
    db, rec = open_recorder(tmp_path / "db", capacity_records=3)
    for i in range(5):
        rec.record(EVENT, 1000.0 + i, b"x", in_contact=False)
    rec.flush()
    rec.played([4])
    rec.close()
    db.close()
    db, rec = open_recorder(tmp_path / "db", capacity_records=3)
    stats = rec.stats()
    assert (stats.records, stats.dropped, stats.played_back, stats.owed) == (3, 2, 1, 2)
    assert [(r.seq, r.time, r.kind, r.in_contact, r.body) for r in rec.owed(EVENT, 0, 10)] == [
        (3, 1002.0, EVENT, False, b"x"), (5, 1004.0, EVENT, False, b"x")]
    assert rec.record(EVENT, 2000.0, b"y", in_contact=True) == 6
    db.close()


def test_a_seq_is_never_reused_even_when_every_record_was_dropped(tmp_path):
    db, rec = open_recorder(tmp_path / "db", capacity_octets=65536)
    rec.record(HK, 1000.0, bytes(70000), in_contact=True)  # alone beyond capacity: dropped at once
    rec.flush()
    assert rec.stats().records == 0
    rec.close()
    db.close()
    db, rec = open_recorder(tmp_path / "db")
    assert rec.record(EVENT, 2000.0, b"y", in_contact=True) == 2
    db.close()


def test_time_range_and_kinds(tmp_path):
    db, rec = open_recorder(tmp_path / "db")
    for i in range(10):
        rec.record(EVENT if i % 2 else HK, 1000.0 + i, b"r%d" % i, in_contact=i < 5)
    rec.flush()
    assert seqs(rec.between(1002.0, 1006.0, [EVENT, HK], 0, 100)) == [3, 4, 5, 6, 7]
    assert seqs(rec.between(1002.0, 1006.0, [EVENT], 0, 100)) == [4, 6]
    assert seqs(rec.between(1002.0, 1006.0, [EVENT, HK], 4, 2)) == [5, 6]  # paging: after seq 4, two at a time
    assert rec.count_between(1002.0, 1006.0, [HK]) == (3, 3, 7)
    assert rec.count_between(5000.0, 6000.0, [HK]) == (0, None, None)
    db.close()


def test_owed_marks(tmp_path):
    db, rec = open_recorder(tmp_path / "db")
    for i in range(6):
        rec.record(EVENT, 1000.0 + i, b"e", in_contact=i >= 3)  # out of contact, then in contact
    rec.flush()
    assert seqs(rec.owed(EVENT, 0, 10)) == [1, 2, 3]
    rec.played([1, 2])
    rec.flush()
    assert seqs(rec.owed(EVENT, 0, 10)) == [3]
    rec.owe_since(1004.0)  # contact found lost: the ground was last heard at 1004
    rec.owe([2])  # and a playback packet sent after that
    rec.flush()
    assert seqs(rec.owed(EVENT, 0, 10)) == [2, 3, 5, 6]
    assert rec.stats().owed == 4 and rec.stats().played_back == 2
    db.close()


def test_a_failed_commit_keeps_everything_for_the_next(tmp_path, monkeypatch):
    db, rec = open_recorder(tmp_path / "db")
    rec.record(EVENT, 1000.0, b"a", in_contact=False)
    rec.played([99])

    @contextmanager
    def refusing():
        raise sqlite3.OperationalError("database or disk is full")
        yield

    with monkeypatch.context() as patch:
        patch.setattr(db, "transaction", refusing)
        with pytest.raises(sqlite3.OperationalError):
            rec.flush()
    rec.record(EVENT, 1001.0, b"b", in_contact=False)
    assert rec.stats().write_errors == 1 and rec.stats().records == 2
    rec.flush()
    assert [(r.seq, r.body) for r in rec.owed(EVENT, 0, 10)] == [(1, b"a"), (2, b"b")]
    assert rec.stats().played_back == 1
    db.close()


def test_the_flush_thread_commits_within_its_period_and_close_commits_the_rest(tmp_path):
    """What a kill -9 can lose: what the flush thread has not committed yet, at most its period."""
    db, rec = open_recorder(tmp_path / "db", flush_period_s=0.2)
    rec.start()

    def committed() -> int:
        with sqlite3.connect(tmp_path / "db") as other:  # what a restart after a kill -9 would find
            return other.execute("SELECT count(*) FROM recorder").fetchone()[0]

    rec.record(EVENT, time.time(), b"a", in_contact=False)
    wait_until(lambda: committed() == 1, timeout=5, what="flush thread commit")
    rec.record(EVENT, time.time(), b"b", in_contact=False)
    rec.close()
    assert committed() == 2
    db.close()
