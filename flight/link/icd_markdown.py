"""Renders docs/ICD.md from the dictionary and the codec's own constants.

scripts/gen_icd_doc.py writes the file; a test fails when the file differs from render_icd().
The worked examples at the end are produced by the flight encoder itself, with a fixed time,
sequence count, ARSN and a published example key.
"""
from __future__ import annotations

from typing import Any

from flight.link.codec import PacketCodec
from flight.link.crc16 import crc16_ccitt_false
from flight.link.dictionary import Dictionary, ValueDef, load_dictionary
from flight.link.framing import frame, max_frame_octets
from flight.link.onboard_time import EPOCH, FINE_PER_SECOND, CucTime
from flight.link.sdls import MAC_OCTETS, SECURITY_HEADER
from flight.link.spacepacket import CRC_OCTETS, HEADER_OCTETS, UNSEGMENTED

EXAMPLE_KEY = bytes(range(32))
EXAMPLE_TIME = CucTime(1_700_000_000, 0x8000)

_TYPE_TEXT = {
    "u8": "msgpack unsigned integer 0..255",
    "u16": "msgpack unsigned integer 0..65535",
    "u32": "msgpack unsigned integer 0..2^32-1",
    "u64": "msgpack unsigned integer 0..2^64-1",
    "bool": "msgpack true/false",
    "str": "msgpack str (UTF-8)",
    "bin": "msgpack bin",
    "list": "msgpack array",
    "any": "any msgpack value",
    "list<u32>": "msgpack array of u32",
    "channel_map": "msgpack map: channel id (uint) -> value of that channel's type",
    "sack_entries": "msgpack array of [job_id u32, array of [first u32, end u32]] (first < end)",
}


def _hex(data: bytes, per_line: int = 16) -> str:
    return "\n".join(data[i:i + per_line].hex(" ") for i in range(0, len(data), per_line))


def _value_type(value: ValueDef) -> str:
    text = f"`{value.type}`"
    if value.enum:
        text += f" enum {value.enum}"
    if value.nullable:
        text += " or nil"
    return text


def _range(value: ValueDef) -> str:
    parts = []
    if value.min is not None or value.max is not None:
        parts.append(f"{value.min}..{value.max}")
    if value.min_octets is not None or value.max_octets is not None:
        parts.append(f"{value.min_octets or 0}..{value.max_octets} octets")
    return ", ".join(parts) or "-"


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _limits(limits: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:g}" for name, value in sorted(limits.items())) or "-"


