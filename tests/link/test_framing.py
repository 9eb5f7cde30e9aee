"""The deframer: resynchronisation, rejections by kind, the (packet, leftover, discarded) contract."""
from flight.link.codec import PacketCodec
from flight.link.dictionary import load_dictionary
from flight.link.framing import Deframer, frame, max_frame_octets
from flight.link.onboard_time import CucTime

D = load_dictionary()
CODEC = PacketCodec(D)


def hk(seq: int) -> bytes:
    return CODEC.encode_tm("HK", {"channels": {1: seq}}, seq, CucTime(5, 6))


def test_deframe_contract():
    deframer = Deframer(D.max_packet_octets)
    good = frame(hk(1))
    assert deframer.deframe(good[:5]) == (None, good[:5], b"")
    packet, leftover, discarded = deframer.deframe(good + b"rest")
    assert (packet, leftover, discarded) == (hk(1), b"rest", b"")
    packet, leftover, discarded = deframer.deframe(b"junk\x00" + good)
    assert (packet, leftover, discarded) == (None, good, b"junk\x00")
    assert deframer.counters["BAD_FRAME"] == 1


def test_idle_delimiters_are_not_errors():
    deframer = Deframer(D.max_packet_octets)
    assert deframer.feed(b"\x00\x00\x00" + frame(hk(1)) + b"\x00") == [hk(1)]
    assert deframer.counters == {**deframer.counters, "FRAMES_OK": 1, "DISCARDED_OCTETS": 0, "BAD_FRAME": 0}


def test_resynchronises_after_garbage_and_counts_each_kind():
    rejected = []
    deframer = Deframer(D.max_packet_octets, on_reject=lambda reason, octets: rejected.append(reason))
    flipped = bytearray(hk(2))
    flipped[13] ^= 0x40
    stream = (
        b"\x17\x42 line noise \x00" + frame(hk(1))  # invalid COBS
        + frame(bytes(flipped))  # bad CRC
        + b"\x05\x01\x02\x00" + frame(hk(3))  # valid COBS, far too short
        + b"\x01" * (max_frame_octets(D.max_packet_octets) + 10) + b"\x00" + frame(hk(4))  # oversize
    )
    assert deframer.feed(stream) == [hk(1), hk(3), hk(4)]
    assert rejected == ["BAD_FRAME", "BAD_CRC", "BAD_FRAME", "OVERSIZE"]
    c = deframer.counters
    assert (c["FRAMES_OK"], c["BAD_FRAME"], c["BAD_CRC"], c["OVERSIZE"]) == (3, 2, 1, 1)
    assert c["DISCARDED_OCTETS"] == len(stream) - sum(len(frame(hk(n))) for n in (1, 3, 4))


def test_oversize_without_delimiter_is_dropped_as_it_arrives():
    deframer = Deframer(D.max_packet_octets)
    limit = max_frame_octets(D.max_packet_octets)
    for _ in range(5):  # a stuck transmitter: no 0x00 for a long time
        assert deframer.feed(b"\x07" * limit) == []
    assert deframer.counters["OVERSIZE"] == 1
    assert len(deframer._buffer) == 0  # memory stays bounded
    assert deframer.feed(b"\x07\x00" + frame(hk(9))) == [hk(9)]
    assert deframer.counters["DISCARDED_OCTETS"] == 5 * limit + 2


def test_largest_legal_packet_passes():
    packet = CODEC.encode_tm("JOB_RESULT_SEGMENT", {
        "job_id": 1, "segment": 0, "segment_count": 1, "result_octets": 0, "result_crc32": 0,
        "spi": 1, "result_mac": bytes(16), "data": b"\x00" * (D.max_packet_octets - 60)}, 0)
    deframer = Deframer(D.max_packet_octets)
    assert deframer.feed(frame(packet)) == [packet]


def test_oversize_frame_is_reported_with_its_true_length():
    rejected = []
    deframer = Deframer(D.max_packet_octets, on_reject=lambda reason, octets: rejected.append((reason, octets)))
    junk = bytes(range(1, 251)) * 20  # 5000 octets, no 0x00
    assert len(junk) == 5000 > max_frame_octets(D.max_packet_octets)
    stream = junk + b"\x00" + frame(hk(1))
    packets = []
    for i in range(0, len(stream), 700):  # detection (past the longest frame) comes long before the end
        packets += deframer.feed(stream[i:i + 700])
    assert packets == [hk(1)]
    assert rejected == [("OVERSIZE", 5000)]
    assert deframer.counters["OVERSIZE"] == 1
    assert deframer.counters["DISCARDED_OCTETS"] == 5001


def test_oversize_frame_through_deframe_reports_its_true_length():
    rejected = []
    deframer = Deframer(D.max_packet_octets, on_reject=lambda reason, octets: rejected.append((reason, octets)))
    chunks = [b"\x07" * 3000, b"\x07" * 2000, b"\x07" * 7 + b"\x00" + frame(hk(2))]
    packets, leftover, discarded = [], b"", b""
    for chunk in chunks:
        data = leftover + chunk
        while True:  # take out every frame the chunk completes
            packet, leftover, dropped = deframer.deframe(data)
            discarded += dropped
            if packet is not None:
                packets.append(packet)
            if leftover == data:
                break
            data = leftover
    assert packets == [hk(2)] and leftover == b""
    assert rejected == [("OVERSIZE", 5007)]
    assert discarded == b"\x07" * 5007 + b"\x00"
