"""`hil`: the hardware-in-the-loop bench's command line.

    hil link --flight-port DEV --ground-port DEV [--baud N] [--stats-interval S]
    hil link --pty [--baud N] [--stats-interval S]

`hil link` joins the flight and ground serial lines through a LinkRelay (hil/link.py), passing
bytes both ways at the baud's byte rate, until SIGINT or SIGTERM (exit 0). --pty opens a pty pair
for each side given no device, so flight and ground can run on one machine; it prints each side's
path first, one line each (`flight: /dev/pts/5`, `ground: /dev/pts/6`).

Errors are one line on stderr and a non-zero exit, never a traceback: 2 for bad input (options, a
device that cannot be opened), 1 if the link fails while running.
"""
from __future__ import annotations

import argparse
import math
import signal
import sys
import time

from flight.link.cli_support import EXIT_FAILURE, EXIT_USAGE, OneLineParser, baud_rate
from hil.link import LinkRelay, OpenError

STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
HEALTH_CHECK_S = 0.5  # how soon a failed link ends the command when no statistics are due sooner
MAX_STATS_INTERVAL_S = 24 * 3600.0


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= MAX_STATS_INTERVAL_S:  # also refuses NaN
        raise argparse.ArgumentTypeError(f"expected seconds from 0 (off) to {MAX_STATS_INTERVAL_S:.15g}, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="hil", description="tokensat hardware-in-the-loop bench")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    link = sub.add_parser("link", help="relay the serial link between flight and ground at the baud's byte rate")
    link.add_argument("--flight-port", help="flight side's serial device")
    link.add_argument("--ground-port", help="ground side's serial device")
    link.add_argument("--pty", action="store_true", help="open a pty pair for each side given no device and print its path")
    link.add_argument("--baud", type=baud_rate, default=115200, help="line rate, 8N1: baud/10 bytes per second each way")
    link.add_argument("--stats-interval", type=_interval, default=0.0, metavar="S",
                      help="print bytes passed each way and the measured rate every S seconds (default 0: off)")
    link.set_defaults(func=_link)
    return parser


def _link(args: argparse.Namespace) -> int:
    ports = (args.flight_port, args.ground_port)
    if args.pty and all(ports):
        return _usage_error("--pty has nothing to open: both ports are given")
    if not args.pty and not all(ports):
        return _usage_error("give --flight-port and --ground-port, or --pty for the sides without one")
    # Every thread the relay starts inherits this mask, so the stop signals wait for sigtimedwait
    # below, on the main thread, instead of interrupting whatever happens to be running.
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        try:
            relay = LinkRelay(*ports, baud=args.baud)
        except OpenError as exc:
            print(f"hil link: {exc}", file=sys.stderr)
            return EXIT_USAGE
        with relay:
            print(f"flight: {relay.flight_path}\nground: {relay.ground_path}", flush=True)
            return _run(relay, args.stats_interval)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _usage_error(message: str) -> int:
    print(f"hil link: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _run(relay: LinkRelay, stats_interval: float) -> int:
    last = (time.monotonic(), relay.uplink.bytes_passed, relay.downlink.bytes_passed)
    while True:
        timeout = HEALTH_CHECK_S
        if stats_interval:
            timeout = min(timeout, max(0.0, last[0] + stats_interval - time.monotonic()))
        if signal.sigtimedwait(STOP_SIGNALS, timeout) is not None:
            return 0
        if relay.error is not None:
            print(f"hil link: {relay.error}", file=sys.stderr)
            return EXIT_FAILURE
        now = time.monotonic()
        if stats_interval and now >= last[0] + stats_interval:
            last = _print_stats(relay, last, now)


def _print_stats(relay: LinkRelay, last: tuple[float, int, int], now: float) -> tuple[float, int, int]:
    elapsed = now - last[0]
    parts = []
    for direction, before in ((relay.uplink, last[1]), (relay.downlink, last[2])):
        part = f"{direction.name} {direction.bytes_passed} B, {(direction.bytes_passed - before) / elapsed:.0f} B/s"
        if direction.bytes_dropped:
            part += f" ({direction.bytes_dropped} B dropped: receiver not reading)"
        parts.append(part)
    print("; ".join(parts), flush=True)
    return now, relay.uplink.bytes_passed, relay.downlink.bytes_passed


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
