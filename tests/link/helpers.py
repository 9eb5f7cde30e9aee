"""Small helpers for two-ended tests."""
from __future__ import annotations

import threading
import time
from typing import Any, Callable

from flight.link.codec import PacketCodec, TmPacket
from flight.link.dictionary import load_dictionary
from flight.link.framing import Deframer
from flight.link.spacepacket import append_crc
from ground.client import CommandResponse, GroundClient


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll predicate until it returns something truthy; a wait, not a timing assertion."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout} s")
        time.sleep(0.05)


def arsn_of(packet: bytes) -> int:
    """The ARSN of a TC packet (octets 14..21: after primary header, time and SPI)."""
    return int.from_bytes(packet[14:22], "big")


def resealed(packet: bytes, flip_bit: int) -> bytes:
    """packet with one bit flipped and a CRC that matches again: tampering, not line noise."""
    body = bytearray(packet[:-2])
    body[flip_bit // 8] ^= 1 << (flip_bit % 8)
    return append_crc(bytes(body))


def response_to(ground: GroundClient, arsn: int | None, since: int, status: str = "REJECTED",
                timeout: float = 10.0) -> CommandResponse:
    """The first (authenticated) CMD_RESPONSE with this status, or for REJECTED also the first
    (unauthenticated) CMD_REJECTION, naming arsn."""
    def match(p) -> bool:
        if p.name == "CMD_REJECTION":
            return status == "REJECTED" and p.fields["arsn"] == arsn
        return (p.name == "CMD_RESPONSE" and p.fields["arsn"] == arsn
                and ground.dictionary.enums["CMD_STATUS"].name_of(p.fields["status"]) == status)

    item = ground.await_packet(match, timeout=timeout, since=since)
    return ground._rejection(item.packet) if item.packet.name == "CMD_REJECTION" else ground._response(item.packet)


def hk_value(ground: GroundClient, channel: str, predicate: Callable[[Any], bool], timeout: float = 10.0) -> Any:
    return ground.await_telemetry(channel, predicate, timeout=timeout, since=ground.history_index()).value


class DecodingPort:
    """A serial port stand-in for the downlink writer: what it is given, deframed and decoded."""

    def __init__(self) -> None:
        self._codec = PacketCodec(load_dictionary())
        self.deframer = Deframer(self._codec.dictionary.max_packet_octets)
        self.packets: list[TmPacket] = []
        self.lock = threading.Lock()

    def write(self, data: bytes) -> None:
        with self.lock:
            self.packets += [self._codec.decode_tm(p) for p in self.deframer.feed(data)]
