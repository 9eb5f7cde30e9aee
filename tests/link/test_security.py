"""Security vectors: wrong key, flipped bits in body or MAC, unknown key, replay, and an old
sequence number after a restart. None is executed; each is counted, reported and NACKed."""
from pathlib import Path

import pytest

from flight.link.codec import LinkError, PacketCodec
from flight.link.dictionary import load_dictionary
from flight.link.framing import Deframer, frame
from flight.link.keys import KeyRing
from flight.link.onboard_time import CucTime
from flight.link.sdls import MAC_OCTETS
from flight.link.spacepacket import build_packet
from flight.store.anti_replay import AntiReplayCounter
from flight.store.onboard_db import OnboardDb
from tests.link.conftest import FlightUnderTest, open_ground
from tests.link.helpers import arsn_of, hk_value, resealed, response_to

D = load_dictionary()
CODEC = PacketCodec(D)
KEY = bytes(range(32))
KEYS = KeyRing({1: KEY})
PING = D.command_by_name["LINK_PING"]


def ping_packet(arsn: int, key: bytes = KEY, spi: int = 1, token: int = 1) -> bytes:
    return CODEC.encode_tc("COMMAND", {"opcode": PING.opcode, "args": [token]}, 0, spi=spi, arsn=arsn, key=key)


def reason_of(packet: bytes) -> str:
    with pytest.raises(LinkError) as err:
        CODEC.authenticate_tc(packet, KEYS)
    return err.value.reason


def test_wrong_key_is_bad_mac():
    assert reason_of(ping_packet(5, key=bytes(32))) == "BAD_MAC"


def test_unknown_spi():
    assert reason_of(ping_packet(5, spi=9)) == "UNKNOWN_KEY"


def test_every_flipped_bit_in_body_or_mac_is_bad_mac():
    packet = ping_packet(5)
    body_start = 12 + 10
    for bit in range(body_start * 8, (len(packet) - 2) * 8):
        assert reason_of(resealed(packet, bit)) == "BAD_MAC", bit


def test_every_flipped_bit_in_headers_is_refused():
    packet = ping_packet(5)
    for bit in range(22 * 8):
        assert reason_of(resealed(packet, bit)) in {"BAD_MAC", "BAD_HEADER", "WRONG_KIND", "UNKNOWN_KEY"}, bit


def test_flipped_bit_without_crc_fix_dies_in_the_deframer():
    wire = bytearray(ping_packet(5))
    wire[-MAC_OCTETS - 3] ^= 0x10
    deframer = Deframer(D.max_packet_octets)
    assert deframer.feed(frame(bytes(wire))) == []
    assert deframer.counters["BAD_CRC"] == 1


def test_truncated_security_fields():
    assert reason_of(build_packet(True, D.packet("COMMAND").apid, 0, CucTime(0, 0), b"\x00\x01\x02")) == "BAD_SECURITY"


WHOLE_RANGE = 2**64  # a window that admits any forward step


def test_anti_replay_counter_survives_reopening(tmp_path: Path):
    db = OnboardDb(tmp_path / "onboard.sqlite")
    counter = AntiReplayCounter(db)
    assert counter.accept(1, 100, WHOLE_RANGE) is None
    assert counter.accept(1, 100, WHOLE_RANGE) == "REPLAY"
    assert counter.accept(1, 99, WHOLE_RANGE) == "REPLAY"  # older
    assert counter.accept(2, 50, WHOLE_RANGE) is None  # SPIs count separately
    assert counter.accept(1, 2**64 - 1, WHOLE_RANGE) is None  # the full 64-bit range
    db.close()
    reopened = AntiReplayCounter(OnboardDb(tmp_path / "onboard.sqlite"))
    assert reopened.accept(1, 2**64 - 1, WHOLE_RANGE) == "REPLAY"
    assert reopened.accept(2, 50, WHOLE_RANGE) == "REPLAY"
    assert reopened.accept(2, 51, WHOLE_RANGE) is None
    assert reopened.highest() == 2**64 - 1


@pytest.mark.parametrize("window", [1, 5, 2**24])
def test_anti_replay_window_admits_exactly_last_plus_one_to_last_plus_window(tmp_path: Path, window: int):
    counter = AntiReplayCounter(OnboardDb(tmp_path / "onboard.sqlite"))
    last = 0
    for step in (window + 1, 2**63, 2**64 - 1 - last):  # each one beyond the window: nothing moves
        assert counter.accept(1, last + step, window) == "OUT_OF_WINDOW"
        assert counter.last(1) == last
    for step in (1, window, 1):
        assert counter.accept(1, last + step, window) is None
        last += step
        assert counter.last(1) == last
    assert counter.accept(1, last, window) == "REPLAY"


