"""Renders docs/ICD.md from the dictionary and the codec's own constants.

scripts/gen_icd_doc.py writes the file; a test fails when the file differs from render_icd().
The worked examples at the end are produced by the flight encoder itself, with a fixed time,
sequence count, ARSN and a published example key.
"""
from __future__ import annotations

from typing import Any

from flight.link.codec import PacketCodec, Seal
from flight.link.crc16 import crc16_ccitt_false
from flight.link.dictionary import Dictionary, ValueDef, load_dictionary
from flight.link.framing import frame, max_frame_octets
from flight.link.onboard_time import EPOCH, FINE_PER_SECOND, CucTime
from flight.link.playback import MAX_REQUESTS, PLAYBACK_EVERY
from flight.link.sdls import MAC_OCTETS, SECURITY_HEADER
from flight.link.spacepacket import CRC_OCTETS, HEADER_OCTETS, UNSEGMENTED

EXAMPLE_KEY = bytes(range(32))
EXAMPLE_TIME = CucTime(1_700_000_000, 0x8000)

_TYPE_TEXT = {
    "u8": "msgpack unsigned integer 0..255",
    "u16": "msgpack unsigned integer 0..65535",
    "u32": "msgpack unsigned integer 0..2^32-1",
    "u64": "msgpack unsigned integer 0..2^64-1",
    "i8": "msgpack integer -128..127",
    "i16": "msgpack integer -32768..32767",
    "i32": "msgpack integer -2^31..2^31-1",
    "i64": "msgpack integer -2^63..2^63-1",
    "f32": "msgpack float (or integer), finite, within float32 range (±3.4028235e38)",
    "f64": "msgpack float (or integer), finite",
    "bool": "msgpack true/false",
    "str": "msgpack str (UTF-8)",
    "bin": "msgpack bin",
    "list": "msgpack array",
    "any": "any msgpack value",
    "list<u32>": "msgpack array of u32",
    "channel_map": "msgpack map: channel id (uint) -> value of that channel's type",
    "sack_entries": "msgpack array of [job_id u32, array of [first u32, end u32]] (first < end)",
    "records": "msgpack array of [seq u64, onboard_time f64, kind u8 enum REC_KIND, in_contact bool, body bin]; body "
               "is the msgpack body of the EVENT or HK packet the record keeps, checked as that packet's",
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


def _unit_default(value: ValueDef) -> str:
    text = f", {value.unit}" if value.unit else ""
    return text + (f"; optional, default {value.default!r}" if value.optional else "")


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
        "4. **Bodies**: msgpack. TC packets, and CMD_RESPONSE on the downlink, additionally carry an SDLS-style "
        "security header and MAC.\n")
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
        ["12 … n−3", "user data", "the msgpack body; for a secured kind (every TC, and CMD_RESPONSE): security "
         "header, body, MAC (section 4)"],
        ["n−2 … n−1", "CRC-16", "CRC-16/CCITT-FALSE over octets 0 … n−3"],
    ]))
    add("")
    add("CRC-16/CCITT-FALSE: polynomial 0x1021, initial value 0xFFFF, not reflected, no final XOR. "
        f"Check value: CRC of ASCII `123456789` = 0x{crc16_ccitt_false(b'123456789'):04X}. Running the CRC over a whole "
        "packet including its CRC gives 0.\n")
    add(f"Per-packet overhead: TM {tm_overhead} octets, secured TM and TC {tc_overhead} octets, plus COBS (≤ 1 per "
        "254 + 1) and the delimiter. The onboard time of TM is when the packet was encoded; of TC, when the ground "
        "sent it.\n")

    sec_defaults = d.security
    add("## 4. Security (SDLS, authentication only)\n")
    add("User data of a secured packet kind (every TC kind, and CMD_RESPONSE):\n")
    add(_table(["octets (from 12)", "field", "value"], [
        ["0–1", "SPI", "security parameter index = key id in the key file"],
        ["2–9", "ARSN", "anti-replay sequence number, unsigned 64 bits; in a CMD_RESPONSE, the ARSN of the command "
         "it answers"],
        [f"10 … m−{MAC_OCTETS + 1}", "body", "msgpack body of the kind"],
        [f"last {MAC_OCTETS}", "MAC", f"HMAC-SHA256(key, packet octets 0 … before the MAC ‖ associated data), first "
         f"{MAC_OCTETS} octets"],
    ]))
    add("")
    add("SDLS's IV and pad-length fields are absent (nothing is encrypted). The MAC covers the primary header, "
        "time, security header and body, then associated data that is not transmitted: none for a TC; for a "
        f"CMD_RESPONSE, the {MAC_OCTETS}-octet MAC of the command it answers, which binds the response to that one "
        "packet. The CRC then covers everything including the MAC.\n")
    add(f"- **ARSN window**: the flight accepts an operations-key packet only if last < ARSN ≤ last + W, W = "
        f"**{sec_defaults.arsn_window}** by default (`flight run` config key `[link] arsn_window`), last being the last ARSN accepted "
        "for that SPI; it commits the new value (fsync) before acting on the packet or answering it, so replays "
        "are refused across reboots. Every authentic fresh packet uses up its ARSN, even if its body is then "
        "rejected. An ARSN at or below last is REPLAY, one beyond the window OUT_OF_WINDOW: neither moves the "
        "counter, so one packet with a far-future ARSN cannot lock the ground out. The ground allocates ARSNs from "
        "its own persisted counter per SPI (last + 1, in one SQLite write transaction, so ground processes sharing "
        "an archive never reuse one), never from its clock or from telemetry. Each ground station needs its own "
        "SPI. W should exceed the packets a ground may send that never reach the node (it sends a DL_SACK per "
        "second while running).\n"
        "- **Recovery**: a ground that lost its archive (REPLAY) or got more than W ahead (OUT_OF_WINDOW) resets "
        "the counter with LINK_SET_ARSN, accepted only under a **recovery key** (its own SPI, role `recovery`, kept "
        "offline), which may send nothing else. A recovery packet's ARSN must equal the node's current "
        "LINK_RECOVERY_CHALLENGE (housekeeping): a random 63-bit value, replaced and persisted each time one is "
        "used, so a recorded recovery packet never works again and the recovery side keeps no counter to lose. "
        "`ground recover --keys RECOVERY_KEY_FILE --target-spi 1` reads the challenge, sets the node's counter to "
        "the archive's last ARSN (only upwards unless `--allow-lower`: lowering lets packets sent with the ARSNs in "
        "between be replayed) and continues the archive from the value the node reports in its authenticated "
        "completion.\n"
        "- **Keys**: JSON `{\"keys\": [{\"spi\": 1, \"key\": \"<64 hex digits>\"}, {\"spi\": 9, \"key\": \"…\", "
        "\"role\": \"recovery\"}]}`, 256-bit keys. A key file is refused unless it is a regular file (not a symlink "
        "or FIFO) owned by the user or root, not accessible by group or others (mode 0600), in a directory they "
        "cannot write; duplicate or non-integer SPIs are refused. The node takes `--keys` more than once (the "
        "operations file and the recovery file). `ground keygen --out FILE [--role recovery]` makes one.\n")
    add("**What the downlink authenticates, and what it costs.** CMD_RESPONSE carries the security header and MAC: "
        f"{SECURITY_HEADER.size + MAC_OCTETS} octets more per response, {2 * (SECURITY_HEADER.size + MAC_OCTETS)} per "
        "command (ACK and completion). A result carries `spi` and `result_mac` in every JOB_RESULT_SEGMENT: "
        "HMAC-SHA256 over 'tokensat-result' ‖ job_id (4 octets) ‖ result length (4) ‖ the whole result, first "
        f"{MAC_OCTETS} octets; {MAC_OCTETS + 2} octets of msgpack bin plus 1–3 for the SPI, about 2 % of a "
        f"{d.segment_octets}-octet segment. The ground checks it after reassembly and before archiving; a result that "
        "fails (or fails its CRC-32) is dropped, counted and re-requested. HK, EVENT, JOB_TOKENS and CMD_REJECTION "
        "stay unauthenticated: they are advisory (housekeeping is superseded every period, the token stream has a "
        "reliable authenticated copy in the result, and a CMD_REJECTION is never taken as final), and a MAC on each "
        "would cost 26 octets per packet on the busiest channels. An on-path forger can therefore fake "
        "housekeeping and events, but cannot complete, fail or NACK a command, nor get a result archived.\n")

    add("## 5. Bodies\n")
    add("Every body is a msgpack **array of the packet kind's fields, in the order listed**. Integers may use any "
        "msgpack integer encoding that holds the value; str must be valid UTF-8; nil only where a field says so. "
        "A body that is not valid msgpack, not an array of the right length, or has a field of the wrong type, is "
        "rejected as BAD_BODY. A field marked optional was added by a later dictionary version: senders leave it out "
        "when it has its default, receivers take the default when it is absent, so a 1.x sender's COMMAND body "
        "`[opcode, args]` is still valid.\n")
    add(_table(["type", "encoding"], [[f"`{name}`", text] for name, text in _TYPE_TEXT.items()]))
    add("")

    add("## 6. Packet kinds\n")
    add(_table(["name", "APID", "type", "description"],
               [[p.name, f"0x{p.apid:03X}", "TC" if p.is_tc else "TM", p.description] for p in d.packets]))
    add("\nAPID 0x7FF (idle) is not used; receivers count a packet with an unknown APID as WRONG_KIND.\n")
    for p in d.packets:
        add(f"### {p.name} (APID 0x{p.apid:03X}, {'TC' if p.is_tc else 'TM'})\n")
        if p.secured:
            add("Secured: security header and MAC (section 4).\n")
        add(_table(["#", "field", "type", "description"],
                   [[i, f.name, _value_type(f) + (f", optional (default {f.default!r})" if f.optional else ""),
                     f.description] for i, f in enumerate(p.fields)]))
        add("")

    add("## 7. Command protocol\n")
    add("For every TC packet that arrives as a valid frame, the flight answers:\n\n"
        "1. If it did not prove itself authentic and fresh (wrong kind, missing security fields, unknown key, bad "
        "MAC, REPLAY, OUT_OF_WINDOW): one unauthenticated **CMD_REJECTION** with the reason, counted in "
        "CMD_REJECTED (and LINK_AUTH_FAILURES, LINK_REPLAYS_REJECTED or LINK_ARSN_OUT_OF_WINDOW), with a "
        "CMD_REJECTED event. Anyone can provoke or forge these, so they are **rejection reports**: sent only within "
        "the rejection budget (below), and the ground never takes one as final.\n"
        "2. Otherwise, an authenticated **CMD_RESPONSE** (section 4): **REJECTED** (NACK) with a reason if it is "
        "not executed (bad body, unknown opcode, bad argument, NOT_CONFIRMED, KEY_NOT_ALLOWED, no handler, queue "
        "full; counted in CMD_REJECTED, event CMD_REJECTED); else **ACCEPTED** (ACK, CMD_ACCEPTED), then exactly "
        "one of **COMPLETED** with optional result `data` (CMD_EXECUTED) or **FAILED** with a reason and one-line "
        "`data` (CMD_FAILED, event CMD_FAILED).\n\n"
        "`arsn`, `seq_count` and `opcode` echo what could be read; `data`/`detail` is a one-line explanation. A "
        "DL_SACK gets only a NACK, when rejected. Frames that fail COBS, CRC or header checks carry nothing "
        "trustworthy to answer: they are counted (LINK_CRC_ERRORS, LINK_FRAME_ERRORS, LINK_OVERSIZE_FRAMES, "
        "LINK_BYTES_DISCARDED) and reported by the LINK_FRAME_REJECTED event, a rejection report too. The ground "
        "matches responses to commands by ARSN and believes a CMD_RESPONSE only if its MAC verifies with the key "
        "and MAC of the command it sent; it reports a CMD_REJECTION only if no authenticated response arrives "
        "before its timeout, and says so. Command arguments are positional, in the order of the commands table.\n")
    add(f"**Rejection budget.** Rejection reports (CMD_REJECTION packets and the events marked as such in "
        f"section 12) share one token bucket of **{sec_defaults.rejection_budget_octets_per_s} octets/s** (bursts of "
        f"{sec_defaults.rejection_burst_octets}) of downlink, on a queue of their own below every other TM, so they "
        "never displace a response to an authenticated command. Reports beyond it are counted in "
        "LINK_REJECTIONS_SUPPRESSED (LINK_REJECTION_OCTETS counts what was sent), and at most once every "
        f"{sec_defaults.rejection_summary_period_s} s a LINK_REJECTIONS_SUMMARY event tells how many uplink frames "
        "and packets were rejected, how many reports were suppressed and the last reason.\n")
    add("**Hazardous commands** must carry `confirm_hazardous` = true in the COMMAND body; the flight NACKs one "
        "without it (NOT_CONFIRMED), whatever the ground tool checked.\n")
    add("A command frame the link duplicates is executed once and its copy answered by a REPLAY rejection report; "
        "a command overtaken by a newer ARSN is refused as REPLAY (a client may resend it with a fresh ARSN).\n")
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
        "as one range [0, segment_count). An entry states everything the ground holds of that result: the flight "
        "persists it as the result's acknowledgements, replacing the previous ones, and sends at once any segment "
        "whose acknowledgement was withdrawn. A result fully acknowledged is delivered (event DL_RESULT_DELIVERED) "
        "and never sent again. (One ground station per node: two would each withdraw what the other acknowledged.)\n"
        "- The ground reassembles a result when it holds every segment, checks length, CRC-32 and the result MAC "
        "(section 4), and archives it under its job id, so no result is stored twice however often segments "
        "arrive. A result that fails is dropped and so re-requested: its entry, at first with no ranges, is in "
        "every DL_SACK until the result is archived, and the flight sends again what the ground no longer holds "
        "(DL_RESULTS_REREQUESTED, event DL_RESULT_REREQUESTED). The ground never acknowledges the last segment of a "
        "result before its checks pass. On closing, a ground session sends a last DL_SACK for everything it "
        "archived.\n"
        "- JOB_TOKENS streams are best-effort and never retransmitted; the result is the reliable copy. A stream "
        "is split so that every packet fits: a token whose text alone does not fit is sent in pieces, the first "
        "with its id, the rest with no id and the same `first_index`, to be joined in arrival order.\n")

    result = d.result
    add("### Result content\n")
    add(result.description + " Every key is present. A ground that cannot decompress or decode a result that "
        "passed its MAC archives the octets as they came and reports it.\n")
    add(_table(["key", "type", "unit", "description"],
               [[f.name, f"`{f.type}`", f.unit or "-", f.description] for f in result.fields]))
    add("")

    add("## 9. Enumerations\n")
    for enum in d.enums.values():
        add(f"### {enum.name}\n")
        add(_table(["value", "name", "meaning"], [[v, n, enum.descriptions[n]] for n, v in enum.values.items()]))
        add("")

    add("## 10. Commands\n")
    add(_table(["opcode", "name", "hazardous", "key", "arguments (in order)", "description"], [
        [f"0x{c.opcode:04X}", c.name, "**yes**" if c.hazardous else "no", "recovery" if c.recovery else "operations",
         "; ".join(f"`{a.name}` {_value_type(a)} ({_range(a)}{_unit_default(a)}): {a.description}"
                   for a in c.args) or "none",
         c.description]
        for c in d.commands]))
    add("\nHazardous commands are refused by the ground client unless explicitly confirmed, and by the flight "
        "unless the packet says they were (section 7).\n")

    add("## 11. Telemetry channels\n")
    add("Sent in HK packets as `channels` map entries, keyed by id. Limits: a value above `red_high` or below "
        "`red_low` is red; above `yellow_high` or below `yellow_low`, yellow.\n")
    add(_table(["id", "name", "type", "unit", "limits", "description"],
               [[c.id, c.name, f"`{c.type}`" + (f" enum {c.enum}" if c.enum else ""), c.unit or "-", _limits(c.limits),
                 c.description] for c in d.channels]))
    add("")

    add("## 12. Events\n")
    add("Sent as EVENT packets: `[event_id, [args...]]`; the ground renders the message with the format below "
        "(enum arguments shown by name). Events with a throttle are sent at most that many times per second; the "
        "rest are counted in LINK_EVENTS_SUPPRESSED. Rejection reports are also held to the rejection budget "
        "(section 7).\n")
    add(_table(["id", "name", "severity", "throttle /s", "rejection report", "arguments", "format"], [
        [e.id, e.name, e.severity, e.throttle or "-", "yes" if e.rejection else "no",
         ", ".join(f"`{a.name}` {_value_type(a)}" for a in e.args) or "none", f"`{e.format}`"]
        for e in d.events]))
    add("")

    add("## 13. Executive modes\n")
    table = d.modes
    add("The node is in one mode at a time (enumeration MODE). Only these changes are allowed; each is persisted "
        "(fsync) before it takes effect, and reported with its cause (enumeration MODE_CAUSE):\n")
    add(_table(["from", "to"], sorted([list(pair) for pair in table.transitions],
                                       key=lambda pair: (table.modes.index(pair[0]), table.modes.index(pair[1])))))
    add("")
    add("Every start passes through BOOT (never persisted), then enters the mode below, chosen by the mode "
        f"persisted when the node last stopped or died (with nothing persisted: **{table.first_start}**). A node "
        "never starts straight into INFERENCE: that needs MODE_SET INFERENCE or, with auto_inference, the "
        "executive's own rule; and a SAFE entered for a fault is left by command only.\n")
    add(_table(["persisted mode", "start enters"], [[m, table.after_reboot[m]] for m in table.modes if m != "BOOT"]))
    add("")

    add("## 14. Worked examples\n")
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
    response = codec.encode_tm("CMD_RESPONSE", {
        "arsn": 1000, "seq_count": 5, "opcode": ping.opcode, "status": d.enum_value("CMD_STATUS", "COMPLETED"),
        "reason": 0, "data": {"token": 7}}, 5, EXAMPLE_TIME, seal=Seal(1, 1000, EXAMPLE_KEY, tc[-CRC_OCTETS - MAC_OCTETS:-CRC_OCTETS]))
    add("Its COMPLETED response: SPI 1, ARSN 1000, MAC over the packet and then the command's MAC:\n")
    add("```\n" + _hex(response) + "\n```\n")

    add("## 15. Onboard recording and playback\n")
    add("The node records in a bounded onboard store (config `[recorder]`; channels REC_*) every event it emits "
        "except rejection reports (a flood of hostile frames would otherwise push everything else out; the "
        "LINK_REJECTIONS_SUMMARY events that sum them up are recorded), and a housekeeping snapshot every "
        "`[recorder] hk_period_s` (default 10 s), not every live HK packet. A record keeps the body of the live "
        "packet as it was sent, its onboard time, whether the node was in contact, and a sequence number `seq` "
        "that counts records over the node's life and is never reused. Past its capacity in records or octets the "
        "oldest records are dropped first (REC_DROPPED). Records are committed at most `[recorder] flush_period_s` "
        "(default 1 s) after they are made: a reset loses at most that.\n")
    add("**Owed records.** A record made out of contact is owed to the ground; so is everything recorded or played "
        "back after the last authentic uplink, once contact is found lost (the node went on sending for the contact "
        "timeout, but the ground may have gone). REC_OWED counts them.\n")
    add("**Playback.** REC_PLAYBACK packets carry records with their original onboard time, kind and seq: the "
        "ground archives them at that time, marked as played back, and drops a seq it holds already.\n\n"
        "- Automatically at each contact (LINK_CONTACT becoming true): every owed record, events first, then "
        "housekeeping, oldest first within each (source AUTO). A pass cut short by a loss of contact starts again "
        "at the next contact with what is still owed.\n"
        "- On command, RECORDER_PLAYBACK: the records of a time range and kinds, played back before or not (source "
        f"COMMAND); up to {MAX_REQUESTS} wait at once, served in order and before the automatic pass.\n"
        "- REC_PLAYBACK_STARTED and REC_PLAYBACK_FINISHED frame each pass.\n")
    add("**Priority.** Playback is bulk: it is sent only when no live packet waits (responses, events, "
        "housekeeping, token streams, rejection reports), and after result segments, the product; but while both "
        f"wait, one bulk packet in {PLAYBACK_EVERY} is playback, so results delay playback but never starve it. A "
        f"playback packet holds records of up to about {d.segment_octets} octets (a larger record goes alone), so the "
        "share is one of octets too.\n")
    add("**Best effort.** Nothing is acknowledged or retransmitted: a record counts as played back (REC_PLAYED_BACK) "
        "when its packet is sent, and is owed again only if it was sent after the last uplink before contact was "
        "found lost. A ground that misses some (gaps in `seq`, or in the REC_PLAYBACK sequence count) asks for the time "
        "range again with RECORDER_PLAYBACK (`ground playback --from TIME --to TIME`). An event sent live between "
        "the ground's last uplink and its going (at most its keep-alive interval, a second) may arrive twice, live "
        "and played back with `in_contact` true.\n")
    return "\n".join(out)
