"""Two-Line Element sets: parse, validate, propagate with SGP4.

A TLE reaches the node by command (TLE_UPLOAD) over the radio, so every malformed input is
refused with a one-line TleError that names the line and field; nothing is passed to SGP4
before it has been checked.

Format (columns are 1-based, as in the sources):
  CelesTrak, "FAQs: Two-Line Element Set Format" (T.S. Kelso), and
  Vallado, Crawford, Hujsak & Kelso, "Revisiting Spacetrack Report #3", AIAA 2006-6753.
  Line 1: 1 line number, 3-7 catalogue number (Alpha-5 allowed), 8 classification,
  10-17 international designator, 19-20 epoch year, 21-32 epoch day of year (fractional),
  34-43 first derivative of mean motion, 45-52 second derivative (implied decimal point and
  exponent), 54-61 B* (same form), 63 ephemeris type, 65-68 element set number, 69 checksum.
  Line 2: 1 line number, 3-7 catalogue number, 9-16 inclination (deg), 18-25 RAAN (deg),
  27-33 eccentricity (implied leading decimal point), 35-42 argument of perigee (deg),
  44-51 mean anomaly (deg), 53-63 mean motion (rev/day), 64-68 revolution number, 69 checksum.
  Checksum: the sum of the digits of columns 1-68, each '-' counting 1, modulo 10.

Propagation: sgp4.api.Satrec (the `sgp4` package by Brandon Rhodes, a wrap of Vallado's C++
SGP4, WGS-72 constants as the TLEs are fitted with). Output is in the TEME frame (True Equator,
Mean Equinox of date), km and km/s. Times are UTC (TLE epochs are UTC); SGP4 strictly wants
UT1, but |UT1 - UTC| < 0.9 s, which moves a LEO satellite < 7 km along track: inside the
accuracy of a TLE itself (~1 km at epoch, growing a few km per day).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Union

import numpy as np
from sgp4.api import SGP4_ERRORS, WGS72, Satrec

TimeLike = Union[datetime, float, int]
"""A UTC instant: an aware datetime (naive ones are taken as UTC) or Unix seconds."""

_UNIX_EPOCH_JD = 2440587.5
_LINE_LEN = 69


class TleError(ValueError):
    """A bad TLE or a failed propagation; the message is one line, fit for an event."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def _show(text: str, limit: int = 24) -> str:
    """A short, one-line, printable rendering of untrusted input for an error message."""
    s = repr(text)
    return s if len(s) <= limit else s[: limit - 3] + "..."


# --- time -----------------------------------------------------------------------------------

def to_unix(t: TimeLike) -> float:
    """Unix seconds (UTC) of t."""
    if isinstance(t, datetime):
        if t.tzinfo is None:
            t = t.replace(tzinfo=timezone.utc)
        return t.timestamp()
    if isinstance(t, (int, float, np.integer, np.floating)) and not isinstance(t, bool):
        x = float(t)
        if not math.isfinite(x):
            raise TleError(f"time is not finite: {x}")
        return x
    raise TypeError(f"time must be a datetime or Unix seconds, not {type(t).__name__}")


def to_datetime(unix_s: float) -> datetime:
    """Aware UTC datetime of Unix seconds."""
    return datetime.fromtimestamp(unix_s, tz=timezone.utc)


def unix_to_jd(unix_s):
    """(jd, fr): Julian date split into a whole-ish part and a fraction, as sgp4 wants them.

    Works on floats and numpy arrays; splitting at midnight keeps ~µs precision.
    """
    days = np.floor(np.asarray(unix_s, dtype=float) / 86400.0)
    fr = (np.asarray(unix_s, dtype=float) - days * 86400.0) / 86400.0
    jd = _UNIX_EPOCH_JD + days
    if np.ndim(unix_s) == 0:
        return float(jd), float(fr)
    return jd, fr


# --- parsing --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Tle:
    """A validated TLE; line1/line2 are exactly 69 characters."""

    line1: str
    line2: str
    name: str = ""

    @property
    def catalog_number(self) -> str:
        return self.line1[2:7].strip()

    @property
    def epoch(self) -> datetime:
        """Epoch, UTC (years 57-99 are 19xx, 00-56 are 20xx)."""
        yy = int(self.line1[18:20])
        year = 1900 + yy if yy >= 57 else 2000 + yy
        day = float(self.line1[20:32])
        return datetime(year, 1, 1, tzinfo=timezone.utc) + timedelta(days=day - 1.0)

    @property
    def inclination_deg(self) -> float:
        return float(self.line2[8:16])

    @property
    def eccentricity(self) -> float:
        return float("." + self.line2[26:33])

    @property
    def mean_motion_rev_per_day(self) -> float:
        return float(self.line2[52:63])

    @property
    def period_s(self) -> float:
        return 86400.0 / self.mean_motion_rev_per_day

    def text(self) -> str:
        head = [self.name] if self.name else []
        return "\n".join(head + [self.line1, self.line2]) + "\n"


