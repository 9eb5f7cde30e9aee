"""Packet codec: dictionary-defined fields <-> checked CCSDS packets with a msgpack body.

A body is always a msgpack array holding the fields of its packet kind, in dictionary order.
The user data of a packet kind marked secured (every TC kind, and CMD_RESPONSE) is wrapped by
the SDLS security header and MAC (see sdls); other TM user data is just the body. Optional fields
(added by a later dictionary version) may be left out at the end of a body. Decoders accept any bytes and either return a fully checked packet or raise
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

    def __init__(self, reason: str, detail: str, *, spi: int | None = None, arsn: int | None = None,
                 seq_count: int | None = None, opcode: int | None = None):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.spi = spi
        self.arsn = arsn
        self.seq_count = seq_count
        self.opcode = opcode


@dataclass(frozen=True, slots=True)
class Security:
    """The security fields of a secured packet, and the octets its MAC covers."""

    spi: int
    arsn: int
    covered: bytes
    mac: bytes


@dataclass(frozen=True, slots=True)
class Seal:
    """What the sender of a secured packet needs: key, security header values, associated data."""

    spi: int
    arsn: int
    key: bytes
    associated: bytes = b""


@dataclass(frozen=True, slots=True)
class TmPacket:
    kind: PacketKind
    seq_count: int
    time: CucTime
    fields: dict[str, Any]
    security: Security | None = None  # set for secured kinds; check it with PacketCodec.verify_tm

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
    mac: bytes


class PacketCodec:
    def __init__(self, dictionary: Dictionary | None = None):
        self.dictionary = dictionary or load_dictionary()

    # --- encoding -------------------------------------------------------------------------
    def encode_tm(self, kind: str, fields: dict[str, Any], seq_count: int, time: CucTime | None = None,
                  seal: Seal | None = None) -> bytes:
        """A TM packet; a secured kind needs its seal, others take none."""
        packet_kind = self.dictionary.packet(kind)
        if packet_kind.secured != (seal is not None):
            raise ValueError(f"{kind} is {'' if packet_kind.secured else 'not '}a secured packet kind")
        return self._encode(packet_kind, fields, seq_count, time, seal)

    def encode_tc(self, kind: str, fields: dict[str, Any], seq_count: int, *, spi: int, arsn: int, key: bytes,
                  time: CucTime | None = None) -> bytes:
        return self._encode(self.dictionary.packet(kind), fields, seq_count, time, Seal(spi, arsn, key))

    def _encode(self, kind: PacketKind, fields: dict[str, Any], seq_count: int, time: CucTime | None,
                seal: Seal | None) -> bytes:
        body = self._encode_body(kind, fields)
        time = time or CucTime.now()
        if seal is None:
            return self._sized(build_packet(kind.is_tc, kind.apid, seq_count, time, body))
        secured = SECURITY_HEADER.pack(seal.spi, seal.arsn) + body
        covered = encode_headers(kind.is_tc, kind.apid, seq_count, time, len(secured) + MAC_OCTETS) + secured
        return self._sized(append_crc(covered + compute_mac(seal.key, covered, seal.associated)))

    def encode_body(self, kind: str, fields: dict[str, Any]) -> bytes:
        """The checked msgpack body of a packet of this kind, without headers: what the onboard
        recorder keeps of an EVENT or HK packet."""
        return self._encode_body(self.dictionary.packet(kind), fields)

    def _encode_body(self, kind: PacketKind, fields: dict[str, Any]) -> bytes:
        values = []
        for field in kind.fields:
            value = fields.get(field.name, field.default) if field.optional else fields[field.name]
            field.check(value)
            values.append(value)
        # Optional fields at their default are left out, so a receiver built from an earlier
        # dictionary version still reads the packet.
        while len(values) > kind.required_fields and values[-1] == kind.fields[len(values) - 1].default:
            values.pop()
        return msgpack.packb(values, use_bin_type=True)

    def _sized(self, packet: bytes) -> bytes:
        if len(packet) > self.dictionary.max_packet_octets:
            raise ValueError(f"packet of {len(packet)} octets exceeds {self.dictionary.max_packet_octets}")
        return packet

    # --- decoding -------------------------------------------------------------------------
    def decode_tm(self, packet: bytes) -> TmPacket:
        """A checked TM packet. A secured kind's MAC is not checked here: the receiver knows the
        key and associated data, and calls verify_tm."""
        view = self._checked_view(packet)
        kind = self.dictionary.tm_by_apid.get(view.apid)
        if view.is_tc or kind is None:
            raise LinkError("WRONG_KIND", f"{'TC' if view.is_tc else 'TM'} APID {view.apid:#05x} is not a telemetry kind",
                            seq_count=view.seq_count)
        if not kind.secured:
            return TmPacket(kind, view.seq_count, view.time, self._decode_body(kind, view.user_data))
        security, body = self._split_secured(packet, view)
        return TmPacket(kind, view.seq_count, view.time, self._decode_body(kind, body), security)

    @staticmethod
    def verify_tm(packet: TmPacket, key: bytes, associated: bytes = b"") -> bool:
        security = packet.security
        return security is not None and mac_matches(key, security.covered, security.mac, associated)

    def authenticate_tc(self, packet: bytes, keys: KeyRing) -> AuthenticTc:
        view = self._checked_view(packet)
        kind = self.dictionary.tc_by_apid.get(view.apid)
        if not view.is_tc or kind is None:
            raise LinkError("WRONG_KIND", f"{'TC' if view.is_tc else 'TM'} APID {view.apid:#05x} is not a command kind",
                            seq_count=view.seq_count)
        security, body = self._split_secured(packet, view)
        key = keys.get(security.spi)
        context = {"spi": security.spi, "arsn": security.arsn, "seq_count": view.seq_count}
        if key is None:
            raise LinkError("UNKNOWN_KEY", f"no key for SPI {security.spi}", **context)
        if not mac_matches(key, security.covered, security.mac):
            raise LinkError("BAD_MAC", f"MAC does not verify with SPI {security.spi}", **context)
        return AuthenticTc(kind, view.seq_count, view.time, security.spi, security.arsn, body, security.mac)

    @staticmethod
    def _split_secured(packet: bytes, view: PacketView) -> tuple[Security, bytes]:
        user = view.user_data
        if len(user) < SECURITY_HEADER.size + MAC_OCTETS:
            raise LinkError("BAD_SECURITY", f"{len(user)} octets cannot hold security header and MAC",
                            seq_count=view.seq_count)
        spi, arsn = SECURITY_HEADER.unpack_from(user)
        mac_start = len(packet) - CRC_OCTETS - MAC_OCTETS
        security = Security(spi, arsn, packet[:mac_start], packet[mac_start:-CRC_OCTETS])
        return security, user[SECURITY_HEADER.size:-MAC_OCTETS]

    def decode_tc_fields(self, tc: AuthenticTc) -> dict[str, Any]:
        try:
            return self._decode_body(tc.kind, tc.body)
        except LinkError as exc:
            raise LinkError(exc.reason, exc.detail, spi=tc.spi, arsn=tc.arsn, seq_count=tc.seq_count) from None

    def command_of(self, tc: AuthenticTc, fields: dict[str, Any]) -> tuple[CommandDef, dict[str, Any]]:
        """The command and its named, checked arguments from a COMMAND packet's fields."""
        command = self.dictionary.command_by_opcode.get(fields["opcode"])
        if command is None:
            raise LinkError("UNKNOWN_OPCODE", f"opcode {fields['opcode']:#06x}", spi=tc.spi, arsn=tc.arsn,
                            seq_count=tc.seq_count, opcode=fields["opcode"])
        try:
            return command, command.check_args(fields["args"])
        except ValueCheckError as exc:
            raise LinkError("BAD_ARGUMENT", str(exc), spi=tc.spi, arsn=tc.arsn, seq_count=tc.seq_count,
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
        if not isinstance(values, list) or not kind.required_fields <= len(values) <= len(kind.fields):
            raise LinkError("BAD_BODY", f"{kind.name} body must be an array of {kind.required_fields}"
                            f"{'' if kind.required_fields == len(kind.fields) else f'..{len(kind.fields)}'} fields")
        try:
            for field, value in zip(kind.fields, values):
                field.check(value)
            fields = {field.name: value for field, value in zip(kind.fields, values)}
            for field in kind.fields[len(values):]:
                fields[field.name] = field.default
            if kind.name == "HK":
                self.dictionary.check_channel_map(fields["channels"])
            elif kind.name == "EVENT":
                self._check_event(fields)
            elif kind.name == "REC_PLAYBACK":
                self._check_records(fields["records"])
        except ValueCheckError as exc:
            raise LinkError("BAD_BODY", f"{kind.name}: {exc}") from None
        return fields

    def decode_record_body(self, kind: int, body: bytes) -> tuple[PacketKind, dict[str, Any]]:
        """The packet kind (a REC_KIND value names it) and checked fields of a body played back
        from the onboard recorder; LinkError (BAD_BODY) if it is not one."""
        packet = self.dictionary.packet_by_name.get(self.dictionary.enums["REC_KIND"].name_of(kind))
        if packet is None:
            raise LinkError("BAD_BODY", f"unknown record kind {kind}")
        return packet, self._decode_body(packet, body)

    def _check_records(self, records: list[list[Any]]) -> None:
        for seq, _, kind, _, body in records:
            try:
                self.decode_record_body(kind, body)
            except LinkError as exc:
                raise ValueCheckError(f"record {seq}: {exc.detail}") from None

    def _check_event(self, fields: dict[str, Any]) -> None:
        event = self.dictionary.event_by_id.get(fields["event_id"])
        if event is None:
            raise ValueCheckError(f"unknown event id {fields['event_id']}")
        if len(fields["args"]) != len(event.args):
            raise ValueCheckError(f"{event.name} takes {len(event.args)} arguments")
        for arg, value in zip(event.args, fields["args"]):
            arg.check(value)
