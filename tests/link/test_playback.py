"""Playback of the onboard recorder: what an automatic pass sends and in which order, what is owed
again when contact is lost, commanded ranges, where playback stands on the line (after live
traffic, behind results but never starved by them), the REC_PLAYBACK decoder under hypothesis,
and, two-ended over ptys, an event of an outage played back at the next contact."""
from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from flight.link.codec import LinkError, PacketCodec
from flight.link.dictionary import load_dictionary
from flight.link.event_reporter import EventReporter
from flight.link.keys import KeyRing
from flight.link.onboard_time import CucTime
from flight.link.playback import MAX_REQUESTS, PLAYBACK_EVERY, Playback, PlaybackBusy
from flight.link.serial_port import SerialPort
from flight.link.service import LinkService
from flight.link.spacepacket import build_packet
from flight.link.telemetry import Telemetry
from flight.link.tm_writer import SharedBulk, TmWriter
from flight.link.token_bucket import TokenBucket
from flight.store.anti_replay import AntiReplayCounter
from flight.store.onboard_db import OnboardDb
from flight.store.recorder import Recorder
from flight.store.result_store import ResultStore
from ground.client import CommandError
from tests.link.conftest import FAST, open_ground
from tests.link.helpers import DecodingPort as Port, wait_until
from tests.link.samples import samples

D = load_dictionary()
CODEC = PacketCodec(D)
SAMPLES = samples(D)
EVENT, HK = D.enum_value("REC_KIND", "EVENT"), D.enum_value("REC_KIND", "HK")
HK_BODY = CODEC.encode_body("HK", SAMPLES["HK"])


def event_body(token: int) -> bytes:
    return CODEC.encode_body("EVENT", {"event_id": D.event_by_name["LINK_PING_ANSWERED"].id, "args": [token]})


class Harness:
    """A Playback on a real recorder, its events captured, its link up or down at will."""

    def __init__(self, path: Path):
        self.db = OnboardDb(path)
        self.recorder = Recorder(self.db)
        self.up = True
        self.events: list[tuple[str, list]] = []
        reporter = EventReporter(D, Telemetry(D), lambda event, fields: self.events.append((event.name, fields["args"])))
        self.playback = Playback(self.recorder, D, reporter, lambda: self.up, contact_timeout_s=1.0,
                                 packet_octets=D.segment_octets)

    def drain(self) -> list[dict]:
        """Every packet the playback has now, each checked by the decoder."""
        packets = []
        while (item := self.playback.poll(time.monotonic())[0]) is not None:
            kind, fields = item
            packets.append(CODEC.decode_tm(CODEC.encode_tm(kind, fields, 0)).fields)
        return packets


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path / "onboard.sqlite")
    yield h
    h.db.close()


def test_an_automatic_pass_sends_owed_events_first_then_housekeeping_in_segment_sized_packets(harness):
    rec = harness.recorder
    for i in range(6):
        rec.record(HK, 1000.0 + i, HK_BODY, in_contact=False)
        rec.record(EVENT, 1000.5 + i, event_body(i), in_contact=i == 5)  # the last one the ground heard live
    harness.playback.begin_auto()
    assert harness.events == [("REC_PLAYBACK_STARTED", [D.enum_value("REC_SOURCE", "AUTO"), 11])]
    packets = harness.drain()
    records = [r for p in packets for r in p["records"]]
    assert [r[0] for r in records] == [2, 4, 6, 8, 10, 1, 3, 5, 7, 9, 11]  # events, then snapshots, oldest first
    assert [(r[1], r[2], r[3]) for r in records[:2]] == [(1000.5, EVENT, False), (1001.5, EVENT, False)]
    assert all(p["source"] == D.enum_value("REC_SOURCE", "AUTO") for p in packets)
    for p in packets:  # about a segment each: what the share of the line is counted in
        assert sum(len(r[4]) for r in p["records"]) <= D.segment_octets or len(p["records"]) == 1
    assert harness.events[-1] == ("REC_PLAYBACK_FINISHED", [D.enum_value("REC_SOURCE", "AUTO"), 11, len(packets)])
    rec.flush()
    assert (rec.stats().owed, rec.stats().played_back) == (0, 11)
    harness.playback.begin_auto()  # the next contact: nothing owed, no pass, no event
    assert harness.drain() == [] and len(harness.events) == 2


def test_nothing_is_played_back_while_the_link_is_down(harness):
    harness.recorder.record(EVENT, 1000.0, event_body(1), in_contact=False)
    harness.playback.begin_auto()
    harness.up = False
    assert harness.playback.poll(time.monotonic()) == (None, None)
    harness.up = True
    assert len(harness.drain()) == 1