def test_recovery_sets_counter_up_only_unless_lower_is_allowed(tmp_path: Path):
    counter = AntiReplayCounter(OnboardDb(tmp_path / "onboard.sqlite"))
    assert counter.accept(1, 1000, WHOLE_RANGE) is None
    assert counter.set(1, 10, allow_lower=False) == (1000, 1000)
    assert counter.set(1, 5000, allow_lower=False) == (1000, 5000)
    assert counter.set(1, 7, allow_lower=True) == (5000, 7)
    assert counter.accept(1, 8, 1) is None


def test_recovery_challenge_is_single_use_and_persisted(tmp_path: Path):
    counter = AntiReplayCounter(OnboardDb(tmp_path / "onboard.sqlite"))
    challenge = counter.challenge()
    assert challenge == counter.challenge()  # stable until used
    assert not counter.take_challenge(challenge + 1)
    assert counter.take_challenge(challenge)
    assert not counter.take_challenge(challenge)  # the same packet again: refused
    fresh = counter.challenge()
    assert fresh != challenge
    assert AntiReplayCounter(OnboardDb(tmp_path / "onboard.sqlite")).challenge() == fresh


def test_attacks_are_nacked_counted_reported_and_not_executed(flight, ground):
    key = ground.keys.get(ground.spi)
    good = ground.encode_tc("COMMAND", {"opcode": PING.opcode, "args": [111]})
    since = ground.history_index()
    ground.send_packet(good)
    assert response_to(ground, arsn_of(good), since, "COMPLETED").data == {"token": 111}
    attacks = {
        "BAD_MAC": [
            ground.encode_tc("COMMAND", {"opcode": PING.opcode, "args": [201]}, key=bytes(32)),  # wrong key
            resealed(ground.encode_tc("COMMAND", {"opcode": PING.opcode, "args": [202]}), (len(good) - 20) * 8),  # MAC
            resealed(ground.encode_tc("COMMAND", {"opcode": PING.opcode, "args": [203]}), 26 * 8 + 1),  # body
        ],
        "UNKNOWN_KEY": [ground.encode_tc("COMMAND", {"opcode": PING.opcode, "args": [204]}, spi=77, key=key)],
        "REPLAY": [good],
    }
    for reason, packets in attacks.items():
        for packet in packets:
            since = ground.history_index()
            ground.send_packet(packet)
            arsn = arsn_of(packet)
            response = response_to(ground, arsn, since)
            assert response.reason == reason
            event = ground.await_event("CMD_REJECTED", lambda e: e.args["arsn"] == arsn, since=since)
            assert D.enums["REASON"].name_of(event.args["reason"]) == reason
    assert hk_value(ground, "LINK_AUTH_FAILURES", lambda v: v == 4) == 4
    assert hk_value(ground, "LINK_REPLAYS_REJECTED", lambda v: v == 1) == 1
    assert hk_value(ground, "CMD_REJECTED", lambda v: v == 5) == 5
    # Commands run in arrival order: once a later ping completes, none of the attacks ran.
    ground.send_and_await_completion("LINK_PING", token=300)
    ground.await_event("LINK_PING_ANSWERED", lambda e: e.args["token"] == 300)
    answered = {e.args["token"] for e in _events(ground, "LINK_PING_ANSWERED")}
    assert answered == {111, 300}


def _events(ground, name):
    out = []
    event_id = D.event_by_name[name].id
    index = 0
    while True:
        try:
            item = ground.await_packet(lambda p: p.name == "EVENT" and p.fields["event_id"] == event_id, timeout=0,
                                       since=index)
        except TimeoutError:
            return out
        out.append(ground.event_record(item.packet))
        index = item.index + 1


def test_replay_after_restart_is_refused(relay, tmp_path, keyfile):
    side = FlightUnderTest(relay.flight_path, tmp_path / "onboard.sqlite", keyfile)
    ground = open_ground(relay, tmp_path, keyfile)
    try:
        recorded = ground.encode_tc("COMMAND", {"opcode": PING.opcode, "args": [5]})
        older = ground.encode_tc("COMMAND", {"opcode": PING.opcode, "args": [6]},
                                 arsn=arsn_of(recorded) - 1)
        since = ground.history_index()
        ground.send_packet(recorded)
        response_to(ground, arsn_of(recorded), since, "COMPLETED")
        side.stop()
        side = FlightUnderTest(relay.flight_path, tmp_path / "onboard.sqlite", keyfile)
        ground.await_telemetry("LINK_BOOT_COUNT", lambda v: v == 2, timeout=10)
        for packet in (recorded, older):
            since = ground.history_index()
            ground.send_packet(packet)
            assert response_to(ground, arsn_of(packet), since).reason == "REPLAY"
        ground.send_and_await_completion("LINK_PING", token=7)
    finally:
        ground.close()
        side.stop()
