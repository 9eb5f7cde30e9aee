"""Round trips of every packet kind, and the flight encoder's output read by independent decoders."""
import hashlib
import hmac
import struct

import msgpack
import pytest
from cobs import cobs as independent_cobs
from fastcrc import crc16
from spacepackets.ccsds.spacepacket import PacketType, SpacePacketHeader

from flight.link.codec import LinkError, PacketCodec
from flight.link.dictionary import ValueCheckError, load_dictionary
from flight.link.framing import Deframer, frame
from flight.link.keys import KeyRing
from flight.link.onboard_time import CucTime
from flight.link.sdls import SECURITY_HEADER, compute_mac
from flight.link.spacepacket import append_crc, encode_headers
from tests.link.samples import SEAL, encode_tm_sample, samples

D = load_dictionary()
CODEC = PacketCodec(D)
KEY = bytes(range(32))
KEYS = KeyRing({3: KEY})
SAMPLES = samples(D)
T = CucTime(1_800_000_000, 12345)


def test_every_packet_kind_has_a_sample():
    assert set(SAMPLES) == {p.name for p in D.packets}


@pytest.mark.parametrize("kind", [p.name for p in D.packets if not p.is_tc])
def test_tm_round_trip(kind):
    packet = encode_tm_sample(CODEC, kind, SAMPLES[kind], 99, T)
    decoded = CODEC.decode_tm(packet)
    assert (decoded.name, decoded.seq_count, decoded.time, decoded.fields) == (kind, 99, T, SAMPLES[kind])
    if D.packet(kind).secured:
        assert (decoded.security.spi, decoded.security.arsn) == (SEAL.spi, SEAL.arsn)
        assert CODEC.verify_tm(decoded, SEAL.key, SEAL.associated)
        assert not CODEC.verify_tm(decoded, SEAL.key)  # the associated data is part of the MAC
        assert not CODEC.verify_tm(decoded, bytes(32), SEAL.associated)


def test_secured_kinds_need_a_seal_and_others_refuse_one():
    with pytest.raises(ValueError, match="secured"):
        CODEC.encode_tm("CMD_RESPONSE", SAMPLES["CMD_RESPONSE"], 0)
    with pytest.raises(ValueError, match="secured"):
        CODEC.encode_tm("HK", SAMPLES["HK"], 0, seal=SEAL)


def test_optional_trailing_field_is_left_out_at_its_default_and_read_back_as_it():
    """A 1.x ground sends COMMAND as [opcode, args]; the node reads confirm_hazardous as false."""
    ping = D.command_by_name["LINK_PING"].opcode
    old = CODEC.encode_tc("COMMAND", {"opcode": ping, "args": [5]}, 0, spi=3, arsn=1, key=KEY)
    new = CODEC.encode_tc("COMMAND", {"opcode": ping, "args": [5], "confirm_hazardous": False}, 0, spi=3, arsn=1,
                          key=KEY, time=CODEC.authenticate_tc(old, KEYS).time)
    assert old == new
    assert msgpack.unpackb(CODEC.authenticate_tc(old, KEYS).body) == [ping, [5]]
    assert CODEC.decode_tc_fields(CODEC.authenticate_tc(old, KEYS))["confirm_hazardous"] is False


@pytest.mark.parametrize("kind", [p.name for p in D.packets if p.is_tc])
def test_tc_round_trip(kind):
    packet = CODEC.encode_tc(kind, SAMPLES[kind], 7, spi=3, arsn=2**64 - 1, key=KEY, time=T)
    tc = CODEC.authenticate_tc(packet, KEYS)
    assert (tc.kind.name, tc.seq_count, tc.time, tc.spi, tc.arsn) == (kind, 7, T, 3, 2**64 - 1)
    assert CODEC.decode_tc_fields(tc) == SAMPLES[kind]


def test_command_arguments_come_back_by_name():
    packet = CODEC.encode_tc("COMMAND", SAMPLES["COMMAND"], 0, spi=3, arsn=1, key=KEY)
    tc = CODEC.authenticate_tc(packet, KEYS)
    command, args = CODEC.command_of(tc, CODEC.decode_tc_fields(tc))
    assert command.name == "JOB_SUBMIT"
    assert args == {"job_id": 7, "max_tokens": 64, "prompt": "Why orbit?", "chat": False, "stream": False,
                    "priority": 0, "deadline": 0, "temperature": 0, "top_k": 0, "top_p": 1, "seed": 0, "token_ids": False}


def test_optional_arguments_travel_only_when_not_at_their_default():
    submit = D.command_by_name["JOB_SUBMIT"]
    assert submit.order_args({"job_id": 1, "max_tokens": 2, "prompt": "p"}) == [1, 2, "p"]
    assert submit.order_args({"job_id": 1, "max_tokens": 2, "prompt": "p", "seed": 9}) == [1, 2, "p", False, False, 0, 0,
                                                                                            0, 0, 1, 9]
    with pytest.raises(ValueCheckError, match="takes 3 to 12 arguments"):
        submit.check_args([1, 2])
    with pytest.raises(ValueCheckError, match="priority"):
        submit.check_args([1, 2, "p", False, False, 101])


