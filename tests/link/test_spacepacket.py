from hypothesis import given, strategies as st
from spacepackets.ccsds.spacepacket import PacketType, SequenceFlags, SpacePacketHeader

from flight.link.onboard_time import CucTime
from flight.link.spacepacket import (
    MIN_PACKET_OCTETS, SEQ_COUNT_MODULO, SequenceCounters, append_crc, build_packet, check_packet, view_packet,
)


@given(st.booleans(), st.integers(0, 0x7FE), st.integers(0, SEQ_COUNT_MODULO - 1),
       st.integers(0, 2**32 - 1), st.integers(0, 2**16 - 1), st.binary(max_size=600))
def test_header_read_back_by_spacepackets(is_tc, apid, seq, coarse, fine, user):
    packet = build_packet(is_tc, apid, seq, CucTime(coarse, fine), user)
    header = SpacePacketHeader.unpack(packet)
    assert header.ccsds_version == 0
    assert header.packet_type == (PacketType.TC if is_tc else PacketType.TM)
    assert header.sec_header_flag
    assert header.apid == apid
    assert header.seq_flags == SequenceFlags.UNSEGMENTED
    assert header.seq_count == seq
    assert header.packet_len == len(packet)
    assert check_packet(packet) is None
    assert view_packet(packet) == (is_tc, apid, seq, CucTime(coarse, fine), user)


def test_header_faults_are_named():
    good = bytearray(build_packet(False, 16, 1, CucTime(1, 2), b"\x90"))
    assert check_packet(bytes(good[:MIN_PACKET_OCTETS - 1])) == "BAD_FRAME"
    corrupted = bytearray(good)
    corrupted[7] ^= 0x01
    assert check_packet(bytes(corrupted)) == "BAD_CRC"
    # A valid CRC over a wrong header (version 1) is a sender fault, not line noise.
    wrong_version = build_packet(False, 16, 1, CucTime(1, 2), b"\x90")
    patched = bytes([wrong_version[0] | 0x20]) + wrong_version[1:-2]
    assert check_packet(append_crc(patched)) == "BAD_HEADER"
    short_length = bytearray(good[:-2])
    short_length[5] -= 1
    assert check_packet(append_crc(bytes(short_length))) == "BAD_HEADER"


def test_sequence_counts_are_per_apid_and_wrap():
    counters = SequenceCounters()
    assert [counters.take(16) for _ in range(3)] == [0, 1, 2]
    assert counters.take(17) == 0
    for _ in range(SEQ_COUNT_MODULO - 3):
        counters.take(16)
    assert counters.take(16) == 0


def test_cuc_time_round_trip():
    t = CucTime.from_unix(1_700_000_000.25)
    assert t == CucTime(1_700_000_000, 1 << 14)
    assert t.to_unix() == 1_700_000_000.25
