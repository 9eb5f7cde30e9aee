"""Reliable downlink of results under drops, duplicates, reordering and outages."""
import random
import zlib

from cobs import cobs
from hypothesis import given, settings, strategies as st

from flight.link.codec import PacketCodec
from flight.link.dictionary import load_dictionary
from flight.link.event_reporter import EventReporter
from flight.link.keys import KeyRing
from flight.link.result_downlink import ResultDownlink
from flight.link.sack import from_ranges, to_ranges
from flight.link.sdls import result_mac
from flight.link.telemetry import Telemetry
from flight.store.onboard_db import OnboardDb
from flight.store.result_store import ResultStore
from ground.archive import GroundArchive
from ground.result_assembly import ResultAssembler
from ground.client import GroundClient
from tests.link.conftest import open_ground
from tests.link.helpers import wait_until
from tests.link.stand_in_jobs import result_text, stand_in_text

D = load_dictionary()
CODEC = PacketCodec(D)
SPI, KEY = 1, bytes(range(32))
KEYS = KeyRing({SPI: KEY})


@given(st.sets(st.integers(0, 300)))
def test_sack_ranges_round_trip(indices):
    ranges = to_ranges(indices)
    assert from_ranges(ranges, 301) == indices
    assert all(a < b for a, b in ranges) and all(ranges[i][1] < ranges[i + 1][0] for i in range(len(ranges) - 1))


def test_hostile_sack_ranges_are_clipped():
    assert from_ranges([[0, 2**32 - 1]], 3) == {0, 1, 2}


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32), drop=st.floats(0, 0.5), dup=st.floats(0, 0.5), reorder=st.floats(0, 0.5),
       tamper=st.sampled_from([0.0, 0.1]))
def test_every_result_arrives_once_over_a_bad_channel(tmp_path_factory, seed, drop, dup, reorder, tamper):
    """Flight downlink and ground assembler joined by a simulated channel, on a virtual clock.
    With tamper, some segments arrive with altered data: the ground discards the result and
    re-requests it, and still archives every genuine result exactly once."""
    tmp = tmp_path_factory.mktemp("dl")
    rng = random.Random(seed)
    store = ResultStore(OnboardDb(tmp / "onboard.sqlite"), D.segment_octets)
    telemetry = Telemetry(D)
    telemetry.zero(["DL_SEGMENTS_SENT", "DL_SEGMENTS_RETRANSMITTED", "DL_RESULTS_DELIVERED"])
    events = EventReporter(D, telemetry, lambda event, fields: None)
    expected = {}
    for job_id, size in enumerate([0, 1, D.segment_octets, D.segment_octets + 1, 3 * D.segment_octets - 7], start=1):
        data = rng.randbytes(size)
        store.store_result(job_id, data, SPI, result_mac(KEY, job_id, data))
        expected[job_id] = data
    now = [0.0]
    downlink = ResultDownlink(store, telemetry, events, rto_s=1.0, link_up=lambda: True)
    archive = GroundArchive(tmp / "ground.sqlite")
    assembler = ResultAssembler(archive, KEYS, D.segment_octets, D.max_packet_octets - 64)
    in_flight: list[bytes] = []
    for _ in range(4000):
        item, _wait = downlink.poll(now[0])
        if item is not None:
            kind, fields = item
            if fields["data"] and rng.random() < tamper:
                fields = dict(fields, data=bytes([fields["data"][0] ^ 1]) + fields["data"][1:])
            packet = CODEC.encode_tm(kind, fields, seq_count=0)
            if rng.random() >= drop:
                in_flight.append(packet)
                if rng.random() < dup:
                    in_flight.append(packet)
        if in_flight and (item is None or rng.random() < 0.5):
            index = rng.randrange(len(in_flight)) if rng.random() < reorder else 0
            assembler.on_segment(CODEC.decode_tm(in_flight.pop(index)).fields)
        if item is None:
            now[0] += 0.25
            if rng.random() >= drop:  # the SACK itself may be lost
                downlink.on_sack(assembler.sack_entries())
        if not store.pending_results() and not in_flight:
            break
    assert archive.results() == expected
    assert store.pending_results() == []
    assert telemetry.get("DL_RESULTS_DELIVERED") == len(expected)
    assert assembler.counters["RESULTS_COMPLETED"] == len(expected)
    assert assembler.counters["SEGMENTS_INCONSISTENT"] == assembler.counters["RESULTS_UNAUTHENTIC"] == 0
    assert tamper or assembler.counters["RESULTS_CORRUPT"] == 0