def checksum(line: str) -> int:
    """TLE checksum of columns 1-68: digits plus 1 for each '-', modulo 10."""
    total = 0
    for ch in line[:68]:
        if ch.isdigit():
            total += int(ch)
        elif ch == "-":
            total += 1
    return total % 10


_ALPHA5 = re.compile(r"^[0-9A-HJ-NP-Z][0-9]{4}$")
_IMPLIED_EXP = re.compile(r"^[ +-]?[0-9]{5}[+-][0-9]$")  # e.g. " 12345-3" = 0.12345e-3
_DECIMAL = re.compile(r"^[ +-]?[0-9]*\.[0-9]+$")
_PLAIN_DECIMAL = re.compile(r"^ *[0-9]+(\.[0-9]*)?$")


def _field(line: str, n: int, a: int, b: int) -> str:
    return line[a - 1 : b]


def _number(line: str, n: int, a: int, b: int, name: str, lo: float, hi: float, hi_open: bool = False) -> float:
    text = _field(line, n, a, b)
    if not _PLAIN_DECIMAL.match(text):
        raise TleError(f"TLE line {n}: {name} (columns {a}-{b}) is not a number: {_show(text)}")
    x = float(text)
    if not (lo <= x and (x < hi if hi_open else x <= hi)):
        raise TleError(f"TLE line {n}: {name} {x} is out of range [{lo}, {hi}{')' if hi_open else ']'}")
    return x


def _check_line(line: str, n: int) -> str:
    line = line.rstrip(" \r\t")
    if not line:
        raise TleError(f"TLE line {n} is empty")
    if any(not (32 <= ord(c) < 127) for c in line):
        raise TleError(f"TLE line {n} has a non-printable or non-ASCII character")
    if len(line) != _LINE_LEN:
        raise TleError(f"TLE line {n} has {len(line)} characters, not {_LINE_LEN}")
    if line[0] != str(n) or line[1] != " ":
        raise TleError(f"TLE line {n} does not start with '{n} ': {_show(line[:8])}")
    if not line[68].isdigit():
        raise TleError(f"TLE line {n}: checksum column 69 is not a digit: {_show(line[68])}")
    want = checksum(line)
    if int(line[68]) != want:
        raise TleError(f"TLE line {n}: checksum is {line[68]}, computed {want}")
    return line


def _check_line1(l1: str) -> None:
    if not _ALPHA5.match(_field(l1, 1, 3, 7)):
        raise TleError(f"TLE line 1: catalogue number (columns 3-7) is invalid: {_show(_field(l1, 1, 3, 7))}")
    if l1[7] not in "UCS ":
        raise TleError(f"TLE line 1: classification (column 8) is {_show(l1[7])}, not U, C or S")
    epoch_year = _field(l1, 1, 19, 20)
    if not epoch_year.isdigit():
        raise TleError(f"TLE line 1: epoch year (columns 19-20) is not two digits: {_show(epoch_year)}")
    yy = int(epoch_year)
    year = 1900 + yy if yy >= 57 else 2000 + yy
    days_in_year = 366 if (year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)) else 365
    _number(l1, 1, 21, 32, "epoch day of year", 1.0, days_in_year + 1.0, hi_open=True)
    ndot = _field(l1, 1, 34, 43)
    if not _DECIMAL.match(ndot):
        raise TleError(f"TLE line 1: first derivative of mean motion (columns 34-43) is invalid: {_show(ndot)}")
    for a, b, name in ((45, 52, "second derivative of mean motion"), (54, 61, "B*")):
        text = _field(l1, 1, a, b)
        if not _IMPLIED_EXP.match(text):
            raise TleError(f"TLE line 1: {name} (columns {a}-{b}) is invalid: {_show(text)}")
    if l1[62] not in "0 ":
        raise TleError(f"TLE line 1: ephemeris type (column 63) is {_show(l1[62])}, not 0")
    if l1[32] != " " or l1[43] != " " or l1[52] != " " or l1[61] != " ":
        raise TleError("TLE line 1: a field separator (column 33, 44, 53 or 62) is not a space")


