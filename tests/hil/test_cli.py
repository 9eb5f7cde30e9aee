"""`hil link` as an operator runs it: pty paths printed, bytes passed, signals end it with 0, bad
input is one line and a non-zero exit."""
from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from hil.link import open_pty
from tests.hil.helpers import Receiver, line

REPO = Path(__file__).resolve().parents[2]
HIL = [sys.executable, "-m", "hil.cli"]


def hil(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*HIL, *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def lines_of(stream) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(text) for text in stream], daemon=True).start()
    return lines


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_pty_mode_prints_the_paths_relays_both_ways_and_stops_with_0(stop: signal.Signals) -> None:
    proc = hil("link", "--pty", "--baud", "460800", "--stats-interval", "0.2")
    try:
        out = lines_of(proc.stdout)
        flight_line, ground_line = out.get(timeout=10), out.get(timeout=10)
        assert flight_line.startswith("flight: /dev/") and ground_line.startswith("ground: /dev/")
        with line(flight_line.split()[1]) as flight, line(ground_line.split()[1]) as ground:
            for source, target, data in ((ground, flight, b"uplink\x00" * 100), (flight, ground, b"downlink\x00" * 100)):
                receiver = Receiver(target, len(data))
                receiver.start()
                os.write(source, data)
                receiver.join(timeout=15)
                assert receiver.data == data
        while "uplink 700 B" not in (stats := out.get(timeout=10)) or "downlink 900 B" not in stats:
            pass
        proc.send_signal(stop)
        assert proc.wait(timeout=10) == 0
        assert proc.stderr.read() == ""
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("args, message", [
    ([], "hil: error: the following arguments are required: command"),
    (["link"], "hil link: error: give --flight-port and --ground-port, or --pty for the sides without one"),
    (["link", "--pty", "--flight-port", "/dev/a", "--ground-port", "/dev/b"],
     "hil link: error: --pty has nothing to open: both ports are given"),
    (["link", "--pty", "--baud", "0"], "hil link: error: argument --baud: expected a baud rate from 1 to 20000000, got '0'"),
    (["link", "--pty", "--baud", "-9600"], "hil link: error: argument --baud: expected a baud rate from 1 to 20000000, got '-9600'"),
    (["link", "--pty", "--baud", "fast"], "hil link: error: argument --baud: expected a baud rate from 1 to 20000000, got 'fast'"),
    (["link", "--pty", "--baud", "9600.5"], "hil link: error: argument --baud: expected a baud rate from 1 to 20000000, got '9600.5'"),
    (["link", "--pty", "--baud", "1" + "0" * 40],
     "hil link: error: argument --baud: expected a baud rate from 1 to 20000000, got '1" + "0" * 40 + "'"),
    (["link", "--pty", "--stats-interval", "nan"],
     "hil link: error: argument --stats-interval: expected seconds from 0 (off) to 86400, got 'nan'"),
    (["link", "--flight-port", "/nonexistent/tty0", "--pty"], "hil link: cannot open /nonexistent/tty0: No such file or directory"),
], ids=lambda value: (" ".join(value) or "nothing") if isinstance(value, list) else "")
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    done = subprocess.run([*HIL, *args], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert (done.returncode, done.stderr, done.stdout) == (2, message + "\n", "")


def test_a_device_failing_while_running_is_one_line_and_exit_1() -> None:
    master, slave, path = open_pty()  # a UART adapter, about to be unplugged
    proc = hil("link", "--flight-port", path, "--pty")
    try:
        assert proc.stdout.readline() == f"flight: {path}\n"
        os.close(master)
        os.close(slave)
        assert proc.wait(timeout=10) == 1
        assert proc.stderr.read() == f"hil link: {path}: hung up\n"
    finally:
        proc.kill()
        proc.wait()
