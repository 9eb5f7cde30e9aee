"""The ICD dictionary: packet kinds, telemetry channels, events, commands and enums.

dictionary.json next to this module is the single definition; flight, ground and docs/ICD.md
all come from it. Loading checks it for internal consistency so a bad edit fails at start-up,
not on orbit.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

DICTIONARY_PATH = Path(__file__).with_name("dictionary.json")

SEVERITIES = ("FATAL", "WARNING_HI", "WARNING_LO", "COMMAND", "ACTIVITY_HI", "ACTIVITY_LO", "DIAGNOSTIC")
_UINT_BITS = {"u8": 8, "u16": 16, "u32": 32, "u64": 64}
_INT_BITS = {"i8": 8, "i16": 16, "i32": 32, "i64": 64}
# Largest finite magnitude of each float type. A float travels as a msgpack float (64-bit as
# encoded by the reference sender); f32 says the value must survive a float32 receiver.
_FLOAT_MAX = {"f32": 3.4028234663852886e38, "f64": 1.7976931348623157e308}
MAX_APID = 0x7FE  # 0x7FF is the CCSDS idle APID


class DictionaryError(ValueError):
    """The dictionary file is inconsistent."""


class ValueCheckError(ValueError):
    """A value does not fit its declared type, range or length."""


def _check_uint(kind: str) -> Callable[[Any], None]:
    top = (1 << _UINT_BITS[kind]) - 1

    def check(value: Any) -> None:
        # bool is an int subclass; a flag where a number belongs is a client bug.
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
            raise ValueCheckError(f"expected {kind}, got {value!r}")

    return check


def _check_int(kind: str) -> Callable[[Any], None]:
    half = 1 << (_INT_BITS[kind] - 1)

    def check(value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not -half <= value < half:
            raise ValueCheckError(f"expected {kind}, got {value!r}")

    return check


def _check_float(kind: str) -> Callable[[Any], None]:
    top = _FLOAT_MAX[kind]

    def check(value: Any) -> None:
        # An integer is a fine float (a client writing temperature=1); NaN and infinities are not:
        # no limit check or arithmetic onboard means anything with them.
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not -top <= value <= top:
            raise ValueCheckError(f"expected a finite {kind}, got {value!r}")

    return check


def _check_instance(kind: str, types: type | tuple[type, ...]) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        if not isinstance(value, types):
            raise ValueCheckError(f"expected {kind}, got {type(value).__name__}")

    return check


def _check_u32_list(value: Any) -> None:
    if not isinstance(value, list):
        raise ValueCheckError(f"expected list<u32>, got {type(value).__name__}")
    check = _TYPE_CHECKS["u32"]
    for item in value:
        check(item)


def _check_channel_map(value: Any) -> None:
    # Values are checked against each channel's own type by Dictionary.check_channel_map.
    if not isinstance(value, dict):
        raise ValueCheckError(f"expected channel_map, got {type(value).__name__}")


def _check_sack_entries(value: Any) -> None:
    if not isinstance(value, list):
        raise ValueCheckError(f"expected sack_entries, got {type(value).__name__}")
    u32 = _TYPE_CHECKS["u32"]
    for entry in value:
        if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[1], list)):
            raise ValueCheckError("sack entry must be [job_id, ranges]")
        u32(entry[0])
        for rng in entry[1]:
            if not (isinstance(rng, list) and len(rng) == 2):
                raise ValueCheckError("sack range must be [first, end)")
            u32(rng[0])
            u32(rng[1])
            if rng[0] >= rng[1]:
                raise ValueCheckError(f"empty sack range {rng!r}")


def _check_records(value: Any) -> None:
    # Each body is checked against its kind's packet by the codec, which knows the kinds.
    if not isinstance(value, list):
        raise ValueCheckError(f"expected records, got {type(value).__name__}")
    checks = (_TYPE_CHECKS["u64"], _TYPE_CHECKS["f64"], _TYPE_CHECKS["u8"], _TYPE_CHECKS["bool"], _TYPE_CHECKS["bin"])
    for record in value:
        if not (isinstance(record, list) and len(record) == len(checks)):
            raise ValueCheckError("a record must be [seq, onboard_time, kind, in_contact, body]")
        for check, item in zip(checks, record):
            check(item)


_TYPE_CHECKS: dict[str, Callable[[Any], None]] = {
    **{kind: _check_uint(kind) for kind in _UINT_BITS},
    **{kind: _check_int(kind) for kind in _INT_BITS},
    **{kind: _check_float(kind) for kind in _FLOAT_MAX},
    "bool": _check_instance("bool", bool),
    "str": _check_instance("str", str),
    "bin": _check_instance("bin", bytes),
    "list": _check_instance("list", list),
    "any": lambda value: None,
    "list<u32>": _check_u32_list,
    "channel_map": _check_channel_map,
    "sack_entries": _check_sack_entries,
    "records": _check_records,
}
FIELD_TYPES = tuple(_TYPE_CHECKS)
ARG_TYPES = (*_UINT_BITS, *_INT_BITS, *_FLOAT_MAX, "bool", "str")


@dataclass(frozen=True)
class EnumDef:
    name: str
    values: dict[str, int]
    descriptions: dict[str, str]

    def name_of(self, value: int) -> str:
        for name, number in self.values.items():
            if number == value:
                return name
        return f"{self.name}({value})"


@dataclass(frozen=True)
class ValueDef:
    """A typed slot: a packet field, an event argument or a command argument."""

    name: str
    type: str
    description: str = ""
    nullable: bool = False
    enum: str | None = None
    min: float | None = None
    max: float | None = None
    min_octets: int | None = None
    max_octets: int | None = None
    optional: bool = False  # may be left out at the end of a body or an argument list
    default: Any = None  # the value of an optional field that was left out
    unit: str = ""

    def check(self, value: Any) -> None:
        if value is None:
            if self.nullable:
                return
            raise ValueCheckError(f"{self.name}: value required")
        try:
            _TYPE_CHECKS[self.type](value)
        except ValueCheckError as exc:
            raise ValueCheckError(f"{self.name}: {exc}") from None
        if self.min is not None and value < self.min:
            raise ValueCheckError(f"{self.name}: {value} is below the minimum {self.min}")
        if self.max is not None and value > self.max:
            raise ValueCheckError(f"{self.name}: {value} is above the maximum {self.max}")
        if self.type == "str" and (self.min_octets is not None or self.max_octets is not None):
            octets = len(value.encode("utf-8", "surrogatepass"))
            if self.min_octets is not None and octets < self.min_octets:
                raise ValueCheckError(f"{self.name}: {octets} octets, at least {self.min_octets} needed")
            if self.max_octets is not None and octets > self.max_octets:
                raise ValueCheckError(f"{self.name}: {octets} octets, at most {self.max_octets} allowed")


@dataclass(frozen=True)
class PacketKind:
    name: str
    apid: int
    is_tc: bool
    description: str
    fields: tuple[ValueDef, ...]
    secured: bool  # carries the SDLS security header and MAC (see sdls)

    @property
    def required_fields(self) -> int:
        return sum(1 for f in self.fields if not f.optional)


@dataclass(frozen=True)
class ChannelDef:
    id: int
    name: str
    type: str
    unit: str
    description: str
    limits: dict[str, float] = field(default_factory=dict)
    enum: str | None = None  # an integer channel whose values are this enum's

    def limit_state(self, value: Any) -> str:
        """'red', 'yellow' or 'nominal' for a value of this channel."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "nominal"
        lim = self.limits
        if value > lim.get("red_high", float("inf")) or value < lim.get("red_low", float("-inf")):
            return "red"
        if value > lim.get("yellow_high", float("inf")) or value < lim.get("yellow_low", float("-inf")):
            return "yellow"
        return "nominal"


