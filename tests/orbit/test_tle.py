"""TLE parsing and validation (input that arrives by radio) and SGP4 propagation."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flight.orbit.tle import Satellite, Tle, TleError, checksum, parse_tle, to_unix
from tests.orbit.tles import ISS, make_tle, with_checksum

NAME, L1, L2 = ISS.strip().split("\n")


def one_line_error(text, match: str | None = None) -> str:
    with pytest.raises(TleError) as info:
        parse_tle(text)
    msg = str(info.value)
    assert "\n" not in msg and "\r" not in msg and 0 < len(msg) < 200, msg
    if match:
        assert match in msg, msg
    return msg


def test_parses_three_and_two_line_forms():
    t3 = parse_tle(ISS)
    assert t3.name == "ISS (ZARYA)" and t3.line1 == L1 and t3.line2 == L2
    assert t3.catalog_number == "25544"
    t2 = parse_tle(f"{L1}\n{L2}")
    assert t2.name == "" and t2.line1 == L1
    assert parse_tle(ISS.replace("\n", "\r\n").encode()).line2 == L2
    assert parse_tle(f"0 ISS (ZARYA)\n{L1}   \n{L2}\n\n").name == "ISS (ZARYA)"
    assert parse_tle(t3.text()) == t3


def test_fields_and_epoch():
    t = parse_tle(ISS)
    # 2019, day 343.69339541: 9 December, 0.69339541 d = 16:38:29.363
    assert abs(t.epoch - datetime(2019, 12, 9, 16, 38, 29, 363424, tzinfo=timezone.utc)) < timedelta(microseconds=5)
    assert t.inclination_deg == 51.6439
    assert t.eccentricity == pytest.approx(0.0007417)
    assert t.period_s == pytest.approx(86400 / 15.50103472)
    assert parse_tle(make_tle(datetime(1999, 3, 1, tzinfo=timezone.utc), 51.6, 10, 15.5)).epoch.year == 1999


def test_checksum_rule():
    assert checksum(L1) == int(L1[-1]) and checksum(L2) == int(L2[-1])
    assert checksum("1 -") == 2  # '1' counts 1, '-' counts 1


@pytest.mark.parametrize(
    "text, match",
    [
        (ISS.replace(L1, L1[:-1] + str((int(L1[-1]) + 1) % 10)), "line 1: checksum is"),
        (ISS.replace(L2, L2[:-1] + str((int(L2[-1]) + 3) % 10)), "line 2: checksum is"),
        (ISS.replace(L1, L1[:40]), "has 40 characters"),
        (ISS.replace(L2, L2 + "7"), "has 70 characters"),
        (f"{L1}", "got 1"),
        (f"A\nB\n{L1}\n{L2}", "got 4"),
        ("", "got 0"),
        ("hello\nworld", "line 1 has 5 characters"),
        (f"{L2}\n{L1}", "does not start with '1 '"),
        ("\x00\x01garbage\n" + L2, "non-printable"),
        (b"\xff\xfe" + ISS.encode(), "not ASCII"),
        (12345, "must be text"),
    ],
)
def test_bad_input_is_one_line_error(text, match):
    one_line_error(text, match)


def _fields(l1=L1, l2=L2):
    return f"{with_checksum(l1[:68])}\n{with_checksum(l2[:68])}"


@pytest.mark.parametrize(
    "l1, l2, match",
    [
        (L1[:20] + "367.00000000" + L1[32:], L2, "epoch day of year"),  # 2019 has 365 days
        (L1[:20] + "000.50000000" + L1[32:], L2, "epoch day of year"),
        (L1[:18] + "x9" + L1[20:], L2, "epoch year"),
        (L1[:2] + "2554!" + L1[7:], L2, "catalogue number"),
        (L1, L2[:2] + "25545" + L2[7:], "different catalogue numbers"),
        (L1[:7] + "X" + L1[8:], L2, "classification"),
        (L1[:53] + " 3879x-4" + L1[61:], L2, "B*"),
        (L1, L2[:8] + "190.0000" + L2[16:], "inclination"),
        (L1, L2[:17] + "361.0000" + L2[25:], "right ascension"),
        (L1, L2[:26] + "00074a7" + L2[33:], "eccentricity"),
        (L1, L2[:52] + " 0.00000000" + L2[63:], "mean motion"),
        (L1, L2[:52] + "abcdefghijk" + L2[63:], "mean motion (rev/day) (columns 53-63) is not a number"),
    ],
)
def test_bad_fields_are_one_line_errors(l1, l2, match):
    one_line_error(_fields(l1, l2), match)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300)))
def test_garbage_is_refused_with_one_line(text):
    one_line_error(text)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2 * 69 - 1), st.characters(min_codepoint=32, max_codepoint=126))
def test_any_one_character_change_parses_or_is_refused_cleanly(pos, ch):
    lines = [L1, L2]
    n, col = divmod(pos, 69)
    lines[n] = lines[n][:col] + ch + lines[n][col + 1 :]
    try:
        tle = parse_tle("\n".join(lines))
    except TleError as e:
        assert "\n" not in str(e)
    else:
        assert isinstance(tle, Tle)


def test_propagation_iss():
    sat = Satellite(ISS)
    r, v = sat.state(sat.tle.epoch)
    assert 6700 < np.linalg.norm(r) < 6850  # ~400 km altitude
    assert 7.6 < np.linalg.norm(v) < 7.75
    # datetime, naive datetime (UTC) and Unix seconds agree
    t = datetime(2019, 12, 10, 3, 0, 0, tzinfo=timezone.utc)
    r1 = sat.position(t)
    assert np.allclose(r1, sat.position(t.replace(tzinfo=None)))
    assert np.allclose(r1, sat.position(to_unix(t)))
    rs = sat.positions(np.array([to_unix(t), to_unix(t) + 60.0]))
    assert np.allclose(rs[0], r1, atol=1e-6)
    # one orbit later it is back near the same place (perturbations move it some tens of km)
    assert np.linalg.norm(sat.position(to_unix(t) + sat.tle.period_s) - r1) < 100


def test_propagation_failure_is_one_line():
    base = parse_tle(make_tle(datetime(2025, 1, 1, tzinfo=timezone.utc), 51.6, 0, 16.2))
    heavy = with_checksum(base.line1[:53] + " 50000-0" + base.line1[61:68])  # B* = 0.5: decays fast
    sat = Satellite(f"{heavy}\n{base.line2}")
    with pytest.raises(TleError) as info:
        sat.state(sat.epoch_unix + 30 * 86400)
    assert "SGP4 failed" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(TleError):
        sat.positions(np.array([sat.epoch_unix, sat.epoch_unix + 30 * 86400]))
    with pytest.raises(TleError):
        sat.state(float("nan"))