def render_icd(dictionary: Dictionary | None = None) -> str:
    d = dictionary or load_dictionary()
    codec = PacketCodec(d)
    sec = SECURITY_HEADER.size
    tm_overhead = HEADER_OCTETS + CRC_OCTETS
    tc_overhead = HEADER_OCTETS + sec + MAC_OCTETS + CRC_OCTETS
    out: list[str] = []
    add = out.append
    add(f"# {d.name} space–ground Interface Control Document\n")
    add(f"Dictionary version **{d.version}**. Generated from `flight/link/dictionary.json` by "
        "`scripts/gen_icd_doc.py`; do not edit by hand (a test fails when this file is stale).\n")
    add("## 1. Layers\n")
    add("1. **Serial line**: UART 8N1, 115200 baud by default (11520 octets/s), full duplex. Flight: "
        "`/dev/ttyTHS1` (Jetson UART to the radio); ground: `/dev/ttyUSB0`. Any pyserial URL works as well.\n"
        "2. **Frames**: each packet is COBS-encoded and followed by one `0x00` octet.\n"
        "3. **Packets**: CCSDS Space Packets (133.0-B-2) with a CUC time secondary header and a CRC-16 trailer.\n"
        "4. **Bodies**: msgpack. TC packets additionally carry an SDLS-style security header and MAC.\n")
    add("All multi-octet integers in headers are big-endian (network order).\n")

    add("## 2. Framing (COBS)\n")
    add("The sender COBS-encodes each packet (Cheshire & Baker 1999: the packet is cut at every `0x00`; each "
        "piece of up to 254 non-zero octets is preceded by a code octet = piece length + 1; a code `0xFF` means "
        "254 octets with no zero after them) and appends `0x00`. Overhead: at most one octet per 254 plus one, "
        "plus the delimiter.\n")
    add(f"- Largest packet: **{d.max_packet_octets}** octets, so the largest legal frame is "
        f"**{max_frame_octets(d.max_packet_octets)}** octets before its delimiter. Receivers drop longer frames "
        "(everything up to the next `0x00`).\n"
        "- Receivers skip empty frames (consecutive `0x00`), drop frames that are not valid COBS, shorter than "
        f"{HEADER_OCTETS + CRC_OCTETS} octets once decoded, with a bad CRC or a bad primary header, count each kind, "
        "and continue with the next frame.\n"
        "- A port sends one `0x00` when it opens, which ends any half frame the far end holds.\n")

    add("## 3. Space Packet\n")
    add(_table(["octets", "field", "value"], [
        ["0–1", "packet version (3 bits) | type (1) | secondary header flag (1) | APID (11)",
         "version 0; type 0 = TM, 1 = TC; flag 1; APID per packet kind"],
        ["2–3", "sequence flags (2) | sequence count (14)", f"flags 0b{UNSEGMENTED:02b} (unsegmented); count per APID, "
         "+1 per packet, wraps 16383 → 0, restarts at 0 when the sender starts"],
        ["4–5", "packet data length", "octets after the primary header − 1"],
        ["6–9", "CUC coarse time", f"seconds since {EPOCH} (Unix time), unsigned 32 bits"],
        ["10–11", "CUC fine time", f"1/{FINE_PER_SECOND} s units; P-field not transmitted"],
        ["12 … n−3", "user data", "TM: the msgpack body; TC: security header, body, MAC (section 4)"],
        ["n−2 … n−1", "CRC-16", "CRC-16/CCITT-FALSE over octets 0 … n−3"],
    ]))
    add("")
    add("CRC-16/CCITT-FALSE: polynomial 0x1021, initial value 0xFFFF, not reflected, no final XOR. "
        f"Check value: CRC of ASCII `123456789` = 0x{crc16_ccitt_false(b'123456789'):04X}. Running the CRC over a whole "
        "packet including its CRC gives 0.\n")
    add(f"Per-packet overhead: TM {tm_overhead} octets, TC {tc_overhead} octets, plus COBS (≤ 1 per 254 + 1) and the "
        "delimiter. The onboard time of TM is when the packet was encoded; of TC, when the ground sent it.\n")

    add("## 4. Command security (SDLS, authentication only)\n")
    add("TC user data:\n")
    add(_table(["octets (from 12)", "field", "value"], [
        ["0–1", "SPI", "security parameter index = key id in the key file"],
        ["2–9", "ARSN", "anti-replay sequence number, unsigned 64 bits"],
        [f"10 … m−{MAC_OCTETS + 1}", "body", "msgpack body of the TC kind"],
        [f"last {MAC_OCTETS}", "MAC", f"HMAC-SHA256(key, packet octets 0 … before the MAC), first {MAC_OCTETS} octets"],
    ]))
    add("")
    add("SDLS's IV and pad-length fields are absent (nothing is encrypted). The MAC covers the primary header, "
        "time, security header and body; the CRC then covers everything including the MAC.\n")
    add("- **ARSN**: the flight accepts a packet only if its ARSN is greater than the last one accepted for that SPI, "
        "and commits the new value to its store (fsync) before acting on the packet or answering it, so replays "
        "are refused across reboots. Every authentic packet uses up its ARSN, even if its body is then rejected. "
        "The reference ground uses max(last + 1, Unix time in µs), persisted in its archive.\n"
        "- **Keys**: JSON `{\"keys\": [{\"spi\": 1, \"key\": \"<64 hex digits>\"}]}`, 256-bit keys; the file must not "
        "be accessible by group or others (mode 0600), else it is refused. `ground keygen --out FILE` makes one.\n")

    add("## 5. Bodies\n")
    add("Every body is a msgpack **array of the packet kind's fields, in the order listed**. Integers may use any "
        "msgpack integer encoding that holds the value; str must be valid UTF-8; nil only where a field says so. "
        "A body that is not valid msgpack, not an array of the right length, or has a field of the wrong type, is "
        "rejected as BAD_BODY.\n")
    add(_table(["type", "encoding"], [[f"`{name}`", text] for name, text in _TYPE_TEXT.items()]))
    add("")

    add("## 6. Packet kinds\n")
    add(_table(["name", "APID", "type", "description"],
               [[p.name, f"0x{p.apid:03X}", "TC" if p.is_tc else "TM", p.description] for p in d.packets]))
    add("\nAPID 0x7FF (idle) is not used; receivers count a packet with an unknown APID as WRONG_KIND.\n")
    for p in d.packets:
        add(f"### {p.name} (APID 0x{p.apid:03X}, {'TC' if p.is_tc else 'TM'})\n")
        add(_table(["#", "field", "type", "description"],
                   [[i, f.name, _value_type(f), f.description] for i, f in enumerate(p.fields)]))
        add("")

    add("## 7. Command protocol\n")
    add("For every COMMAND packet that arrives as a valid frame, the flight sends CMD_RESPONSE packets:\n\n"
        "1. **REJECTED** (NACK) with a reason, if it is not executed: wrong kind, missing security fields, unknown "
        "key, bad MAC, replayed ARSN, bad body, unknown opcode, bad argument, no handler, queue full. The command is "
        "counted in CMD_REJECTED (and LINK_AUTH_FAILURES or LINK_REPLAYS_REJECTED), and a CMD_REJECTED event is "
        "sent. `arsn`, `seq_count` and `opcode` echo what could be read; `data` is a one-line explanation.\n"
        "2. Otherwise **ACCEPTED** (ACK, counted in CMD_ACCEPTED), then exactly one of\n"
        "3. **COMPLETED** with optional result `data` (CMD_EXECUTED), or **FAILED** with a reason and one-line "
        "`data` (CMD_FAILED, event CMD_FAILED).\n\n"
        "A DL_SACK packet gets only a NACK, when rejected. Frames that fail COBS, CRC or header checks carry nothing "
        "trustworthy to answer: they are counted (LINK_CRC_ERRORS, LINK_FRAME_ERRORS, LINK_OVERSIZE_FRAMES, "
        "LINK_BYTES_DISCARDED) and reported by the throttled LINK_FRAME_REJECTED event, not NACKed. The ground "
        "matches responses to commands by ARSN. Command arguments are positional, in the order of the commands "
        "table.\n")
    add("The anti-replay check has no window: a command frame the link duplicates is executed once and its copy "
        "NACKed as REPLAY of the same ARSN (a client should keep waiting for the first copy's completion), and a "
        "command overtaken by a newer ARSN is NACKed as REPLAY (a client may resend it with a fresh ARSN).\n")
    add("The flight is in **contact** (LINK_CONTACT) while it has received an authentic, fresh TC packet within the "
        "contact timeout (default 10 s); the ground sends a DL_SACK at least every second as keep-alive.\n")

    add("## 8. Reliable downlink of results\n")
    add(f"- A job's result is stored onboard (fsync) before it is sent, then cut into segments of "
        f"**{d.segment_octets}** octets (the last may be shorter; an empty result is one empty segment). Each "
        "JOB_RESULT_SEGMENT carries the segment's index, the segment count, the result length and its CRC-32 (zlib).\n"
        "- While in contact the flight sends every segment the ground has not acknowledged, oldest result first, "
        "and sends a segment again when the retransmission timeout (default 3 s) passes without an acknowledgement.\n"
        "- The ground stores each segment (once; duplicates are counted and dropped) before acknowledging it, and "
        "sends DL_SACK listing, per job, the ranges of segment indices it holds; a completed result is acknowledged "
        "as one range [0, segment_count). Acknowledgements only ever add: the flight persists them, and a result "
        "fully acknowledged is delivered (event DL_RESULT_DELIVERED) and never sent again.\n"
        "- The ground reassembles a result when it holds every segment, checks length and CRC-32, and archives it "
        "under its job id, so no result is stored twice however often segments arrive.\n"
        "- JOB_TOKENS streams are best-effort and never retransmitted; the result is the reliable copy.\n")

    add("## 9. Enumerations\n")
    for enum in d.enums.values():
        add(f"### {enum.name}\n")
        add(_table(["value", "name", "meaning"], [[v, n, enum.descriptions[n]] for n, v in enum.values.items()]))
        add("")

    add("## 10. Commands\n")
    add(_table(["opcode", "name", "hazardous", "arguments (in order)", "description"], [
        [f"0x{c.opcode:04X}", c.name, "**yes**" if c.hazardous else "no",
         "; ".join(f"`{a.name}` {_value_type(a)} ({_range(a)}): {a.description}" for a in c.args) or "none",
         c.description]
        for c in d.commands]))
    add("\nHazardous commands are refused by the ground client unless explicitly confirmed.\n")

    add("## 11. Telemetry channels\n")
    add("Sent in HK packets as `channels` map entries, keyed by id. Limits: a value above `red_high` or below "
        "`red_low` is red; above `yellow_high` or below `yellow_low`, yellow.\n")
    add(_table(["id", "name", "type", "unit", "limits", "description"],
               [[c.id, c.name, f"`{c.type}`", c.unit or "-", _limits(c.limits), c.description] for c in d.channels]))
    add("")

    add("## 12. Events\n")
    add("Sent as EVENT packets: `[event_id, [args...]]`; the ground renders the message with the format below "
        "(enum arguments shown by name). Events with a throttle are sent at most that many times per second; the "
        "rest are counted in LINK_EVENTS_SUPPRESSED.\n")
    add(_table(["id", "name", "severity", "throttle /s", "arguments", "format"], [
        [e.id, e.name, e.severity, e.throttle or "-", ", ".join(f"`{a.name}` {_value_type(a)}" for a in e.args) or "none",
         f"`{e.format}`"]
        for e in d.events]))
    add("")

    add("## 13. Worked examples\n")
    add(f"Time {EXAMPLE_TIME.coarse} s + 0x{EXAMPLE_TIME.fine:04X}/65536, sequence count 5.\n")
    hk = codec.encode_tm("HK", {"channels": {d.channel_by_name["LINK_UPTIME"].id: 42,
                                             d.channel_by_name["LINK_CONTACT"].id: True}}, 5, EXAMPLE_TIME)
    add("HK packet with LINK_UPTIME = 42 and LINK_CONTACT = true:\n")
    add("```\n" + _hex(hk) + "\n```\n")
    add("The same packet as a frame on the wire:\n")
    add("```\n" + _hex(frame(hk)) + "\n```\n")
    ping = d.command_by_name["LINK_PING"]
    tc = codec.encode_tc("COMMAND", {"opcode": ping.opcode, "args": [7]}, 5, spi=1, arsn=1000, key=EXAMPLE_KEY,
                         time=EXAMPLE_TIME)
    add(f"COMMAND LINK_PING token=7, SPI 1, ARSN 1000, example key `{EXAMPLE_KEY.hex()}` (never fly it):\n")
    add("```\n" + _hex(tc) + "\n```\n")
    add(f"Its MAC is octets {len(tc) - CRC_OCTETS - MAC_OCTETS}–{len(tc) - CRC_OCTETS - 1}, its CRC the last two.\n")
    return "\n".join(out)