@dataclass(frozen=True)
class EventDef:
    id: int
    name: str
    severity: str
    format: str
    args: tuple[ValueDef, ...]
    throttle: int | None  # most reports per second; None = never throttled
    rejection: bool  # reports rejected uplink input: sent only within the rejection budget


@dataclass(frozen=True)
class CommandDef:
    opcode: int
    name: str
    hazardous: bool
    description: str
    args: tuple[ValueDef, ...]
    recovery: bool  # only a recovery key may send it, and a recovery key may send nothing else

    @property
    def required_args(self) -> int:
        return sum(1 for a in self.args if not a.optional)

    def check_args(self, values: list[Any]) -> dict[str, Any]:
        """Validate positional argument values (optional ones may be left off the end); return
        them all by name, defaults filled in. Raises ValueCheckError."""
        if not self.required_args <= len(values) <= len(self.args):
            count = (f"{len(self.args)}" if self.required_args == len(self.args)
                     else f"{self.required_args} to {len(self.args)}")
            raise ValueCheckError(f"{self.name} takes {count} arguments, got {len(values)}")
        for arg, value in zip(self.args, values):
            arg.check(value)
        named = {arg.name: arg.default for arg in self.args}
        named.update((arg.name, value) for arg, value in zip(self.args, values))
        return named

    def order_args(self, named: dict[str, Any]) -> list[Any]:
        """Named arguments from a client, in wire order, validated; optional ones that were not
        given, or are at their default, are left off the end. Raises ValueCheckError."""
        expected = [arg.name for arg in self.args]
        unknown = sorted(set(named) - set(expected))
        missing = [arg.name for arg in self.args if not arg.optional and arg.name not in named]
        if unknown or missing:
            raise ValueCheckError(f"{self.name}: unknown arguments {unknown}, missing {missing}")
        values = [named.get(arg.name, arg.default) for arg in self.args]
        self.check_args(values)
        while len(values) > self.required_args and values[-1] == self.args[len(values) - 1].default:
            values.pop()
        return values


