"""hypothesis fuzzing of the deframer (flight and ground use the same class) and of both decoders:
random bytes, bit flips, truncations, oversize and reordered frames. Nothing escapes, the
rejection counters move, and the next good frame decodes."""
import itertools
import json
import os
import random

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from flight.link.codec import LinkError, PacketCodec
from flight.link.dictionary import load_dictionary
from flight.link.framing import Deframer, frame, max_frame_octets
from flight.link.keys import KeyRing
from flight.link.onboard_time import CucTime
from flight.link.serial_port import SerialPort
from flight.link.service import LinkConfig, LinkService
from flight.store.anti_replay import AntiReplayCounter
from flight.store.onboard_db import OnboardDb
from flight.store.result_store import ResultStore
from ground.client import GroundClient
from flight.link.sdls import SECURITY_HEADER, compute_mac
from flight.link.spacepacket import append_crc, build_packet, encode_headers
from tests.link.samples import encode_tm_sample, samples

D = load_dictionary()
CODEC = PacketCodec(D)
KEY = bytes(range(32))
KEYS = KeyRing({1: KEY})
SAMPLES = samples(D)
T = CucTime(1_800_000_000, 0)
TM_PACKETS = [encode_tm_sample(CODEC, p.name, SAMPLES[p.name], i, T) for i, p in enumerate(D.packets) if not p.is_tc]
TC_PACKETS = [CODEC.encode_tc(p.name, SAMPLES[p.name], i, spi=1, arsn=10 + i, key=KEY, time=T)
              for i, p in enumerate(D.packets) if p.is_tc]
ALL_PACKETS = TM_PACKETS + TC_PACKETS
REJECTIONS = ("BAD_FRAME", "BAD_CRC", "BAD_HEADER", "OVERSIZE")
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def decode_any(packet: bytes) -> None:
    """Run both decoders the way flight and ground do; only LinkError may come out."""
    for step in (lambda: CODEC.decode_tm(packet), lambda: _decode_tc(packet)):
        try:
            step()
        except LinkError as exc:
            assert exc.reason in D.enums["REASON"].values
            assert "\n" not in str(exc)


def _decode_tc(packet: bytes) -> None:
    tc = CODEC.authenticate_tc(packet, KEYS)
    fields = CODEC.decode_tc_fields(tc)
    if tc.kind.name == "COMMAND":
        CODEC.command_of(tc, fields)


def rejected(deframer: Deframer) -> int:
    return sum(deframer.counters[r] for r in REJECTIONS)


@FUZZ
@given(st.binary(max_size=3000), st.sampled_from(ALL_PACKETS))
def test_random_bytes_then_a_good_frame(garbage, good):
    deframer = Deframer(D.max_packet_octets)
    # A delimiter ends whatever the garbage left open; the good frame after it must come through.
    out = deframer.feed(garbage + b"\x00")
    for packet in out:
        decode_any(packet)
    if garbage.strip(b"\x00") and not out:
        assert rejected(deframer) >= 1
        assert deframer.counters["DISCARDED_OCTETS"] >= len(garbage.replace(b"\x00", b""))
    assert deframer.feed(frame(good)) == [good]


