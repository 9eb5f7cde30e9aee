"""`hil passes` and `hil eclipses`: contact windows and eclipses planned from a TLE.

Bad input (an unreadable or malformed TLE, a bad station, time or duration) is one line on
stderr and exit code 2, never a traceback.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from datetime import datetime, timezone
from typing import Any

from flight.link.cli_support import EXIT_USAGE
from flight.orbit import Satellite, TleError, find_eclipses, parse_tle
from hil.env.stations import Station, contact_windows

MAX_HOURS = 14 * 24.0  # a TLE is worth little beyond a couple of weeks from its epoch


def _station(text: str) -> tuple[float, float, float]:
    parts = text.split(",")
    try:
        lat, lon, alt = (float(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LAT,LON,ALT_M (degrees, degrees, metres), got {text!r}") from None
    return lat, lon, alt


def _start(text: str) -> float:
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an ISO-8601 time such as 2025-02-09T12:00:00Z, got {text!r}") from None
    return (t if t.tzinfo else t.replace(tzinfo=timezone.utc)).timestamp()


def _hours(text: str) -> float:
    try:
        h = float(text)
    except ValueError:
        h = math.nan
    if not 0.0 < h <= MAX_HOURS:  # also refuses NaN
        raise argparse.ArgumentTypeError(f"expected hours in (0, {MAX_HOURS:g}], got {text!r}")
    return h


def _mask(text: str) -> float:
    try:
        m = float(text)
    except ValueError:
        m = math.nan
    if not -5.0 <= m < 90.0:
        raise argparse.ArgumentTypeError(f"expected a mask in [-5, 90) degrees, got {text!r}")
    return m


def add_planning_commands(sub: Any) -> None:
    """Add `passes` and `eclipses` to the `hil` command's subparsers."""
    passes = sub.add_parser("passes", help="contact windows of a TLE's satellite with a ground station")
    passes.add_argument("--tle", required=True, metavar="FILE", help="TLE file (2 lines, or 3 with a name)")
    passes.add_argument("--station", required=True, type=_station, metavar="LAT,LON,ALT_M",
                        help="geodetic latitude and longitude (deg) and altitude (m)")
    passes.add_argument("--mask", type=_mask, default=5.0, metavar="DEG", help="elevation mask (default 5)")
    eclipses = sub.add_parser("eclipses", help="eclipses (penumbra and umbra) of a TLE's satellite")
    eclipses.add_argument("--tle", required=True, metavar="FILE", help="TLE file (2 lines, or 3 with a name)")
    for p in (passes, eclipses):
        p.add_argument("--start", type=_start, metavar="ISO", help="UTC start (default: the TLE's epoch)")
        p.add_argument("--hours", type=_hours, default=24.0, metavar="H", help="span to search (default 24)")
        p.add_argument("--json", action="store_true", help="print a JSON list of objects")
    passes.set_defaults(func=_passes)
    eclipses.set_defaults(func=_eclipses)


def _satellite(args: argparse.Namespace) -> Satellite:
    try:
        with open(args.tle, "rb") as f:
            return Satellite(parse_tle(f.read(4096)))
    except OSError as exc:
        raise TleError(f"cannot read {args.tle}: {exc.strerror or exc}") from None


def _fail(command: str, message: str) -> int:
    print(f"hil {command}: error: {' '.join(message.split())}", file=sys.stderr)
    return EXIT_USAGE


def _passes(args: argparse.Namespace) -> int:
    try:
        sat = _satellite(args)
        station = Station("station", *args.station, mask_deg=args.mask)
        start = sat.epoch_unix if args.start is None else args.start
        windows = contact_windows(sat, station, start, start + args.hours * 3600.0)
    except (TleError, ValueError) as exc:  # TleError covers SGP4 failing far from the epoch
        return _fail("passes", str(exc))
    rows = [{k: v for k, v in w.as_dict().items() if k != "station"} for w in windows]
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        for r, w in zip(rows, windows):
            print(f"rise {r['rise']}  culmination {r['culmination']}  set {r['set']}  "
                  f"max {w.max_elevation_deg:5.1f} deg  {w.duration_s / 60:5.1f} min")
    return 0


def _eclipses(args: argparse.Namespace) -> int:
    try:
        sat = _satellite(args)
        start = sat.epoch_unix if args.start is None else args.start
        events = find_eclipses(sat, start, args.hours * 3600.0)
    except (TleError, ValueError) as exc:
        return _fail("eclipses", str(exc))
    rows = [e.as_dict() for e in events]
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        for r, e in zip(rows, events):
            print(f"penumbra {r['penumbra_entry']}  umbra {r['umbra_entry'] or '-'} to {r['umbra_exit'] or '-'}  "
                  f"penumbra exit {r['penumbra_exit']}  umbra {e.umbra_s / 60:4.1f} min")
    return 0