def test_what_was_played_back_after_the_last_uplink_is_owed_again_when_contact_is_lost(harness):
    rec = harness.recorder
    rec.record(EVENT, 1000.0, event_body(1), in_contact=False)
    rec.record(EVENT, 1001.0, event_body(2), in_contact=False)
    harness.playback.begin_auto()
    heard_before = time.time()
    assert len(harness.drain()) == 1  # both events, one packet, sent after heard_before
    harness.playback.contact_lost(last_heard=heard_before)
    harness.playback.begin_auto()  # commits the marks: both owed again
    assert [r[0] for p in harness.drain() for r in p["records"]] == [1, 2]
    harness.playback.contact_lost(last_heard=time.time() + 1)  # heard after it went: nothing owed again
    rec.flush()
    assert rec.stats().owed == 0


def test_a_commanded_range_goes_before_the_automatic_pass_and_too_many_are_busy(harness):
    rec = harness.recorder
    for i in range(10):
        rec.record(EVENT if i % 2 else HK, 1000.0 + i, event_body(i) if i % 2 else HK_BODY, in_contact=i < 8)
    harness.playback.begin_auto()  # owed: seqs 9 and 10
    data = harness.playback.request(1002.0, 1007.0, EVENT)
    assert data == {"records": 3, "first_seq": 4, "last_seq": 8}
    assert harness.playback.request(5000.0, 6000.0, EVENT | HK) == {"records": 0, "first_seq": None, "last_seq": None}
    packets = harness.drain()
    command, auto = D.enum_value("REC_SOURCE", "COMMAND"), D.enum_value("REC_SOURCE", "AUTO")
    assert [(p["source"], [r[0] for r in p["records"]]) for p in packets] == [(command, [4, 6, 8]), (auto, [10]),
                                                                             (auto, [9])]
    for _ in range(MAX_REQUESTS):
        harness.playback.request(1000.0, 1009.0, HK)
    with pytest.raises(PlaybackBusy):
        harness.playback.request(1000.0, 1009.0, HK)


class Endless:
    """A bulk source that always has a packet: a long result backlog."""

    def __init__(self, kind: str = "JOB_RESULT_SEGMENT"):
        self.kind = kind

    def poll(self, now):
        return (self.kind, SAMPLES[self.kind]), 0.0


class Idle:
    def __init__(self, wait):
        self.wait = wait

    def poll(self, now):
        return None, self.wait


def test_shared_bulk_gives_the_second_source_one_packet_in_every_while_both_wait():
    bulk = SharedBulk(Endless("JOB_RESULT_SEGMENT"), Endless("REC_PLAYBACK"), PLAYBACK_EVERY)
    kinds = [bulk.poll(0.0)[0][0] for _ in range(10 * PLAYBACK_EVERY)]
    assert kinds.count("REC_PLAYBACK") == 10
    assert all(kinds[i] == "REC_PLAYBACK" for i in range(PLAYBACK_EVERY - 1, len(kinds), PLAYBACK_EVERY))
    alone = SharedBulk(Idle(0.3), Endless("REC_PLAYBACK"), PLAYBACK_EVERY)  # no result due: the whole idle line
    assert [alone.poll(0.0)[0][0] for _ in range(5)] == ["REC_PLAYBACK"] * 5
    assert SharedBulk(Idle(0.3), Idle(None), PLAYBACK_EVERY).poll(0.0) == (None, 0.3)


def test_live_packets_go_first_then_results_with_playback_taking_its_share(harness):
    for i in range(40):
        harness.recorder.record(HK, 1000.0 + i, HK_BODY, in_contact=False)
    harness.playback.begin_auto()
    telemetry = Telemetry(D)
    telemetry.zero(["LINK_PACKETS_SENT", "LINK_PACKETS_DROPPED"])
    port = Port()
    writer = TmWriter(port, CODEC, telemetry, SharedBulk(Endless(), harness.playback, PLAYBACK_EVERY),
                      TokenBucket(100.0, 100.0))
    for kind in ("EVENT", "HK", "JOB_TOKENS") * 4:
        writer.submit(kind, SAMPLES[kind])
    writer.start()
    try:
        wait_until(lambda: len(port.packets) >= 12 + 4 * PLAYBACK_EVERY, what="packets written")
    finally:
        writer.stop()
    names = [p.name for p in port.packets]
    assert set(names[:12]) == {"EVENT", "HK", "JOB_TOKENS"}
    bulk = names[12:12 + 4 * PLAYBACK_EVERY]
    assert bulk.count("REC_PLAYBACK") == 4 and bulk.count("JOB_RESULT_SEGMENT") == 4 * (PLAYBACK_EVERY - 1)


RECORD = st.tuples(st.integers(0, 2**64 - 1), st.floats(allow_nan=True, allow_infinity=True),
                   st.integers(0, 3), st.booleans(),
                   st.one_of(st.binary(max_size=40), st.sampled_from([event_body(7), HK_BODY, b"\x92\x01\x90"])))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(source=st.integers(0, 3), records=st.lists(RECORD, max_size=4), wrap=st.booleans())
