"""`hil`: the hardware-in-the-loop bench's command line.

    hil link --flight-port DEV --ground-port DEV [--baud N] [--stats-interval S] [RADIO]
    hil link --pty [--baud N] [--stats-interval S] [RADIO]
    hil passes --tle FILE --station LAT,LON,ALT_M [--mask DEG] [--start ISO] [--hours H] [--json]
    hil eclipses --tle FILE [--start ISO] [--hours H] [--json]
    hil run SCENARIO [--accel K] [--flight-port DEV --sensor-port DEV] [--model PATH] [--out DIR] [--seed S]
    hil campaign SCENARIO --runs N [--seed S] [--workers K | --scheduler ADDRESS] [--accel K] [--model PATH]
                 [--set TABLE.KEY=VALUE ...] [--out DIR]

    RADIO: [--ber X] [--latency-ms MS] [--burst-interval-s S --burst-duration-ms MS [--burst-ber X]]
           [--dropout-interval-s S --dropout-duration-ms MS] [--accel K] [--seed N]

`hil link` joins the flight and ground serial lines through a LinkRelay (hil/link.py), passing
bytes both ways at the baud's byte rate, until SIGINT or SIGTERM (exit 0). --pty opens a pty pair
for each side given no device, so flight and ground can run on one machine; it prints each side's
path first, one line each (`flight: /dev/pts/5`, `ground: /dev/pts/6`).

The RADIO options impair both directions, each with its own draws from --seed (hil/radio.py has
the models): a bit error rate, a one-way latency, burst errors (Gilbert-Elliott: bad states of
the mean duration at --burst-ber, default 1e-2, between good states of the mean interval) and
dropouts (outages of the mean duration between up-times of the mean interval). --accel K runs the
line K times faster than the baud, with those times in simulated seconds (K times shorter in wall
time), as the scenarios do; the statistics then show the radio's counters too.

`hil passes` and `hil eclipses` plan from a TLE (hil/env/stations.py, flight/orbit): contact windows
with a station (rise, culmination, set, peak elevation) and eclipses (penumbra and umbra entry and
exit), from --start (default: the TLE's epoch) for --hours (default 24), one per line or, with
--json, a JSON list of objects (times ISO-8601 UTC).

Errors are one line on stderr and a non-zero exit, never a traceback: 2 for bad input (options, a
device that cannot be opened), 1 if the link fails while running.
"""
from __future__ import annotations

import argparse
import math
import signal
import sys
import time
from collections.abc import Callable

from flight.link.cli_support import EXIT_FAILURE, EXIT_USAGE, OneLineParser, baud_rate, integer
from hil.link import MAX_ACCEL, LinkRelay, OpenError
from hil.radio import MAX_BER, MAX_LATENCY_S, MAX_MEAN_S, BurstModel, DropoutModel, Impairments
from hil.planning import add_planning_commands
from hil.campaign_cli import add_campaign_command
from hil.run_cli import add_run_command

STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
HEALTH_CHECK_S = 0.5  # how soon a failed link ends the command when no statistics are due sooner
MAX_STATS_INTERVAL_S = 24 * 3600.0
# the radio's counters in the statistics line, each only once it is not 0
RADIO_STATS = (("bytes_lost_out_of_contact", "B lost out of contact"), ("bytes_lost_dropout", "B lost in dropouts"),
               ("dropouts", "dropouts"), ("bits_flipped", "bits flipped"), ("bursts", "bursts"))


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= MAX_STATS_INTERVAL_S:  # also refuses NaN
        raise argparse.ArgumentTypeError(f"expected seconds from 0 (off) to {MAX_STATS_INTERVAL_S:.15g}, got {text!r}")
    return value


