"""COBS framing of packets on the serial byte stream.

Wire stream:

    ... | COBS(packet) | 0x00 | COBS(packet) | 0x00 | garbage | 0x00 | COBS(packet) | 0x00 | ...

COBS (Cheshire & Baker, 1999) rewrites a packet so that it contains no 0x00 octet, at a cost of at
most one octet per 254 plus one; 0x00 then marks the end of each frame. A receiver that starts in
the middle of a frame, or sees line noise, loses at most the frame the noise touched and is back
in step at the next 0x00. The encoder and decoder are the `cobs` package (C extension).
"""
from __future__ import annotations

from typing import Callable

from cobs import cobs

from flight.link.spacepacket import check_packet

DELIMITER = b"\x00"
REJECTION_REASONS = ("BAD_FRAME", "BAD_CRC", "BAD_HEADER", "OVERSIZE")


def frame(packet: bytes) -> bytes:
    """One packet as it goes on the wire: COBS-encoded and 0x00-terminated."""
    return cobs.encode(packet) + DELIMITER


def max_frame_octets(max_packet_octets: int) -> int:
    """Longest COBS encoding of a packet, delimiter excluded: one code octet per 254 plus one."""
    return max_packet_octets + max_packet_octets // 254 + 1


class Deframer:
    """Turns a byte stream into checked packets; never raises on bad input, counts it instead.

    Frame as received (the delimiter is not part of it):

        +-----------+------------------- ... ----+   +------+
        | code (1)  | up to 254 non-zero octets  |...| 0x00 |
        +-----------+------------------- ... ----+   +------+
        \\____________ COBS(packet) ______________/

    and, once decoded, the packet must pass spacepacket.check_packet:

        | primary header (6) | CUC time (6) | user data (n) | CRC-16 (2) |

    Rejections, each counted under its REASON name and reported to on_reject(reason, octets), octets
    being the frame's length, delimiter excluded: BAD_FRAME (invalid COBS or shorter than the
    smallest packet), BAD_CRC, BAD_HEADER, OVERSIZE (no delimiter within the longest legal frame;
    everything up to the next 0x00 is dropped). An OVERSIZE frame is counted as soon as it is
    seen, but reported only when its 0x00 arrives, so that the report gives its true length.
    """

    def __init__(self, max_packet_octets: int, on_reject: Callable[[str, int], None] | None = None):
        self.max_frame = max_frame_octets(max_packet_octets)
        self.on_reject = on_reject
        self.counters: dict[str, int] = {"FRAMES_OK": 0, "DISCARDED_OCTETS": 0, **dict.fromkeys(REJECTION_REASONS, 0)}
        self._buffer = bytearray()
        self._in_oversize = False  # inside a frame already rejected as oversize, until its 0x00
        self._oversize_octets = 0  # octets of that frame dropped so far

    def deframe(self, data: bytes) -> tuple[bytes | None, bytes, bytes]:
        """Take the first frame out of data: (packet or None, leftover, discarded).

        leftover is what remains to be passed back, with more bytes appended, on the next call;
        discarded is what was thrown away. (None, data, b"") means: no complete frame yet.
        """
        packet, end, discarded_from = self._next(data, 0)
        return packet, bytes(data[end:]), bytes(data[discarded_from:end]) if packet is None else b""

    def feed(self, data: bytes) -> list[bytes]:
        """Append received bytes; return every packet completed by them."""
        buffer = self._buffer
        buffer += data
        packets = []
        position = 0
        while True:
            packet, end, _ = self._next(buffer, position)
            if end == position:
                break
            if packet is not None:
                packets.append(packet)
            position = end
        del buffer[:position]
        return packets

    def _next(self, data: bytes | bytearray, start: int) -> tuple[bytes | None, int, int]:
        """(packet, end, discard_start): one step from start; end == start means wait for more."""
        while True:
            cut = data.find(0, start)
            if cut < 0:
                if self._in_oversize or len(data) - start > self.max_frame:
                    if not self._in_oversize:
                        self.counters["OVERSIZE"] += 1
                    self._in_oversize = True
                    self._oversize_octets += len(data) - start
                    self.counters["DISCARDED_OCTETS"] += len(data) - start
                    return None, len(data), start
                return None, start, start
            if cut == start and not self._in_oversize:
                start += 1  # back-to-back delimiters: an empty frame, i.e. idle line
                continue
            break
        end = cut + 1
        if self._in_oversize:
            octets = self._oversize_octets + cut - start
            self._in_oversize = False
            self._oversize_octets = 0
            self.counters["DISCARDED_OCTETS"] += end - start
            self._report("OVERSIZE", octets)
            return None, end, start
        encoded = data[start:cut]
        if len(encoded) > self.max_frame:
            return self._discard("OVERSIZE", start, end)
        try:
            packet = cobs.decode(encoded)
        except cobs.DecodeError:
            return self._discard("BAD_FRAME", start, end)
        reason = check_packet(packet)
        if reason is not None:
            return self._discard(reason, start, end)
        self.counters["FRAMES_OK"] += 1
        return packet, end, end

    def _discard(self, reason: str, start: int, end: int) -> tuple[None, int, int]:
        self.counters["DISCARDED_OCTETS"] += end - start
        self._reject(reason, end - start - 1)
        return None, end, start

    def _reject(self, reason: str, octets: int) -> None:
        self.counters[reason] += 1
        self._report(reason, octets)

    def _report(self, reason: str, octets: int) -> None:
        if self.on_reject is not None:
            self.on_reject(reason, octets)