def test_the_playback_decoder_checks_every_record_or_says_bad_body(source, records, wrap):
    body = [source, [list(r) for r in records]] if wrap else [list(r) for r in records]
    packet = build_packet(False, D.packet("REC_PLAYBACK").apid, 0, CucTime(1_800_000_000, 0), msgpack.packb(body))
    try:
        decoded = CODEC.decode_tm(packet)
    except LinkError as exc:
        assert exc.reason == "BAD_BODY" and "\n" not in str(exc)
        return
    for seq, _, kind, _, body_octets in decoded.fields["records"]:  # what the ground then reads of each
        kind_def, fields = CODEC.decode_record_body(kind, body_octets)
        assert kind_def.name in ("EVENT", "HK")


# --- two-ended, over ptys and the simulated radio -----------------------------------------------

@pytest.fixture
def recorded(relay, tmp_path: Path, keyfile: Path) -> Iterator[LinkService]:
    """The flight link in process with a recorder, snapshots every second."""
    db = OnboardDb(tmp_path / "onboard.sqlite")
    recorder = Recorder(db, flush_period_s=0.1)
    service = LinkService(SerialPort(relay.flight_path), KeyRing.load_all([keyfile]), ResultStore(db, D.segment_octets),
                          AntiReplayCounter(db), replace(FAST, record_hk_period_s=1.0), recorder=recorder)
    recorder.start()
    service.start(db.increment_boot_count())
    yield service
    service.stop()
    recorder.close()
    db.close()


def test_an_event_during_an_outage_is_played_back_at_the_next_contact_at_its_own_time(relay, recorded, tmp_path,
                                                                                      keyfile):
    ground = open_ground(relay, tmp_path, keyfile)
    try:
        ground.await_played_back_event("LINK_STARTED", timeout=10)  # made before the first contact: owed
        relay.outage = True
        wait_until(lambda: recorded.telemetry.get("LINK_CONTACT") is False, what="contact lost")
        emitted = time.time()
        recorded.emit_event("LINK_PING_ANSWERED", token=4242)
        time.sleep(0.3)
        since = ground.history_index()
        relay.outage = False
        played = ground.await_played_back_event("LINK_PING_ANSWERED", lambda e: e.args["token"] == 4242,
                                                since=since, timeout=20)
        lost = ground.await_played_back_event("LINK_CONTACT_LOST", since=since, timeout=10)
        with pytest.raises(TimeoutError):  # the outage took the live copies
            ground.await_event("LINK_PING_ANSWERED", timeout=0, since=0)
        archived = [e for e in ground.archive.events() if e["name"] == "LINK_PING_ANSWERED"]
    finally:
        ground.close()
    assert abs(played.event.onboard_time - emitted) < 0.1 and played.onboard_time == played.event.onboard_time
    assert not played.in_contact and not lost.in_contact
    assert [(e["played_back"], e["rec_seq"], e["onboard_time"]) for e in archived] == [
        (True, played.seq, played.onboard_time)]


def test_recorder_playback_plays_back_a_time_range_on_command(relay, recorded, tmp_path, keyfile):
    ground = open_ground(relay, tmp_path, keyfile)
    try:
        ground.await_event("REC_PLAYBACK_FINISHED", timeout=10)  # the first contact's pass, out of the way
        start = time.time()
        for token in (1, 2, 3):
            ground.send_and_await_completion("LINK_PING", token=token)
        end = time.time()
        since = ground.history_index()
        data = ground.send_and_await_completion("RECORDER_PLAYBACK", start=start, end=end, kinds=EVENT).data
        records = {}
        while len(records) < data["records"]:
            record = ground.await_played_back(lambda r: r.seq not in records, since=since, timeout=10)
            records[record.seq] = record
        ground.await_telemetry("REC_PLAYED_BACK", lambda v: v >= data["records"], since=since)
        channels = ground.latest_housekeeping()
        with pytest.raises(CommandError) as refused:
            ground.send_and_await_completion("RECORDER_PLAYBACK", start=end, end=start)
    finally:
        ground.close()
    assert len(records) == data["records"] and (min(records), max(records)) == (data["first_seq"], data["last_seq"])
    assert all(r.kind == "EVENT" and start <= r.onboard_time <= end and r.in_contact for r in records.values())
    assert sorted(r.event.args["token"] for r in records.values() if r.event.name == "LINK_PING_ANSWERED") == [1, 2, 3]
    assert (refused.value.response.status, refused.value.response.reason) == ("FAILED", "BAD_ARGUMENT")
    assert channels["REC_RECORDS"] > data["records"] and 0 < channels["REC_FILL"] < 1e-3
    assert channels["REC_DROPPED"] == channels["REC_OWED"] == channels["REC_WRITE_ERRORS"] == 0


def test_without_a_recorder_there_is_no_playback(ground):
    """[recorder] enabled = false: the command is refused with its reason, and no REC_ channels."""
    with pytest.raises(CommandError) as refused:
        ground.send_and_await_completion("RECORDER_PLAYBACK", start=0.0, end=1.0)
    assert (refused.value.response.status, refused.value.response.reason) == ("REJECTED", "NOT_AVAILABLE")
    ground.await_telemetry("LINK_UPTIME", since=ground.history_index())
    assert not [name for name in ground.latest_housekeeping() if name.startswith("REC_")]