@pytest.mark.parametrize("kind", [p.name for p in D.packets])
def test_flight_stream_decodes_with_independent_packages(kind):
    """cobs splits and decodes the stream, spacepackets reads the headers, fastcrc checks the CRC,
    msgpack and hmac read body and MAC: nothing of ours on the decoding side."""
    definition = D.packet(kind)
    packets = [
        CODEC.encode_tc(kind, SAMPLES[kind], n, spi=3, arsn=100 + n, key=KEY, time=T) if definition.is_tc
        else encode_tm_sample(CODEC, kind, SAMPLES[kind], n, T)
        for n in range(3)
    ]
    stream = b"".join(frame(p) for p in packets)
    pieces = stream.split(b"\x00")
    assert pieces[-1] == b""
    for n, encoded in enumerate(pieces[:-1]):
        raw = independent_cobs.decode(encoded)
        header = SpacePacketHeader.unpack(raw)
        assert header.packet_type == (PacketType.TC if definition.is_tc else PacketType.TM)
        assert (header.apid, header.seq_count, header.packet_len) == (definition.apid, n, len(raw))
        assert crc16.ibm_3740(raw[:-2]) == struct.unpack(">H", raw[-2:])[0]
        assert struct.unpack(">IH", raw[6:12]) == tuple(T)
        user = raw[12:-2]
        if definition.is_tc:
            spi, arsn = struct.unpack(">HQ", user[:10])
            assert (spi, arsn) == (3, 100 + n)
            assert hmac.new(KEY, raw[:-18], hashlib.sha256).digest()[:16] == raw[-18:-2]
            user = user[10:-16]
        elif definition.secured:
            assert struct.unpack(">HQ", user[:10]) == (SEAL.spi, SEAL.arsn)
            assert hmac.new(SEAL.key, raw[:-18] + SEAL.associated, hashlib.sha256).digest()[:16] == raw[-18:-2]
            user = user[10:-16]
        values = msgpack.unpackb(user, raw=False, strict_map_key=False)
        assert values == [SAMPLES[kind][f.name] for f in definition.fields]


@pytest.mark.parametrize("data, encoded", [
    # Vectors from the COBS literature (Cheshire & Baker; Wikipedia's examples).
    (b"\x00", b"\x01\x01"),
    (b"\x00\x00", b"\x01\x01\x01"),
    (b"\x11\x22\x00\x33", b"\x03\x11\x22\x02\x33"),
    (b"\x11\x22\x33\x44", b"\x05\x11\x22\x33\x44"),
    (b"\x11\x00\x00\x00", b"\x02\x11\x01\x01\x01"),
    (bytes(range(1, 255)), b"\xff" + bytes(range(1, 255))),
    (bytes(range(0, 255)), b"\x01\xff" + bytes(range(1, 255))),
])
def test_cobs_vectors(data, encoded):
    assert frame(data) == encoded + b"\x00"


@pytest.mark.parametrize("size", [0, 1, 253, 254, 255, 508, 2048])
def test_cobs_overhead_bound(size):
    data = bytes([7]) * size
    assert len(frame(data)) <= size + size // 254 + 1 + 1


def test_oversize_packets_are_not_encoded():
    with pytest.raises(ValueError):
        CODEC.encode_tm("JOB_TOKENS", {**SAMPLES["JOB_TOKENS"], "text": "x" * D.max_packet_octets}, 0)


def test_fields_are_checked_on_encode():
    with pytest.raises(ValueError):
        CODEC.encode_tm("JOB_TOKENS", {**SAMPLES["JOB_TOKENS"], "job_id": -1}, 0)


@pytest.mark.parametrize("body, why", [
    (b"\xc1", "not msgpack"),
    (msgpack.packb({"opcode": 1}), "not an array"),
    (msgpack.packb([1]), "wrong length"),
    (msgpack.packb([{1: 2}, []]), "wrong type"),
])
def test_bad_tc_bodies_are_bad_body(body, why):
    secured = SECURITY_HEADER.pack(3, 9) + body
    covered = encode_headers(True, D.packet("COMMAND").apid, 0, T, len(secured) + 16) + secured
    packet = append_crc(covered + compute_mac(KEY, covered))
    tc = CODEC.authenticate_tc(packet, KEYS)
    with pytest.raises(LinkError) as err:
        CODEC.decode_tc_fields(tc)
    assert err.value.reason == "BAD_BODY", why
    assert err.value.arsn == 9


def test_tm_with_unknown_channel_or_event_is_bad_body():
    with pytest.raises(LinkError, match="BAD_BODY"):
        CODEC.decode_tm(CODEC.encode_tm("EVENT", {"event_id": 9999, "args": []}, 0))
    bad_hk = CODEC.encode_tm("HK", {"channels": {9999: 1}}, 0)
    with pytest.raises(LinkError, match="BAD_BODY"):
        CODEC.decode_tm(bad_hk)


def test_deframer_feeds_the_decoder():
    deframer = Deframer(D.max_packet_octets)
    stream = b"".join(frame(CODEC.encode_tm(k, SAMPLES[k], 0, T)) for k in ("HK", "EVENT", "JOB_TOKENS"))
    packets = []
    for i in range(0, len(stream), 7):  # as a serial port delivers it: in small pieces
        packets += deframer.feed(stream[i:i + 7])
    assert [CODEC.decode_tm(p).name for p in packets] == ["HK", "EVENT", "JOB_TOKENS"]