def _value_def(raw: dict[str, Any], where: str, allowed_types: tuple[str, ...]) -> ValueDef:
    try:
        value = ValueDef(**raw)
    except TypeError as exc:
        raise DictionaryError(f"{where}: {exc}") from None
    if value.type not in allowed_types:
        raise DictionaryError(f"{where}: type {value.type!r} not one of {allowed_types}")
    return value


def _command_key(raw: dict[str, Any]) -> bool:
    key = raw.get("key", "operations")
    if key not in ("operations", "recovery"):
        raise DictionaryError(f"command {raw['name']}: key must be operations or recovery, not {key!r}")
    return key == "recovery"


def _unique(items: list[Any], key: str, what: str) -> None:
    seen: set[Any] = set()
    for item in items:
        value = getattr(item, key)
        if value in seen:
            raise DictionaryError(f"duplicate {what} {key} {value!r}")
        seen.add(value)


@dataclass(frozen=True)
class SecurityDefaults:
    """Link security parameters the ground must know about; the node may be configured otherwise."""

    arsn_window: int  # an ARSN is accepted only within (last, last + arsn_window]
    rejection_budget_octets_per_s: int  # downlink spent on reports about rejected uplink input
    rejection_burst_octets: int
    rejection_summary_period_s: int


@dataclass(frozen=True)
class ResultFormat:
    """How a job's result is encoded for the downlink: compression of one msgpack map."""

    description: str
    compression: str
    fields: tuple[ValueDef, ...]


@dataclass(frozen=True)
class ModeTable:
    """The executive's modes: which changes are allowed, and where a start leads.

    after_reboot maps the mode persisted when the node last stopped (or died) to the mode a
    start enters from BOOT; first_start is used when nothing was persisted. BOOT itself is never
    persisted (a start interrupted in BOOT starts again from the mode before it). A node that
    died in SAFE starts in SAFE: a SAFE entered for a fault is left by command only.
    """

    modes: tuple[str, ...]
    transitions: frozenset[tuple[str, str]]
    after_reboot: dict[str, str]
    first_start: str

    def allowed(self, current: str, target: str) -> bool:
        return (current, target) in self.transitions


