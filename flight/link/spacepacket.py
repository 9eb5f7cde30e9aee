"""CCSDS Space Packets (CCSDS 133.0-B-2) as this link uses them.

Every packet, TM or TC:

    octet  0      1      2      3      4      5      6 .. 11    12 ..           last-1 .. last
         +------+------+------+------+------+------+----------+--------------+--------------+
         | ver|type|shf|apid  | sf | seq count   | data length | CUC 4+2    | user data    | CRC-16       |
         +------+------+------+------+------+------+----------+--------------+--------------+
    bits   3    1    1   11     2     14            16

ver = 0, shf (secondary-header flag) = 1, sf (sequence flags) = 0b11 (unsegmented), sequence
count per APID modulo 2^14, data length = octets after the primary header - 1. The secondary
header is the onboard time (see onboard_time). CRC-16/CCITT-FALSE covers every octet before it.
"""
from __future__ import annotations

import struct
from typing import NamedTuple

from flight.link.crc16 import crc16_ccitt_false
from flight.link.onboard_time import CUC, CucTime

PRIMARY_HEADER = struct.Struct(">HHH")
CRC = struct.Struct(">H")
PRIMARY_HEADER_OCTETS = PRIMARY_HEADER.size
HEADER_OCTETS = PRIMARY_HEADER.size + CUC.size
CRC_OCTETS = CRC.size
MIN_PACKET_OCTETS = HEADER_OCTETS + CRC_OCTETS
SEQ_COUNT_MODULO = 1 << 14
UNSEGMENTED = 0b11

_TYPE_TC = 1 << 12
_SEC_HEADER = 1 << 11
_APID_MASK = 0x7FF
_ID_FIXED_MASK = 0xE000 | _SEC_HEADER  # version bits and secondary-header flag


class PacketView(NamedTuple):
    """The header fields of a checked packet and the octets between time and CRC."""

    is_tc: bool
    apid: int
    seq_count: int
    time: CucTime
    user_data: bytes


def encode_headers(is_tc: bool, apid: int, seq_count: int, time: CucTime, user_data_octets: int) -> bytes:
    """Primary and secondary header for a packet carrying user_data_octets before its CRC."""
    packet_id = (_TYPE_TC if is_tc else 0) | _SEC_HEADER | apid
    sequence = (UNSEGMENTED << 14) | (seq_count % SEQ_COUNT_MODULO)
    data_length = CUC.size + user_data_octets + CRC_OCTETS - 1
    return PRIMARY_HEADER.pack(packet_id, sequence, data_length) + CUC.pack(*time)


def append_crc(packet_without_crc: bytes) -> bytes:
    return packet_without_crc + CRC.pack(crc16_ccitt_false(packet_without_crc))


def build_packet(is_tc: bool, apid: int, seq_count: int, time: CucTime, user_data: bytes) -> bytes:
    return append_crc(encode_headers(is_tc, apid, seq_count, time, len(user_data)) + user_data)


def check_packet(packet: bytes) -> str | None:
    """The REASON name that rejects this packet, or None when it is a well-formed packet.

    The CRC is checked before the header: a corrupted header would otherwise be reported as a
    header fault when the line, not the sender, is to blame.
    """
    if len(packet) < MIN_PACKET_OCTETS:
        return "BAD_FRAME"
    if crc16_ccitt_false(packet) != 0:  # a CRC run over data plus its own CRC leaves zero
        return "BAD_CRC"
    packet_id, sequence, data_length = PRIMARY_HEADER.unpack_from(packet)
    if (
        packet_id & _ID_FIXED_MASK != _SEC_HEADER
        or sequence >> 14 != UNSEGMENTED
        or data_length + PRIMARY_HEADER_OCTETS + 1 != len(packet)
    ):
        return "BAD_HEADER"
    return None


def view_packet(packet: bytes) -> PacketView:
    """Split a packet that check_packet accepted."""
    packet_id, sequence, _ = PRIMARY_HEADER.unpack_from(packet)
    return PacketView(
        bool(packet_id & _TYPE_TC),
        packet_id & _APID_MASK,
        sequence & (SEQ_COUNT_MODULO - 1),
        CucTime(*CUC.unpack_from(packet, PRIMARY_HEADER_OCTETS)),
        packet[HEADER_OCTETS:-CRC_OCTETS],
    )


class SequenceCounters:
    """The 14-bit sequence count of each APID, wrapping to 0."""

    def __init__(self) -> None:
        self._next: dict[int, int] = {}

    def peek(self, apid: int) -> int:
        """The count the next packet of apid gets, without using it up."""
        return self._next.get(apid, 0)

    def take(self, apid: int) -> int:
        count = self.peek(apid)
        self._next[apid] = (count + 1) % SEQ_COUNT_MODULO
        return count
