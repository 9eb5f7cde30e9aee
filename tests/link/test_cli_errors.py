"""The link's command lines (`ground` and `python -m flight.link.node`) as operators run them:
every error is one line naming the problem and a non-zero exit, never a traceback, and nothing
is created on disk by a command that fails before its port opens or that only reads."""
from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from flight.link.cli_support import open_flight_link
from flight.link.keys import write_new_key_file
from tests.link.conftest import REPO

MISSING_PORT = "/nonexistent/tty"


def run(*argv: str, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *argv], cwd=REPO, capture_output=True, text=True, timeout=timeout)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The error line, after checking the failure has the promised shape."""
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].strip(), result.stderr
    return lines[0]


def ground(*argv: str) -> subprocess.CompletedProcess[str]:
    return run("ground.cli", *argv)


def node(*argv: str) -> subprocess.CompletedProcess[str]:
    return run("flight.link.node", *argv)


@pytest.fixture
def pty_path() -> Iterator[str]:
    """A serial device that opens: the slave side of a pty, held open by the master."""
    master, slave = os.openpty()
    path = os.ttyname(slave)
    yield path
    os.close(master)
    os.close(slave)


# --- ground ------------------------------------------------------------------------------------

@pytest.mark.parametrize("port", [
    MISSING_PORT,
    # the README's default port; this machine has no USB serial adapter
    pytest.param(None, marks=pytest.mark.skipif(os.path.exists("/dev/ttyUSB0"), reason="/dev/ttyUSB0 exists here")),
])
def test_ground_port_that_cannot_open(tmp_path, keyfile, port):
    archive = tmp_path / "archive.sqlite"
    result = ground("send", "LINK_PING", "token=7", "--keys", str(keyfile), "--archive", str(archive),
                    *(["--port", port] if port else []))
    assert one_line_error(result) == f"ground: cannot open {port or '/dev/ttyUSB0'}: No such file or directory"
    assert list(tmp_path.glob("archive.sqlite*")) == []


def test_ground_results_from_a_missing_archive(tmp_path):
    archive = tmp_path / "wrong" / "path"
    assert one_line_error(ground("results", "--archive", str(archive))) == f"ground: archive {archive} does not exist"
    assert not archive.parent.exists()
    absent = tmp_path / "absent.sqlite"
    assert one_line_error(ground("results", "--archive", str(absent))) == f"ground: archive {absent} does not exist"
    assert list(tmp_path.iterdir()) == []


def test_ground_results_from_a_file_that_is_not_an_archive(tmp_path, keyfile):
    line = one_line_error(ground("results", "--archive", str(keyfile)))
    assert line.startswith(f"ground: cannot open archive {keyfile}:") and "not a database" in line


def test_ground_results_leaves_some_other_sqlite_file_untouched(tmp_path):
    import sqlite3

    other = tmp_path / "inventory.sqlite"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE parts (name TEXT)")
    conn.close()
    before = other.read_bytes()
    line = one_line_error(ground("results", "--archive", str(other)))
    assert line == f"ground: {other} is not a ground archive (no archive tables in it)"
    assert other.read_bytes() == before


def test_ground_results_reads_an_existing_archive(tmp_path):
    from ground.archive import GroundArchive

    archive = GroundArchive(tmp_path / "archive.sqlite")
    archive.complete_result(5, b"orbit", 1)
    archive.close()
    result = ground("results", "--archive", str(tmp_path / "archive.sqlite"))
    assert result.returncode == 0 and result.stdout == "--- job 5 (5 octets)\norbit\n"


def test_ground_argument_of_the_wrong_type_is_named(tmp_path, keyfile):
    result = ground("send", "LINK_PING", "token=abc", "--keys", str(keyfile), "--port", MISSING_PORT,
                    "--archive", str(tmp_path / "archive.sqlite"))
    assert one_line_error(result) == "ground: token: expected an integer (u32), got 'abc'"


def test_ground_hazardous_hint_names_the_cli_flag(tmp_path, keyfile):
    # loop:// opens; the refusal must come before the port or the archive is touched
    result = ground("send", "STORE_PURGE_DELIVERED", "--keys", str(keyfile), "--port", "loop://",
                    "--archive", str(tmp_path / "archive.sqlite"))
    line = one_line_error(result)
    assert line == "ground: STORE_PURGE_DELIVERED is hazardous; add --confirm-hazardous to send it"
    assert "confirm_hazardous=True" not in line
    assert list(tmp_path.glob("archive.sqlite*")) == []


@pytest.mark.parametrize("option, argv", [
    ("--timeout", ["send", "LINK_PING", "token=7", "--timeout", "1e300"]),  # OverflowError in a wait
    ("--timeout", ["send", "LINK_PING", "token=7", "--timeout", "nan"]),  # waited forever
    ("--sack-interval", ["send", "LINK_PING", "token=7", "--sack-interval", "1e308"]),  # OverflowError, SACK thread
    ("--duration", ["monitor", "--duration", "-5"]),  # returned at once, successfully
    ("--duration", ["monitor", "--duration", "inf"]),
    ("--baud", ["collect", "--baud", "99999999999999999999"]),
    ("--timeout", ["submit", "--prompt", "x", "--timeout", "0"]),
])
def test_ground_absurd_numbers_are_usage_errors(tmp_path, keyfile, option, argv):
    result = ground(*argv, "--keys", str(keyfile), "--port", "loop://", "--archive", str(tmp_path / "archive.sqlite"))
    assert result.returncode == 2
    assert f"error: argument {option}: expected" in one_line_error(result)
    assert list(tmp_path.glob("archive.sqlite*")) == []


# --- flight link node --------------------------------------------------------------------------

@pytest.mark.parametrize("port", [MISSING_PORT, None])  # None: the default, /dev/ttyTHS1, absent here
def test_node_port_that_cannot_open_leaves_no_database(tmp_path, keyfile, port):
    if port is None and os.path.exists("/dev/ttyTHS1"):
        pytest.skip("/dev/ttyTHS1 exists here")
    db = tmp_path / "onboard.sqlite"
    result = node("--db", str(db), "--keys", str(keyfile), *(["--port", port] if port else []))
    line = one_line_error(result)
    assert line == f"python -m flight.link.node: cannot open {port or '/dev/ttyTHS1'}: No such file or directory"
    assert list(tmp_path.glob("onboard.sqlite*")) == []


def test_node_database_in_a_missing_directory(tmp_path, keyfile, pty_path):
    db = tmp_path / "absent" / "onboard.sqlite"
    line = one_line_error(node("--port", pty_path, "--db", str(db), "--keys", str(keyfile)))
    assert line == (f"python -m flight.link.node: cannot open onboard database {db}: "
                    f"directory {db.parent} does not exist")


def test_node_database_that_is_not_a_database(tmp_path, keyfile, pty_path):
    line = one_line_error(node("--port", pty_path, "--db", str(keyfile), "--keys", str(keyfile)))
    assert line.startswith(f"python -m flight.link.node: cannot open onboard database {keyfile}:")


def test_node_key_file_error_is_one_line(tmp_path, keyfile, pty_path):
    result = node("--port", pty_path, "--db", str(tmp_path / "onboard.sqlite"), "--keys", str(keyfile),
                  "--keys", str(keyfile))
    assert "SPI 1 is in both key files" in one_line_error(result)
    assert list(tmp_path.glob("onboard.sqlite*")) == []


def test_node_with_only_a_recovery_key_is_refused(tmp_path, pty_path):
    recovery = tmp_path / "recovery-keys.json"
    write_new_key_file(recovery, spi=9, role="recovery")
    result = node("--port", pty_path, "--db", str(tmp_path / "onboard.sqlite"), "--keys", str(recovery))
    assert "no operations key" in one_line_error(result)
    assert list(tmp_path.glob("onboard.sqlite*")) == []


@pytest.mark.parametrize("option, value", [
    ("--log-level", "loud"),
    ("--hk-period", "nan"),
    ("--hk-period", "1e300"),  # OverflowError in the housekeeping thread
    ("--contact-timeout", "0"),
    ("--rto", "-1"),
    ("--baud", "99999999999999999999"),  # OverflowError configuring a real tty
    ("--baud", "fast"),
    ("--arsn-window", "0"),
    ("--arsn-window", str(2**64)),
])
def test_node_absurd_options_are_usage_errors(tmp_path, keyfile, pty_path, option, value):
    result = node("--port", pty_path, "--db", str(tmp_path / "onboard.sqlite"), "--keys", str(keyfile), option, value)
    assert result.returncode == 2
    assert f"error: argument {option}: expected" in one_line_error(result)
    assert list(tmp_path.glob("onboard.sqlite*")) == []


def test_node_runs_with_lower_case_log_level_and_two_key_files(tmp_path, keyfile):
    recovery = tmp_path / "recovery.json"
    write_new_key_file(recovery, spi=100, role="recovery")
    master, slave = os.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "flight.link.node", "--port", os.ttyname(slave),
             "--db", str(tmp_path / "onboard.sqlite"), "--keys", str(keyfile), "--keys", str(recovery),
             "--log-level", "info"],
            cwd=REPO, stderr=subprocess.PIPE, text=True)
        try:
            # A frame (bytes, then 0x00) after the node's opening 0x00 means the service has
            # started, so the SIGTERM handler is in place.
            received = b""
            deadline = time.monotonic() + 15
            while not received.lstrip(b"\x00").count(b"\x00"):
                assert proc.poll() is None, proc.stderr.read()
                assert time.monotonic() < deadline, "no frame from the node"
                if select.select([master], [], [], 0.2)[0]:
                    received += os.read(master, 4096)
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    finally:
        os.close(master)
        os.close(slave)
    assert proc.returncode == 0, stderr
    assert "LINK_STARTED" in stderr  # logged at INFO: the level was taken
    assert "Traceback" not in stderr


# --- the shared start-up helper ----------------------------------------------------------------

def test_open_flight_link_opens_the_port_once(tmp_path, keyfile):
    """The port opened first is the one the link runs on: starting it does not open it again (a
    second open could reset the far end), as the single opening delimiter on the line shows."""
    master, slave = os.openpty()
    try:
        link = open_flight_link(os.ttyname(slave), 115200, str(tmp_path / "onboard.sqlite"), [str(keyfile)])
        try:
            link.port.start(lambda data: None)
            received = b""
            while select.select([master], [], [], 0.3)[0]:
                received += os.read(master, 4096)
        finally:
            link.close()
    finally:
        os.close(master)
        os.close(slave)
    assert received == b"\x00"
