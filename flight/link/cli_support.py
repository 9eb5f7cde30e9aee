"""What the link's command lines share: `python -m flight.link.node`, the coming `flight run`, the
`flight` CLI and `ground`.

Every failure of theirs is one line naming the problem and a non-zero exit, never a traceback:
an operator at a console, or a script on the ground, must be able to read what went wrong.

- OneLineParser: argparse whose usage errors are one line;
- option types: log_level, seconds(maximum), integer(low, high) as baud_rate and arsn_window; each refuses a bad value as a usage error
  (an infinite, NaN or huge timeout would otherwise overflow deep in a thread, or hang);
- add_link_options and link_config: the flight side's link options;
- open_flight_link: key files, then serial port, then onboard database, each failure a one-line
  LinkStartError; the database file is not created unless the port has opened.
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn

import serial

from flight.link.keys import KeyFileError, KeyRing
from flight.link.serial_port import SerialPort
from flight.link.service import LinkConfig
from flight.store.onboard_db import OnboardDb

EXIT_FAILURE = 1
EXIT_USAGE = 2
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# Longest housekeeping period, contact timeout, retransmission timeout or SACK interval: beyond an
# hour the link is as good as silent, so a larger value is a typing error.
MAX_LINK_TIMER_S = 3600.0
# termios keeps a custom speed in a 32-bit field; no UART we fly or bench comes near this.
MAX_BAUD = 20_000_000


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line (no usage block) and exits EXIT_USAGE."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def log_level(text: str) -> str:
    """A logging level name in any case (info, Info, INFO); returned upper-case for logging."""
    level = text.upper()
    if level not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(l.lower() for l in LOG_LEVELS)}, got {text!r}")
    return level


def seconds(maximum: float) -> Callable[[str], float]:
    """An argparse type: a finite number of seconds above 0 and at most maximum."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not 0.0 < value <= maximum:  # also refuses NaN, which compares false with everything
            raise argparse.ArgumentTypeError(f"expected seconds above 0 and at most {maximum:.15g}, got {text!r}")
        return value

    return parse


def integer(low: int, high: int, what: str) -> Callable[[str], int]:
    """An argparse type: an integer from low to high, named `what` in the error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected {what} from {low} to {high}, got {text!r}")
        return value

    return parse


baud_rate = integer(1, MAX_BAUD, "a baud rate")
arsn_window = integer(1, (1 << 64) - 1, "an ARSN window")


def add_link_options(parser: argparse.ArgumentParser) -> None:
    """The flight side's link options; link_config(args) and open_flight_link take them up."""
    parser.add_argument("--port", default="/dev/ttyTHS1", help="serial device or pyserial URL")
    parser.add_argument("--baud", type=baud_rate, default=115200)
    parser.add_argument("--db", required=True, help="onboard SQLite file (its directory must exist)")
    parser.add_argument("--keys", required=True, action="append", metavar="FILE",
                        help="key file (mode 0600); give it again for more, e.g. the offline recovery key file")
    parser.add_argument("--hk-period", type=seconds(MAX_LINK_TIMER_S), default=1.0,
                        help="seconds between housekeeping packets")
    parser.add_argument("--contact-timeout", type=seconds(MAX_LINK_TIMER_S), default=10.0,
                        help="seconds of uplink silence before contact is lost")
    parser.add_argument("--rto", type=seconds(MAX_LINK_TIMER_S), default=3.0,
                        help="result segment retransmission timeout, seconds")
    parser.add_argument("--arsn-window", type=arsn_window, default=LinkConfig.arsn_window,
                        help="accept an ARSN only up to this far above the last accepted one (default %(default)s)")
    parser.add_argument("--log-level", type=log_level, default="INFO",
                        help="debug, info, warning, error or critical (any case)")


def link_config(args: argparse.Namespace) -> LinkConfig:
    return LinkConfig(hk_period_s=args.hk_period, contact_timeout_s=args.contact_timeout, rto_s=args.rto,
                      arsn_window=args.arsn_window)


class LinkStartError(Exception):
    """The flight side of the link cannot start; the message is one line."""


def serial_error(port: str, exc: serial.SerialException | ValueError) -> str:
    """One line for a serial port failure (pyserial raises ValueError for a bad URL or setting)."""
    # pyserial sets errno only when the device cannot be opened, and then repeats the port name
    # and the errno in its text; other failures (configure, read, write) carry only their text.
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"cannot open {port}: {os.strerror(exc.errno)}"
    return f"serial port {port}: {exc}"


@dataclass
class FlightLink:
    """What the flight side of the link runs on, opened: its keys, its port and its database."""

    keys: KeyRing
    port: SerialPort
    db: OnboardDb

    def close(self) -> None:
        self.port.close()
        self.db.close()


def open_flight_link(port: str, baud: int, db_path: str | os.PathLike[str],
                     key_paths: Sequence[str | os.PathLike[str]]) -> FlightLink:
    """Load the key files, open the serial port, then open (or create) the onboard database.

    Keys first: loading them changes nothing anywhere. The port before the database, so that a
    wrong port (the commonest mistake) leaves no database file behind. Raises LinkStartError.
    """
    try:
        keys = KeyRing.load_all(key_paths)
    except KeyFileError as exc:
        raise LinkStartError(str(exc)) from None
    if keys.recovery_spis == set(keys.spis):
        raise LinkStartError("no operations key: every key given is a recovery key; add the operations key file")
    serial_port = SerialPort(port, baud)
    try:
        serial_port.open()
    except (serial.SerialException, ValueError) as exc:
        serial_port.close()
        raise LinkStartError(serial_error(port, exc)) from None
    try:
        db = _open_onboard_db(db_path)
    except LinkStartError:
        serial_port.close()
        raise
    return FlightLink(keys, serial_port, db)


def _open_onboard_db(path: str | os.PathLike[str]) -> OnboardDb:
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        problem = "is not a directory" if os.path.exists(directory) else "does not exist"
        raise LinkStartError(f"cannot open onboard database {path}: directory {directory} {problem}")
    try:
        return OnboardDb(path)
    except sqlite3.Error as exc:
        raise LinkStartError(f"cannot open onboard database {path}: {exc}") from None


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