class Dictionary:
    """Parsed and cross-checked dictionary.json."""

    def __init__(self, raw: dict[str, Any]):
        self.name: str = raw["name"]
        self.version: str = raw["version"]
        wire = raw["wire"]
        self.max_packet_octets: int = wire["max_packet_octets"]
        self.segment_octets: int = wire["segment_octets"]
        self.security = SecurityDefaults(**raw["security"])
        modes = raw["modes"]
        self.modes = ModeTable(tuple(v["name"] for v in raw["enums"]["MODE"]),
                               frozenset(tuple(pair) for pair in modes["transitions"]), dict(modes["after_reboot"]),
                               modes["first_start"])
        self.enums = {
            name: EnumDef(name, {v["name"]: v["value"] for v in values}, {v["name"]: v["description"] for v in values})
            for name, values in raw["enums"].items()
        }
        self.packets = [
            PacketKind(
                p["name"], p["apid"], p["type"] == "TC", p["description"],
                tuple(_value_def(f, f"packet {p['name']}", FIELD_TYPES) for f in p["fields"]), p.get("secured", False),
            )
            for p in raw["packets"]
        ]
        self.channels = [
            ChannelDef(c["id"], c["name"], c["type"], c["unit"], c["description"], c.get("limits", {}), c.get("enum"))
            for c in raw["channels"]
        ]
        self.events = [
            EventDef(
                e["id"], e["name"], e["severity"], e["format"],
                tuple(_value_def(a, f"event {e['name']}", FIELD_TYPES) for a in e["args"]), e.get("throttle"),
                e.get("rejection", False),
            )
            for e in raw["events"]
        ]
        self.commands = [
            CommandDef(
                c["opcode"], c["name"], c["hazardous"], c["description"],
                tuple(_value_def(a, f"command {c['name']}", ARG_TYPES) for a in c["args"]),
                _command_key(c),
            )
            for c in raw["commands"]
        ]
        result = raw["result"]
        self.result = ResultFormat(result["description"], result["compression"],
                                   tuple(_value_def(f, "result", FIELD_TYPES) for f in result["fields"]))
        self._check()
        self.packet_by_name = {p.name: p for p in self.packets}
        self.tm_by_apid = {p.apid: p for p in self.packets if not p.is_tc}
        self.tc_by_apid = {p.apid: p for p in self.packets if p.is_tc}
        self.channel_by_name = {c.name: c for c in self.channels}
        self.channel_by_id = {c.id: c for c in self.channels}
        # The hot path checks unsigned channels inline by their largest value; other types by
        # their checker.
        self._channel_tops = {c.id: (1 << _UINT_BITS[c.type]) - 1 for c in self.channels if c.type in _UINT_BITS}
        self._channel_checks = {c.id: _TYPE_CHECKS[c.type] for c in self.channels if c.type not in _UINT_BITS}
        self.event_by_name = {e.name: e for e in self.events}
        self.event_by_id = {e.id: e for e in self.events}
        self.command_by_name = {c.name: c for c in self.commands}
        self.command_by_opcode = {c.opcode: c for c in self.commands}

    def _check(self) -> None:
        for kind in ("TM", "TC"):
            _unique([p for p in self.packets if p.is_tc == (kind == "TC")], "apid", f"{kind} packet")
        _unique(self.packets, "name", "packet")
        for packet in self.packets:
            if not 0 <= packet.apid <= MAX_APID:
                raise DictionaryError(f"packet {packet.name}: APID {packet.apid} outside 0..{MAX_APID}")
            if packet.is_tc and not packet.secured:
                raise DictionaryError(f"packet {packet.name}: every command packet must be secured")
            optional = [f.optional for f in packet.fields]
            if optional != sorted(optional):
                raise DictionaryError(f"packet {packet.name}: optional fields must come last")
        _unique(self.channels, "id", "channel")
        _unique(self.channels, "name", "channel")
        _unique(self.events, "id", "event")
        _unique(self.events, "name", "event")
        _unique(self.commands, "opcode", "command")
        _unique(self.commands, "name", "command")
        for channel in self.channels:
            if channel.type not in ARG_TYPES:
                raise DictionaryError(f"channel {channel.name}: type {channel.type!r} not one of {ARG_TYPES}")
            if channel.enum is not None and channel.enum not in self.enums:
                raise DictionaryError(f"channel {channel.name}: unknown enum {channel.enum!r}")
        for command in self.commands:
            optional = [a.optional for a in command.args]
            if optional != sorted(optional):
                raise DictionaryError(f"command {command.name}: optional arguments must come last")
            for arg in command.args:
                if arg.optional:
                    arg.check(arg.default)
        for event in self.events:
            if event.severity not in SEVERITIES:
                raise DictionaryError(f"event {event.name}: unknown severity {event.severity!r}")
            names = {a.name: "" for a in event.args}
            try:
                event.format.format(**names)
            except (KeyError, IndexError, ValueError) as exc:
                raise DictionaryError(f"event {event.name}: format does not match its args: {exc}") from None
        for where, values in (
            [(f"packet {p.name}", p.fields) for p in self.packets]
            + [(f"event {e.name}", e.args) for e in self.events]
            + [(f"command {c.name}", c.args) for c in self.commands]
        ):
            for value in values:
                if value.enum is not None and value.enum not in self.enums:
                    raise DictionaryError(f"{where}: unknown enum {value.enum!r}")
        self._check_modes()
        if self.segment_octets + 64 > self.max_packet_octets:
            raise DictionaryError("segment_octets leaves no room for headers within max_packet_octets")

    def _check_modes(self) -> None:
        table = self.modes
        named = set(table.modes)
        for pair in table.transitions:
            if len(pair) != 2 or not set(pair) <= named or pair[0] == pair[1]:
                raise DictionaryError(f"mode transition {list(pair)} must join two different modes of {sorted(named)}")
        if set(table.after_reboot) != named - {"BOOT"}:
            raise DictionaryError("modes after_reboot must name the start mode for every mode but BOOT")
        for target in [*table.after_reboot.values(), table.first_start]:
            if not table.allowed("BOOT", target):
                raise DictionaryError(f"a start cannot lead to {target}: no transition BOOT -> {target}")
        if any(target == "BOOT" for _, target in table.transitions):
            raise DictionaryError("no transition may lead back to BOOT")

    def packet(self, name: str) -> PacketKind:
        return self.packet_by_name[name]

    def enum_value(self, enum: str, name: str) -> int:
        return self.enums[enum].values[name]

    def check_channel_map(self, channels: dict[Any, Any]) -> None:
        # Hot path (every HK packet, see tests/bench/test_link_codec.py): inlined checks of the
        # unsigned channels, the most of them, instead of one call per channel.
        tops = self._channel_tops
        for channel_id, value in channels.items():
            top = tops.get(channel_id) if type(channel_id) is int else None
            if top is not None:
                if type(value) is int and 0 <= value <= top:
                    continue
                ok = False
            else:
                check = self._channel_checks.get(channel_id) if type(channel_id) is int else None
                if check is None:
                    raise ValueCheckError(f"unknown channel id {channel_id!r}")
                try:
                    check(value)
                    ok = True
                except ValueCheckError:
                    ok = False
            if not ok:
                channel = self.channel_by_id[channel_id]
                raise ValueCheckError(f"channel {channel.name}: expected {channel.type}, got {value!r}")

    def format_event(self, event: EventDef, args: list[Any]) -> str:
        named = {}
        for arg, value in zip(event.args, args):
            named[arg.name] = self.enums[arg.enum].name_of(value) if arg.enum and isinstance(value, int) else value
        return event.format.format(**named)


@lru_cache(maxsize=None)
def load_dictionary(path: Path = DICTIONARY_PATH) -> Dictionary:
    with open(path, encoding="utf-8") as handle:
        raw = json.load(handle)
    try:
        return Dictionary(raw)
    except (KeyError, TypeError) as exc:
        raise DictionaryError(f"{path}: malformed dictionary: {exc!r}") from None