def _check_line2(l2: str) -> None:
    _number(l2, 2, 9, 16, "inclination (deg)", 0.0, 180.0)
    _number(l2, 2, 18, 25, "right ascension of the ascending node (deg)", 0.0, 360.0)
    ecc = _field(l2, 2, 27, 33)
    if not ecc.isdigit():
        raise TleError(f"TLE line 2: eccentricity (columns 27-33) is not 7 digits: {_show(ecc)}")
    _number(l2, 2, 35, 42, "argument of perigee (deg)", 0.0, 360.0)
    _number(l2, 2, 44, 51, "mean anomaly (deg)", 0.0, 360.0)
    # 0.05 rev/day: beyond GEO (~1.0); 20 rev/day: below any orbit that survives a revolution
    _number(l2, 2, 53, 63, "mean motion (rev/day)", 0.05, 20.0)
    rev = _field(l2, 2, 64, 68)
    if not (rev.strip() == "" or rev.strip().isdigit()):
        raise TleError(f"TLE line 2: revolution number (columns 64-68) is invalid: {_show(rev)}")
    for col in (8, 17, 26, 34, 43, 52):
        if l2[col - 1] != " ":
            raise TleError(f"TLE line 2: column {col} is not a space")


def parse_tle(text: Union[str, bytes]) -> Tle:
    """Parse a TLE: two lines, or three with a name line first (a leading '0 ' is dropped).

    Raises TleError with one line of explanation for anything malformed, including an
    element set SGP4 cannot initialise or propagate at its epoch.
    """
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("ascii")
        except UnicodeDecodeError:
            raise TleError("TLE is not ASCII text") from None
    if not isinstance(text, str):
        raise TleError(f"TLE must be text, not {type(text).__name__}")
    lines = [ln for ln in text.replace("\r\n", "\n").replace("\r", "\n").split("\n") if ln.strip()]
    if len(lines) == 3:
        name = lines[0].strip()
        if name.startswith("0 "):
            name = name[2:].strip()
        if any(not (32 <= ord(c) < 127) for c in name) or len(name) > _LINE_LEN:
            raise TleError("TLE name line is not printable ASCII of at most 69 characters")
        l1, l2 = lines[1], lines[2]
    elif len(lines) == 2:
        name, (l1, l2) = "", lines
    else:
        raise TleError(f"TLE must have 2 lines (or 3 with a name), got {len(lines)}")
    l1 = _check_line(l1, 1)
    l2 = _check_line(l2, 2)
    _check_line1(l1)
    _check_line2(l2)
    if l1[2:7] != l2[2:7]:
        raise TleError(f"TLE lines 1 and 2 have different catalogue numbers: {l1[2:7]} and {l2[2:7]}")
    tle = Tle(l1, l2, name)
    Satellite(tle)  # initialises SGP4 and propagates at epoch: refuses what it cannot fly
    return tle


# --- propagation ----------------------------------------------------------------------------

class Satellite:
    """SGP4 propagation of one TLE; positions in km, velocities in km/s, frame TEME."""

    def __init__(self, tle: Union[Tle, str, bytes]):
        self.tle = tle if isinstance(tle, Tle) else parse_tle(tle)
        self._sat = Satrec.twoline2rv(self.tle.line1, self.tle.line2, WGS72)
        if self._sat.error:
            raise TleError(f"TLE refused by SGP4: {SGP4_ERRORS.get(self._sat.error, self._sat.error)}")
        self.epoch_unix = self.tle.epoch.timestamp()
        self.state(self.epoch_unix)

    def state(self, t: TimeLike) -> tuple[np.ndarray, np.ndarray]:
        """(r, v) in TEME at UTC time t: km, km/s. TleError if SGP4 fails (e.g. decayed)."""
        unix = to_unix(t)
        jd, fr = unix_to_jd(unix)
        err, r, v = self._sat.sgp4(jd, fr)
        if err:
            raise TleError(
                f"SGP4 failed at {to_datetime(unix).isoformat()} "
                f"({(unix - self.epoch_unix) / 86400.0:+.2f} d from epoch): "
                f"{SGP4_ERRORS.get(err, err)}"
            )
        return np.array(r), np.array(v)

    def position(self, t: TimeLike) -> np.ndarray:
        """r in TEME at UTC time t, km."""
        return self.state(t)[0]

    def positions(self, unix_s: np.ndarray) -> np.ndarray:
        """r in TEME at many Unix times, shape (N, 3), km. TleError if any step fails."""
        unix_s = np.asarray(unix_s, dtype=float)
        jd, fr = unix_to_jd(unix_s)
        err, r, _ = self._sat.sgp4_array(np.atleast_1d(jd), np.atleast_1d(fr))
        bad = np.nonzero(err)[0]
        if bad.size:
            i = int(bad[0])
            code = int(err[i])
            raise TleError(
                f"SGP4 failed at {to_datetime(float(np.atleast_1d(unix_s)[i])).isoformat()}: "
                f"{SGP4_ERRORS.get(code, code)}"
            )
        return r
