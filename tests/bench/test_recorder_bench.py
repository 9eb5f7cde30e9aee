"""The onboard recorder's write rate (issue 8): records/s through Recorder.record and the commit
that makes them durable (the onboard database is synchronous=FULL: one fsync per commit).

Each round records BATCH records and commits them once, as the flush thread does every second;
the body is what the link records: an event (CMD_FAILED, about 40 octets) or a housekeeping
snapshot (every channel, about 0.6 kB). "full" runs at capacity, so each commit also drops as
many of the oldest records: the steady state of a recorder that has run for days.

For scale, what the node asks of it: a snapshot every 10 s and a few events a second at most.
`make test` runs each body once (benchmarks disabled); assertions are never on time.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from flight.link.codec import PacketCodec
from flight.link.dictionary import load_dictionary
from flight.store.onboard_db import OnboardDb
from flight.store.recorder import Recorder
from tests.link.samples import samples

D = load_dictionary()
CODEC = PacketCodec(D)
SAMPLES = samples(D)
BATCH = 1000
FULL_CAPACITY = 20 * BATCH


@pytest.fixture
def db(tmp_path: Path) -> Iterator[OnboardDb]:
    database = OnboardDb(tmp_path / "onboard.sqlite")
    yield database
    database.close()


@pytest.mark.parametrize("kind, full", [("EVENT", False), ("HK", False), ("HK", True)],
                         ids=["event", "hk", "hk-full"])
def test_recorder_write_rate(benchmark, db, kind, full):
    body = CODEC.encode_body(kind, SAMPLES[kind])
    value = D.enum_value("REC_KIND", kind)
    recorder = Recorder(db, capacity_records=FULL_CAPACITY if full else 10**8, capacity_octets=2**40)
    if full:
        for n in range(FULL_CAPACITY):
            recorder.record(value, 1_800_000_000.0 + n, body, in_contact=False)
        recorder.flush()
    clock = [1_900_000_000.0]

    def write_batch() -> None:
        for _ in range(BATCH):
            clock[0] += 0.001
            recorder.record(value, clock[0], body, in_contact=False)
        recorder.flush()

    benchmark(write_batch)
    stats = recorder.stats()
    if full:
        assert stats.records == FULL_CAPACITY and stats.dropped >= BATCH
    else:
        assert stats.records >= BATCH and stats.dropped == 0
    benchmark.extra_info.update(body_octets=len(body))
    if (timing := getattr(benchmark, "stats", None)) is not None:
        median = timing.stats.median
        benchmark.extra_info.update(records_per_s=round(BATCH / median), mb_per_s=round(BATCH * len(body) / median / 1e6, 2))


def test_recorder_record_call(benchmark, db):
    """What recording costs the thread that emits an event: the EVENT body's encoding and the
    append to the buffer (the commit is the flush thread's)."""
    event = SAMPLES["EVENT"]
    value = D.enum_value("REC_KIND", "EVENT")
    recorder = Recorder(db)

    def record_batch() -> None:
        for _ in range(BATCH):
            recorder.record(value, 1_900_000_000.0, CODEC.encode_body("EVENT", event), in_contact=True)

    benchmark.pedantic(record_batch, setup=recorder.flush, rounds=100)  # each round on an empty buffer
    assert recorder.stats().records >= BATCH
    if (timing := getattr(benchmark, "stats", None)) is not None:
        benchmark.extra_info.update(us_per_record=round(timing.stats.median / BATCH * 1e6, 2))
