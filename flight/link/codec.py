"""Packet codec: dictionary-defined fields <-> checked CCSDS packets with a msgpack body.

A body is always a msgpack array holding the fields of its packet kind, in dictionary order.
TM user data is just the body; TC user data is wrapped by the SDLS security header and MAC
(see sdls). Decoders accept any bytes and either return a fully checked packet or raise
LinkError with a REASON name and a one-line detail; nothing else escapes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack

from flight.link.dictionary import CommandDef, Dictionary, PacketKind, ValueCheckError, load_dictionary
from flight.link.keys import KeyRing
from flight.link.onboard_time import CucTime
from flight.link.sdls import MAC_OCTETS, SECURITY_HEADER, compute_mac, mac_matches
from flight.link.spacepacket import (
    CRC_OCTETS, PacketView, append_crc, build_packet, check_packet, encode_headers, view_packet,
)


class LinkError(Exception):
    """A packet was rejected. reason is a REASON enum name; the context fields are what could be read."""

    def __init__(self, reason: str, detail: str, *, arsn: int | None = None, seq_count: int | None = None,
                 opcode: int | None = None):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.arsn = arsn
        self.seq_count = seq_count
        self.opcode = opcode


@dataclass(frozen=True, slots=True)
class TmPacket:
    kind: PacketKind
    seq_count: int
    time: CucTime
    fields: dict[str, Any]

    @property
    def name(self) -> str:
        return self.kind.name


@dataclass(frozen=True, slots=True)
class AuthenticTc:
    """A TC packet whose MAC verified; its body is not yet decoded and its ARSN not yet checked."""

    kind: PacketKind
    seq_count: int
    time: CucTime
    spi: int
    arsn: int
    body: bytes


class PacketCodec:
    def __init__(self, dictionary: Dictionary | None = None):
        self.dictionary = dictionary or load_dictionary()

    # --- encoding -------------------------------------------------------------------------
    def encode_tm(self, kind: str, fields: dict[str, Any], seq_count: int, time: CucTime | None = None) -> bytes:
        packet_kind = self.dictionary.packet(kind)
        body = self._encode_body(packet_kind, fields)
        return self._sized(build_packet(False, packet_kind.apid, seq_count, time or CucTime.now(), body))

    def encode_tc(self, kind: str, fields: dict[str, Any], seq_count: int, *, spi: int, arsn: int, key: bytes,
                  time: CucTime | None = None) -> bytes:
        packet_kind = self.dictionary.packet(kind)
        secured = SECURITY_HEADER.pack(spi, arsn) + self._encode_body(packet_kind, fields)
        covered = encode_headers(True, packet_kind.apid, seq_count, time or CucTime.now(), len(secured) + MAC_OCTETS)
        covered += secured
        return self._sized(append_crc(covered + compute_mac(key, covered)))

    def _encode_body(self, kind: PacketKind, fields: dict[str, Any]) -> bytes:
        values = []
        for field in kind.fields:
            value = fields[field.name]
            field.check(value)
            values.append(value)
        return msgpack.packb(values, use_bin_type=True)

    def _sized(self, packet: bytes) -> bytes:
        if len(packet) > self.dictionary.max_packet_octets:
            raise ValueError(f"packet of {len(packet)} octets exceeds {self.dictionary.max_packet_octets}")
        return packet

    # --- decoding -------------------------------------------------------------------------
    def decode_tm(self, packet: bytes) -> TmPacket:
        view = self._checked_view(packet)
        kind = self.dictionary.tm_by_apid.get(view.apid)
        if view.is_tc or kind is None:
            raise LinkError("WRONG_KIND", f"{'TC' if view.is_tc else 'TM'} APID {view.apid:#05x} is not a telemetry kind",
                            seq_count=view.seq_count)
        return TmPacket(kind, view.seq_count, view.time, self._decode_body(kind, view.user_data))

    def authenticate_tc(self, packet: bytes, keys: KeyRing) -> AuthenticTc:
        view = self._checked_view(packet)
        kind = self.dictionary.tc_by_apid.get(view.apid)
        if not view.is_tc or kind is None:
            raise LinkError("WRONG_KIND", f"{'TC' if view.is_tc else 'TM'} APID {view.apid:#05x} is not a command kind",
                            seq_count=view.seq_count)
        user = view.user_data
        if len(user) < SECURITY_HEADER.size + MAC_OCTETS:
            raise LinkError("BAD_SECURITY", f"{len(user)} octets cannot hold security header and MAC",
                            seq_count=view.seq_count)
        spi, arsn = SECURITY_HEADER.unpack_from(user)
        key = keys.get(spi)
        if key is None:
            raise LinkError("UNKNOWN_KEY", f"no key for SPI {spi}", arsn=arsn, seq_count=view.seq_count)
        mac_start = len(packet) - CRC_OCTETS - MAC_OCTETS
        if not mac_matches(key, packet[:mac_start], packet[mac_start:-CRC_OCTETS]):
            raise LinkError("BAD_MAC", f"MAC does not verify with SPI {spi}", arsn=arsn, seq_count=view.seq_count)
        return AuthenticTc(kind, view.seq_count, view.time, spi, arsn, user[SECURITY_HEADER.size:-MAC_OCTETS])

    def decode_tc_fields(self, tc: AuthenticTc) -> dict[str, Any]:
        try:
            return self._decode_body(tc.kind, tc.body)
        except LinkError as exc:
            raise LinkError(exc.reason, exc.detail, arsn=tc.arsn, seq_count=tc.seq_count) from None

    def command_of(self, tc: AuthenticTc, fields: dict[str, Any]) -> tuple[CommandDef, dict[str, Any]]:
        """The command and its named, checked arguments from a COMMAND packet's fields."""
        command = self.dictionary.command_by_opcode.get(fields["opcode"])
        if command is None:
            raise LinkError("UNKNOWN_OPCODE", f"opcode {fields['opcode']:#06x}", arsn=tc.arsn,
                            seq_count=tc.seq_count, opcode=fields["opcode"])
        try:
            return command, command.check_args(fields["args"])
        except ValueCheckError as exc:
            raise LinkError("BAD_ARGUMENT", str(exc), arsn=tc.arsn, seq_count=tc.seq_count,
                            opcode=command.opcode) from None

    @staticmethod
    def _checked_view(packet: bytes) -> PacketView:
        reason = check_packet(packet)
        if reason is not None:
            raise LinkError(reason, f"{len(packet)}-octet packet fails {reason}")
        return view_packet(packet)

    def _decode_body(self, kind: PacketKind, body: bytes) -> dict[str, Any]:
        try:
            # Untrusted input into a C parser: whatever it raises means "not a body".
            values = msgpack.unpackb(body, raw=False, strict_map_key=False)
        except Exception as exc:
            raise LinkError("BAD_BODY", f"{kind.name} body is not msgpack: {type(exc).__name__}") from None
        if not isinstance(values, list) or len(values) != len(kind.fields):
            raise LinkError("BAD_BODY", f"{kind.name} body must be an array of {len(kind.fields)} fields")
        try:
            for field, value in zip(kind.fields, values):
                field.check(value)
            fields = {field.name: value for field, value in zip(kind.fields, values)}
            if kind.name == "HK":
                self.dictionary.check_channel_map(fields["channels"])
            elif kind.name == "EVENT":
                self._check_event(fields)
        except ValueCheckError as exc:
            raise LinkError("BAD_BODY", f"{kind.name}: {exc}") from None
        return fields

    def _check_event(self, fields: dict[str, Any]) -> None:
        event = self.dictionary.event_by_id.get(fields["event_id"])
        if event is None:
            raise ValueCheckError(f"unknown event id {fields['event_id']}")
        if len(fields["args"]) != len(event.args):
            raise ValueCheckError(f"{event.name} takes {len(event.args)} arguments")
        for arg, value in zip(event.args, fields["args"]):
            arg.check(value)