@FUZZ
@given(st.sampled_from(ALL_PACKETS), st.data())
def test_bit_flips_are_caught(good, data):
    wire = bytearray(frame(good))
    bits = data.draw(st.sets(st.integers(0, len(wire) * 8 - 1), min_size=1, max_size=4))
    for bit in bits:
        wire[bit // 8] ^= 1 << (bit % 8)
    deframer = Deframer(D.max_packet_octets)
    out = deframer.feed(bytes(wire) + b"\x00" + frame(good))
    assert out[-1] == good
    # CRC-16 catches every error of up to 3 bits; a flip that moved a delimiter may split the
    # frame instead, which the deframer must still reject, never pass on altered.
    assert all(p == good for p in out)
    if len(bits) <= 3:
        assert out == [good]
        assert rejected(deframer) >= 1


@FUZZ
@given(st.sampled_from(ALL_PACKETS), st.data())
def test_truncated_frames(good, data):
    wire = frame(good)
    cut = data.draw(st.integers(1, len(wire) - 2))
    deframer = Deframer(D.max_packet_octets)
    assert deframer.feed(wire[:cut] + b"\x00" + wire) == [good]
    assert rejected(deframer) == 1


@FUZZ
@given(st.integers(1, 3 * max_frame_octets(D.max_packet_octets)), st.sampled_from(ALL_PACKETS))
def test_oversize_frames(extra, good):
    deframer = Deframer(D.max_packet_octets)
    flood = b"\x11" * (max_frame_octets(D.max_packet_octets) + extra)
    assert deframer.feed(flood + b"\x00" + frame(good)) == [good]
    assert deframer.counters["OVERSIZE"] == 1


@FUZZ
@given(st.permutations(list(range(len(ALL_PACKETS)))), st.integers(1, 64))
def test_reordered_frames_in_any_chunking(order, chunk):
    stream = b"".join(frame(ALL_PACKETS[i]) for i in order)
    deframer = Deframer(D.max_packet_octets)
    out = []
    for i in range(0, len(stream), chunk):
        out += deframer.feed(stream[i:i + chunk])
    assert out == [ALL_PACKETS[i] for i in order]
    assert rejected(deframer) == 0


@FUZZ
@given(st.binary(max_size=2100))
def test_decoders_take_any_bytes(packet):
    decode_any(packet)


@FUZZ
@given(st.sampled_from(ALL_PACKETS), st.data())
def test_decoders_take_mutated_packets_with_fixed_crc(good, data):
    """Mutations that keep a valid CRC, so they reach header, security and body checks."""
    body = bytearray(good[:-2])
    rng = random.Random(data.draw(st.integers(0, 2**32)))
    for _ in range(data.draw(st.integers(1, 6))):
        body[rng.randrange(len(body))] = rng.randrange(256)
    decode_any(append_crc(bytes(body)))


@FUZZ
@given(st.lists(st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.text(max_size=20),
                          st.binary(max_size=20), st.lists(st.integers(), max_size=3),
                          st.dictionaries(st.integers(), st.integers(), max_size=3)), max_size=7),
       st.sampled_from([p for p in D.packets]))
def test_well_framed_packets_with_wrong_bodies(values, kind):
    """Valid msgpack of the wrong shape inside a correctly framed (and, for TC, authentic) packet."""
    try:
        body = msgpack.packb(values, use_bin_type=True)
    except (OverflowError, ValueError):
        return
    if kind.is_tc:
        secured = SECURITY_HEADER.pack(1, 5) + body
        covered = encode_headers(True, kind.apid, 0, T, len(secured) + 16) + secured
        packet = append_crc(covered + compute_mac(KEY, covered))
    else:
        packet = build_packet(False, kind.apid, 0, T, body)
    decode_any(packet)


# --- the receive paths of both ends, as wired in the service and the client ------------------

@pytest.fixture(scope="module")
def offline_ends(tmp_path_factory):
    """A flight link service and a ground client whose receive paths are fed directly."""
    tmp = tmp_path_factory.mktemp("ends")
    keyfile = tmp / "keys.json"
    fd = os.open(keyfile, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, json.dumps({"keys": [{"spi": 1, "key": KEY.hex()}]}).encode())
    os.close(fd)
    db = OnboardDb(tmp / "onboard.sqlite")
    # Never started: nothing drains the command queue, so make it deep enough for every example.
    service = LinkService(SerialPort("loop://"), KeyRing.load(keyfile), ResultStore(db, D.segment_octets),
                          AntiReplayCounter(db), LinkConfig(command_queue_depth=10_000))
    ground = GroundClient("loop://", keys=keyfile, archive=tmp / "ground.sqlite")
    ground.open_archive()
    yield service, ground
    db.close()
    ground.archive.close()


ARSNS = itertools.count(1_000_000)


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=2000))
def test_flight_receive_path_survives_anything(offline_ends, garbage):
    service, _ = offline_ends
    accepted = service.telemetry.get("CMD_ACCEPTED")
    noop = CODEC.encode_tc("COMMAND", {"opcode": D.command_by_name["CMD_NOOP"].opcode, "args": []}, 0, spi=1,
                           arsn=next(ARSNS), key=KEY)
    service._on_bytes(garbage + b"\x00" + frame(noop))
    assert service.telemetry.get("CMD_ACCEPTED") == accepted + 1


@settings(max_examples=60, deadline=None)
# (A CMD_RESPONSE is kept only if it answers a command the client sent: see test_security.py.)
@given(st.binary(max_size=2000),
       st.sampled_from([p for p in TM_PACKETS if CODEC.decode_tm(p).name not in ("EVENT", "CMD_RESPONSE")]))
def test_ground_receive_path_survives_anything(offline_ends, garbage, good):
    _, ground = offline_ends
    ground._on_bytes(garbage + b"\x00" + frame(good))
    last = ground.await_packet(lambda p: True, timeout=0, since=ground.history_index() - 1).packet
    assert (last.name, last.seq_count) == (CODEC.decode_tm(good).name, CODEC.decode_tm(good).seq_count)
