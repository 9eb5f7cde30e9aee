"""The sensor bus: the frames the HIL rig (or the satellite's EPS board) and the node exchange
over their own serial line. Defined here, once; hil/ imports it.

Wire format, as the link's (docs/ICD.md §2): each frame is COBS-encoded and ends with 0x00.
Decoded, a frame is

    octet 0     kind: 1 READING (rig -> node), 2 COMPUTE (node -> rig)
    octets 1-2  sequence count, big-endian, +1 per frame sent by that side, wrapping at 65535
    octets 3..  one msgpack map, the kind's fields (below)
    last 2      CRC-16/CCITT-FALSE over everything before it, big-endian (flight/link/crc16.py)

READING fields (every one required; numbers finite):
    t            the rig's (simulated) time, s
    battery_wh   stored energy, Wh             capacity_wh   battery capacity, Wh (> 0)
    solar_w      array input now, W            bus_w         bus load without compute, W
    in_eclipse   bool                          entry_s       s to the next eclipse entry (0 in eclipse)
    exit_s       s to the next eclipse exit    temps         map: sensor name -> °C
COMPUTE fields:
    t            the node's monotonic time, s  compute_w     power compute draws from now on, W

A frame that is not valid COBS, too short or too long, has a bad CRC, an unknown kind or fields
that are missing, mistyped or not finite is dropped and counted (SensorFrameReader.counters);
the next 0x00 resynchronises. Why not Space Packets as on the radio link: this line is a short
cable between two boards with no addressing or security to carry, so five octets of header and
trailer do, and the frame stays within one 64-octet UART FIFO burst or two.
"""
from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any

import msgpack
from cobs import cobs

from flight.link.crc16 import crc16_ccitt_false

READING = 1
COMPUTE = 2
KINDS = {READING: "READING", COMPUTE: "COMPUTE"}
MAX_FRAME_OCTETS = 1024  # decoded; a READING with a dozen temperatures is about 200
_HEAD = struct.Struct(">BH")
_CRC = struct.Struct(">H")
_READING_NUMBERS = ("t", "battery_wh", "capacity_wh", "solar_w", "bus_w", "entry_s", "exit_s")
COUNTERS = ("FRAMES_OK", "BAD_FRAME", "BAD_CRC", "BAD_KIND", "BAD_BODY", "OVERSIZE")


class FrameError(ValueError):
    """A frame that is not one of ours; .reason is one of COUNTERS."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True)
class Frame:
    kind: int
    seq: int
    fields: dict[str, Any]


def encode_frame(kind: int, seq: int, fields: dict[str, Any]) -> bytes:
    """One frame on the wire: COBS(kind | seq | msgpack | CRC-16) 0x00. Checks the fields."""
    _check(kind, fields)
    body = _HEAD.pack(kind, seq & 0xFFFF) + msgpack.packb(fields, use_bin_type=True)
    return cobs.encode(body + _CRC.pack(crc16_ccitt_false(body))) + b"\x00"


def decode_frame(encoded: bytes) -> Frame:
    """A frame from its COBS octets (delimiter removed); FrameError if it is not a good one."""
    if len(encoded) > MAX_FRAME_OCTETS + 2:
        raise FrameError("OVERSIZE", f"{len(encoded)}-octet frame")
    try:
        data = cobs.decode(encoded)
    except cobs.DecodeError as exc:
        raise FrameError("BAD_FRAME", f"not COBS: {exc}") from None
    if len(data) < _HEAD.size + 1 + _CRC.size:
        raise FrameError("BAD_FRAME", f"{len(data)}-octet frame is too short")
    body, crc = data[:-_CRC.size], _CRC.unpack(data[-_CRC.size:])[0]
    if crc16_ccitt_false(body) != crc:
        raise FrameError("BAD_CRC", "CRC-16 does not match")
    kind, seq = _HEAD.unpack(body[:_HEAD.size])
    if kind not in KINDS:
        raise FrameError("BAD_KIND", f"unknown frame kind {kind}")
    try:  # untrusted octets into a C parser: anything it raises means "not a body"
        fields = msgpack.unpackb(body[_HEAD.size:], raw=False, strict_map_key=False)
    except Exception as exc:
        raise FrameError("BAD_BODY", f"body is not msgpack: {type(exc).__name__}") from None
    _check(kind, fields)
    return Frame(kind, seq, fields)


def _finite(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _check(kind: int, fields: Any) -> None:
    if not isinstance(fields, dict):
        raise FrameError("BAD_BODY", "body is not a map")
    if kind == READING:
        for name in _READING_NUMBERS:
            if not _finite(fields.get(name)):
                raise FrameError("BAD_BODY", f"READING {name} must be a finite number, got {fields.get(name)!r}")
        if fields["capacity_wh"] <= 0 or not 0 <= fields["battery_wh"] <= fields["capacity_wh"] * 1.01:
            raise FrameError("BAD_BODY", "READING battery_wh must be from 0 to capacity_wh (> 0)")
        if not isinstance(fields.get("in_eclipse"), bool):
            raise FrameError("BAD_BODY", "READING in_eclipse must be true or false")
        temps = fields.get("temps")
        if not isinstance(temps, dict) or not all(isinstance(k, str) and _finite(v) for k, v in temps.items()):
            raise FrameError("BAD_BODY", "READING temps must map names to finite °C")
    elif kind == COMPUTE:
        if not (_finite(fields.get("t")) and _finite(fields.get("compute_w")) and fields["compute_w"] >= 0):
            raise FrameError("BAD_BODY", "COMPUTE needs finite t and compute_w >= 0")


class SensorFrameReader:
    """Frames out of a byte stream, in arrival order; bad ones counted in counters and skipped."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.counters = dict.fromkeys(COUNTERS, 0)

    def feed(self, data: bytes) -> list[Frame]:
        self._buffer += data
        frames = []
        while (end := self._buffer.find(b"\x00")) >= 0:
            encoded, self._buffer = bytes(self._buffer[:end]), self._buffer[end + 1:]
            if not encoded:  # an empty frame: a lone delimiter, as a port sends when it opens
                continue
            try:
                frames.append(decode_frame(encoded))
                self.counters["FRAMES_OK"] += 1
            except FrameError as exc:
                self.counters[exc.reason] += 1
        if len(self._buffer) > MAX_FRAME_OCTETS + 2:  # no delimiter in sight: drop it, count once
            self.counters["OVERSIZE"] += 1
            self._buffer.clear()
        return frames
