"""One realistic field set per packet kind of the dictionary, for round-trip tests and benchmarks."""
from __future__ import annotations

from typing import Any

from flight.link.codec import PacketCodec, Seal
from flight.link.dictionary import Dictionary
from flight.link.onboard_time import CucTime

# The seal of every secured TM sample: key, security header and a command MAC as associated data.
SEAL = Seal(3, 2**63 + 5, bytes(range(32)), bytes(range(100, 116)))


def encode_tm_sample(codec: PacketCodec, kind: str, fields: dict[str, Any], seq_count: int,
                     time: CucTime | None = None) -> bytes:
    """A TM packet of any kind, sealed with SEAL when its kind is secured."""
    return codec.encode_tm(kind, fields, seq_count, time, seal=SEAL if codec.dictionary.packet(kind).secured else None)


def codec_body(d: Dictionary, kind: str, fields: dict[str, Any]) -> bytes:
    """The msgpack body a packet of this kind carries: what the onboard recorder keeps."""
    return PacketCodec(d).encode_body(kind, fields)


def samples(d: Dictionary) -> dict[str, dict[str, Any]]:
    hk = {}
    for i, channel in enumerate(d.channels):
        if channel.type == "bool":
            hk[channel.id] = i % 2 == 0
        elif channel.type in ("f32", "f64"):
            hk[channel.id] = i * 977 / 7
        elif channel.type.startswith("i"):
            hk[channel.id] = -(i % 100)
        else:
            hk[channel.id] = (i * 977) % 60000 % (256 if channel.type == "u8" else 60000)
    event = {"event_id": d.event_by_name["CMD_FAILED"].id,
             "args": ["JOB_SUBMIT", d.enum_value("REASON", "DUPLICATE_JOB"), "job 7 already exists"]}
    return {
        "HK": {"channels": hk},
        "EVENT": event,
        "CMD_RESPONSE": {"arsn": 2**63 + 5, "seq_count": 16383, "opcode": 0x0201,
                         "status": d.enum_value("CMD_STATUS", "COMPLETED"), "reason": 0, "data": {"job_id": 7, "new": True}},
        "JOB_TOKENS": {"job_id": 7, "first_index": 32, "token_ids": list(range(1000, 1032)),
                       "text": " the quick brown fox jumps over the lazy dog in orbit ünïcödé" * 2},
        "JOB_RESULT_SEGMENT": {"job_id": 7, "segment": 2, "segment_count": 5, "result_octets": 4500,
                               "result_crc32": 0xDEADBEEF, "spi": 1, "result_mac": bytes(range(16)),
                               "data": bytes(range(256)) * 4},
        "CMD_REJECTION": {"spi": 1, "arsn": 2**64 - 1, "seq_count": 12, "reason": d.enum_value("REASON", "BAD_MAC"),
                          "detail": "MAC does not verify with SPI 1"},
        "COMMAND": {"opcode": d.command_by_name["JOB_SUBMIT"].opcode, "args": [7, 64, "Why orbit?"], "confirm_hazardous": True},
        "DL_SACK": {"entries": [[7, [[0, 3], [4, 5]]], [8, [[0, 1]]]]},
        "REC_PLAYBACK": {"source": d.enum_value("REC_SOURCE", "AUTO"), "records": [
            [41, 1_800_000_000.25, d.enum_value("REC_KIND", "EVENT"), False, codec_body(d, "EVENT", event)],
            [42, 1_800_000_010.5, d.enum_value("REC_KIND", "HK"), True, codec_body(d, "HK", {"channels": hk})]]},
    }