def test_inconsistent_segments_are_refused(tmp_path):
    assembler = ResultAssembler(GroundArchive(tmp_path / "g.sqlite"), KEYS, D.segment_octets, 1000)
    base = {"job_id": 1, "segment": 0, "segment_count": 2, "result_octets": D.segment_octets + 3,
            "result_crc32": 1, "spi": SPI, "result_mac": bytes(16), "data": b"x" * D.segment_octets}
    assert not assembler.on_segment(base)
    for bad in ({"segment": 2}, {"data": b"short"}, {"result_octets": 5}, {"result_crc32": 2}, {"segment_count": 0}):
        assert not assembler.on_segment({**base, **bad})
    assert assembler.counters["SEGMENTS_INCONSISTENT"] == 5
    assert assembler.counters["SEGMENTS_NEW"] == 1


def test_jobs_complete_end_to_end_through_an_impaired_radio(relay, flight, tmp_path, keyfile):
    for direction in (relay.up, relay.down):
        direction.drop, direction.duplicate, direction.reorder = 0.15, 0.1, 0.1
    ground = open_ground(relay, tmp_path, keyfile)
    try:
        jobs = {}
        for prompt, tokens in (("short answer", 3), ("a longer answer spanning many segments", 2000), ("x", 1)):
            # token ids: the stand-in's are pseudo-random, so the long result spans several segments
            job_id = ground.submit_job(prompt, tokens, timeout=1.0, attempts=20, token_ids=True)
            jobs[job_id] = stand_in_text(prompt, tokens)
        for job_id, text in jobs.items():
            assert result_text(ground.await_result(job_id, timeout=30)) == text
        assert {job_id: result_text(data) for job_id, data in ground.results().items()} == jobs
        assert max(len(data) for data in ground.results().values()) > 4 * D.segment_octets  # several segments
        wait_until(lambda: not flight.service.results.pending_results(), what="all results acknowledged")
    finally:
        ground.close()
    assert relay.down.stats["dropped"] > 0 and relay.down.stats["duplicated"] > 0
    segments_lost = [f for f in relay.down.dropped_frames
                     if CODEC.decode_tm(cobs.decode(f[:-1])).name == "JOB_RESULT_SEGMENT"]
    assert flight.service.telemetry.get("DL_SEGMENTS_RETRANSMITTED") > 0 or not segments_lost


def test_nothing_is_sent_while_out_of_contact_and_all_is_sent_after(relay, flight, tmp_path, keyfile):
    ground = open_ground(relay, tmp_path, keyfile)
    try:
        relay.up.drop = 1.0
        ground.await_event("LINK_CONTACT_LOST", timeout=10)
        data = bytes(range(256)) * 20
        flight.service.publish_result(77, data, 1)
        since = ground.history_index()
        # Several housekeeping periods pass with no segment on the line.
        for _ in range(5):
            since = ground.await_packet(lambda p: p.name == "HK", since=since).index + 1
        assert not any(r.packet.name == "JOB_RESULT_SEGMENT" for r in list(ground._history))
        relay.up.drop = 0.0
        assert ground.await_result(77, timeout=20) == data
        assert zlib.crc32(ground.results()[77]) == zlib.crc32(data)
    finally:
        ground.close()


def test_ground_acknowledges_everything_it_archived_before_it_exits(relay, flight, tmp_path, keyfile):
    """No periodic SACK in this session: only the one sent on close can tell the flight."""
    ground = GroundClient(relay.ground_path, keys=keyfile, archive=tmp_path / "g.sqlite", sack_interval_s=3600).connect()
    try:
        job_id = ground.submit_job("acknowledge me before you go", 5)
        ground.await_result(job_id, timeout=20)
        assert flight.service.results.pending_results() != []
    finally:
        ground.close()
    wait_until(lambda: not flight.service.results.pending_results(), timeout=10, what="result acknowledged on close")
