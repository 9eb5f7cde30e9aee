"""What the command lines share: `flight` (run, generate) and `ground`.

Every failure of theirs is one line naming the problem and a non-zero exit, never a traceback:
an operator at a console, or a script on the ground, must be able to read what went wrong.

- OneLineParser: argparse whose usage errors are one line;
- option types: log_level, seconds(maximum), integer(low, high) as baud_rate; each refuses a bad value as a usage
  error (an infinite, NaN or huge timeout would otherwise overflow deep in a thread, or hang);
- serial_error: a serial port failure as one line.
"""
from __future__ import annotations

import argparse
import logging
import math
import os
from collections.abc import Callable
from typing import NoReturn

import serial

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


def serial_error(port: str, exc: serial.SerialException | ValueError) -> str:
    """One line for a serial port failure (pyserial raises ValueError for a bad URL or setting)."""
    # pyserial sets errno only when the device cannot be opened, and then repeats the port name
    # and the errno in its text; other failures (configure, read, write) carry only their text.
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"cannot open {port}: {os.strerror(exc.errno)}"
    return f"serial port {port}: {exc}"


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
