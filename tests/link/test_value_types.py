"""The dictionary's value types, each checked at its boundaries: unsigned and signed integers of
every width, and floats (finite, within range), for arguments, fields and channels alike."""
import copy
import json
import math

import pytest

from flight.link.codec import PacketCodec
from flight.link.dictionary import DICTIONARY_PATH, CommandDef, Dictionary, ValueCheckError, ValueDef
from ground.cli import _parse_arg

RAW = json.loads(DICTIONARY_PATH.read_text())
F32_MAX = 3.4028234663852886e38

BOUNDS = {
    "u8": (0, 255), "u16": (0, 65535), "u32": (0, 2**32 - 1), "u64": (0, 2**64 - 1),
    "i8": (-128, 127), "i16": (-32768, 32767), "i32": (-2**31, 2**31 - 1), "i64": (-2**63, 2**63 - 1),
}


@pytest.mark.parametrize("kind, low, high", [(k, lo, hi) for k, (lo, hi) in BOUNDS.items()])
def test_integers_hold_exactly_their_range(kind, low, high):
    value = ValueDef("x", kind)
    for ok in (low, high, (low + high) // 2):
        value.check(ok)
    for bad in (low - 1, high + 1, True, 1.0, "1", None):
        with pytest.raises(ValueCheckError):
            value.check(bad)


@pytest.mark.parametrize("kind, top", [("f32", F32_MAX), ("f64", 1.7976931348623157e308)])
def test_floats_are_finite_and_in_range(kind, top):
    value = ValueDef("x", kind)
    for ok in (0.0, -0.0, 1, -273.15, 1e-7, top, -top):
        value.check(ok)
    for bad in (math.nan, math.inf, -math.inf, True, "0.5", None):
        with pytest.raises(ValueCheckError):
            value.check(bad)
    if kind == "f32":
        with pytest.raises(ValueCheckError):
            value.check(3.5e38)


def test_float_argument_ranges_come_from_the_dictionary():
    top_p = ValueDef("top_p", "f32", min=0.0, max=1.0)
    top_p.check(0.95)
    with pytest.raises(ValueCheckError, match="above the maximum"):
        top_p.check(1.5)


@pytest.fixture(scope="module")
def typed_dictionary() -> Dictionary:
    raw = copy.deepcopy(RAW)
    raw["channels"] += [
        {"id": 900, "name": "TEST_TEMPERATURE", "type": "f32", "unit": "degC", "description": "t",
         "limits": {"red_low": -40, "yellow_high": 70, "red_high": 85}},
        {"id": 901, "name": "TEST_OFFSET", "type": "i16", "unit": "count", "description": "o"},
        {"id": 902, "name": "TEST_COST", "type": "f64", "unit": "USD", "description": "c"},
    ]
    return Dictionary(raw)


def test_signed_and_float_channels_round_trip_in_housekeeping(typed_dictionary):
    codec = PacketCodec(typed_dictionary)
    channels = {900: -12.5, 901: -300, 902: 3.2e-7, 1: 42}
    decoded = codec.decode_tm(codec.encode_tm("HK", {"channels": channels}, 0))
    assert decoded.fields["channels"] == channels
    for bad in ({900: math.nan}, {901: 40000}, {902: "cheap"}, {900: True}):
        with pytest.raises(ValueCheckError):
            typed_dictionary.check_channel_map(bad)


def test_limits_work_below_zero(typed_dictionary):
    temperature = typed_dictionary.channel_by_name["TEST_TEMPERATURE"]
    assert [temperature.limit_state(v) for v in (-50.0, -10.0, 75.5, 90)] == ["red", "nominal", "yellow", "red"]


def test_the_command_line_reads_signed_and_float_arguments():
    command = CommandDef(999, "TEST_SET", False, "", (ValueDef("offset", "i32"), ValueDef("gain", "f32")), False)
    assert _parse_arg(command, "offset=-7") == ("offset", -7)
    assert _parse_arg(command, "gain=0.25") == ("gain", 0.25)
    with pytest.raises(ValueError, match="gain: expected a number \\(f32\\), got 'fast'"):
        _parse_arg(command, "gain=fast")