def _number(low: float, high: float, what: str, *, above_low: bool = False) -> Callable[[str], float]:
    """An argparse type: a number from low (or above it) to high, named `what` in the error."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (low < value if above_low else low <= value) or not value <= high:  # also refuses NaN
            raise argparse.ArgumentTypeError(f"expected {what} {'above' if above_low else 'from'} {low:.15g} "
                                             f"{'and at most' if above_low else 'to'} {high:.15g}, got {text!r}")
        return value

    return parse


_ber = _number(0.0, MAX_BER, "a bit error rate")
_mean_s = _number(0.0, MAX_MEAN_S, "seconds", above_low=True)
_mean_ms = _number(0.0, MAX_MEAN_S * 1e3, "milliseconds", above_low=True)


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
    radio = link.add_argument_group("radio", "impairments of both directions; times are simulated seconds (see --accel)")
    radio.add_argument("--ber", type=_ber, default=0.0, metavar="X", help="bit error rate (default 0)")
    radio.add_argument("--latency-ms", type=_number(0.0, MAX_LATENCY_S * 1e3, "milliseconds"), default=0.0, metavar="MS",
                       help="one-way latency (default 0)")
    radio.add_argument("--burst-interval-s", type=_mean_s, metavar="S", help="burst errors: mean time between bursts")
    radio.add_argument("--burst-duration-ms", type=_mean_ms, metavar="MS", help="burst errors: mean burst length")
    radio.add_argument("--burst-ber", type=_ber, metavar="X", help="bit error rate within a burst (default 1e-2)")
    radio.add_argument("--dropout-interval-s", type=_mean_s, metavar="S", help="dropouts: mean up-time between them")
    radio.add_argument("--dropout-duration-ms", type=_mean_ms, metavar="MS", help="dropouts: mean outage length")
    radio.add_argument("--accel", type=_number(0.0, MAX_ACCEL, "a rate multiplier", above_low=True), default=1.0,
                       metavar="K", help="run the line at K x baud/10 bytes per second, K simulated seconds per wall second")
    radio.add_argument("--seed", type=integer(0, 2**63 - 1, "a seed"), default=0, metavar="N",
                       help="seed of the radio's random draws (default 0)")
    link.set_defaults(func=_link)
    add_planning_commands(sub)
    add_run_command(sub)
    add_campaign_command(sub)
    return parser


def _link(args: argparse.Namespace) -> int:
    ports = (args.flight_port, args.ground_port)
    if args.pty and all(ports):
        return _usage_error("--pty has nothing to open: both ports are given")
    if not args.pty and not all(ports):
        return _usage_error("give --flight-port and --ground-port, or --pty for the sides without one")
    if (args.burst_interval_s is None) != (args.burst_duration_ms is None):
        return _usage_error("--burst-interval-s and --burst-duration-ms go together")
    if args.burst_ber is not None and args.burst_interval_s is None:
        return _usage_error("--burst-ber needs --burst-interval-s and --burst-duration-ms")
    if (args.dropout_interval_s is None) != (args.dropout_duration_ms is None):
        return _usage_error("--dropout-interval-s and --dropout-duration-ms go together")
    # Every thread the relay starts inherits this mask, so the stop signals wait for sigtimedwait
    # below, on the main thread, instead of interrupting whatever happens to be running.
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        try:
            relay = LinkRelay(*ports, baud=args.baud, impairments=_impairments(args), accel=args.accel)
        except OpenError as exc:
            print(f"hil link: {exc}", file=sys.stderr)
            return EXIT_USAGE
        with relay:
            print(f"flight: {relay.flight_path}\nground: {relay.ground_path}", flush=True)
            return _run(relay, args.stats_interval)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _impairments(args: argparse.Namespace) -> Impairments:
    burst = dropout = None
    if args.burst_interval_s is not None:
        burst = BurstModel(args.burst_interval_s, args.burst_duration_ms / 1e3,
                           1e-2 if args.burst_ber is None else args.burst_ber)
    if args.dropout_interval_s is not None:
        dropout = DropoutModel(args.dropout_interval_s, args.dropout_duration_ms / 1e3)
    return Impairments(ber=args.ber, latency_s=args.latency_ms / 1e3, burst=burst, dropout=dropout, seed=args.seed)


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
        radio = direction.radio.counters()
        part += "".join(f", {radio[name]} {label}" for name, label in RADIO_STATS if radio[name])
        parts.append(part)
    print("; ".join(parts), flush=True)
    return now, relay.uplink.bytes_passed, relay.downlink.bytes_passed


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
