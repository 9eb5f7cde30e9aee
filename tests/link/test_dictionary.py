"""The ICD dictionary: consistent, F Prime style names, argument checking, and docs/ICD.md fresh."""
import copy
import json
from pathlib import Path

import pytest

from flight.link.codec import PacketCodec
from flight.link.dictionary import DICTIONARY_PATH, Dictionary, DictionaryError, ValueCheckError, load_dictionary
from flight.link.icd_markdown import render_icd

RAW = json.loads(DICTIONARY_PATH.read_text())
D = load_dictionary()
ICD = Path(__file__).resolve().parents[2] / "docs" / "ICD.md"
PREFIXES = ("LINK_", "CMD_", "DL_", "JOB_", "STORE_", "MODE_", "POWER_", "ENGINE_", "EPS_", "THERM_", "SCHED_", "EXEC_", "ACCT_",
            "SENSOR_", "FDIR_", "TLE_", "ORBIT_", "SCRUB_", "TEST_", "REC_",
            "RECORDER_")


def test_icd_doc_is_generated_from_the_dictionary():
    assert ICD.read_text(encoding="utf-8") == render_icd(), "docs/ICD.md is stale: run scripts/gen_icd_doc.py"


def test_doc_describes_every_dictionary_entry():
    text = render_icd()
    for name in [p.name for p in D.packets] + [c.name for c in D.commands] + [c.name for c in D.channels] + [
            e.name for e in D.events]:
        assert f"| {name} |" in text or f"### {name} " in text


def test_names_carry_a_component_prefix():
    for name in [c.name for c in D.commands] + [c.name for c in D.channels] + [e.name for e in D.events]:
        assert name.startswith(PREFIXES), name


def test_required_telemetry_kinds_exist():
    tm = {p.name for p in D.packets if not p.is_tc}
    assert {"HK", "EVENT", "CMD_RESPONSE", "JOB_TOKENS", "JOB_RESULT_SEGMENT"} <= tm


def test_cfs_command_counters_are_channels():
    assert {"CMD_ACCEPTED", "CMD_REJECTED", "CMD_EXECUTED", "CMD_FAILED"} <= set(D.channel_by_name)


def test_a_segment_packet_fits_the_largest_packet():
    full = PacketCodec(D).encode_tm("JOB_RESULT_SEGMENT", {
        "job_id": 2**32 - 1, "segment": 2**32 - 1, "segment_count": 2**32 - 1, "result_octets": 2**32 - 1,
        "result_crc32": 2**32 - 1, "spi": 2**16 - 1, "result_mac": b"m" * 16, "data": b"x" * D.segment_octets}, 0)
    assert len(full) <= D.max_packet_octets


@pytest.mark.parametrize("mutate, message", [
    (lambda r: r["commands"].append(dict(r["commands"][0], name="CMD_OTHER")), "duplicate command opcode"),
    (lambda r: r["channels"].append(dict(r["channels"][0], id=99)), "duplicate channel name"),
    (lambda r: r["events"][0].update(format="{nope}"), "format does not match"),
    (lambda r: r["events"][0].update(severity="LOUD"), "unknown severity"),
    (lambda r: r["packets"][0].update(apid=0x7FF), "APID"),
    (lambda r: r["packets"][1].update(apid=r["packets"][0]["apid"]), "duplicate TM packet apid"),
    (lambda r: r["commands"][2]["args"][0].update(type="float"), "type 'float'"),
    (lambda r: r["packets"][2]["fields"][3].update(enum="NOPE"), "unknown enum"),
    (lambda r: next(p for p in r["packets"] if p["name"] == "DL_SACK").pop("secured"), "must be secured"),
    (lambda r: next(p for p in r["packets"] if p["name"] == "COMMAND")["fields"][0].update(optional=True),
     "optional fields must come last"),
    (lambda r: r["commands"][0].update(key="root"), "key must be operations or recovery"),
])
def test_inconsistent_dictionaries_are_refused(mutate, message):
    raw = copy.deepcopy(RAW)
    mutate(raw)
    with pytest.raises(DictionaryError, match=message):
        Dictionary(raw)


def test_argument_checks():
    submit = D.command_by_name["JOB_SUBMIT"]
    assert submit.order_args({"prompt": "p", "job_id": 1, "max_tokens": 2}) == [1, 2, "p"]
    bad = [
        {"prompt": "p", "job_id": 0, "max_tokens": 2},  # below min
        {"prompt": "p", "job_id": 1, "max_tokens": 4097},  # above max
        {"prompt": "", "job_id": 1, "max_tokens": 2},  # too short
        {"prompt": "é" * 901, "job_id": 1, "max_tokens": 2},  # 1802 octets in UTF-8
        {"prompt": "p", "job_id": True, "max_tokens": 2},  # a bool is not a number
        {"prompt": 3, "job_id": 1, "max_tokens": 2},
        {"prompt": "p", "job_id": 1},
        {"prompt": "p", "job_id": 1, "max_tokens": 2, "extra": 1},
    ]
    for args in bad:
        with pytest.raises(ValueCheckError):
            submit.order_args(args)


def test_limit_states():
    crc = D.channel_by_name["LINK_CRC_ERRORS"]
    disk = D.channel_by_name["STORE_DISK_FREE"]
    assert [crc.limit_state(v) for v in (0, 10, 11, 100, 101)] == ["nominal", "nominal", "yellow", "yellow", "red"]
    assert [disk.limit_state(v) for v in (10**9, 4 * 10**8, 10**7)] == ["nominal", "yellow", "red"]
