"""The ground's command line as operators run it (`flight run`'s is tests/node/test_flight_run.py):
every error is one line naming the problem and a non-zero exit, never a traceback, and nothing
is created on disk by a command that fails before its port opens or that only reads."""
from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

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
    """A result archived before results were encoded (or broken) is shown as well as it can be."""
    from ground.archive import GroundArchive
    from tests.link.stand_in_jobs import stand_in_result

    archive = GroundArchive(tmp_path / "archive.sqlite")
    archive.complete_result(5, b"orbit", 1)
    archive.complete_result(6, stand_in_result(6, "in orbit", 3), 1)
    archive.close()
    result = ground("results", "--archive", str(tmp_path / "archive.sqlite"))
    assert result.returncode == 0 and result.stderr == ""
    first, text5, second, text6 = result.stdout.splitlines()
    assert first.startswith("--- job 5 (5 octets, not a decodable result: result is not zlib data") and text5 == "orbit"
    assert second.startswith("--- job 6: 3 tokens, stop limit, ") and text6 == " in orbit in"


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


@pytest.mark.parametrize("content, message", [
    (None, "cannot read {file}: No such file or directory"),
    ("1 25544U 98067A   19343.69339541  .00001764  00000-0  38792-4 0  9991\n",
     "{file}: TLE must have 2 lines (or 3 with a name), got 1"),
    ("1 25544U 98067A   19343.69339541  .00001764  00000-0  38792-4 0  9991\n"
     "2 25544  51.6439 211.2001 0007417  17.6667  85.6398 15.50103472202483\n", "{file}: TLE line 2: checksum is 3, computed 2"),
    ("x" * 5000, "{file}: over 4096 octets, not one TLE"),
])
def test_ground_tle_upload_checks_the_file_before_the_port(tmp_path, keyfile, content, message):
    tle = tmp_path / "sat.tle"
    if content is not None:
        tle.write_text(content)
    result = ground("tle-upload", str(tle), "--keys", str(keyfile), "--port", "loop://",
                    "--archive", str(tmp_path / "archive.sqlite"))
    assert one_line_error(result) == "ground: " + message.format(file=tle)
    assert list(tmp_path.glob("archive.sqlite*")) == []


@pytest.mark.parametrize("option, argv", [
    ("--timeout", ["send", "LINK_PING", "token=7", "--timeout", "1e300"]),  # OverflowError in a wait
    ("--timeout", ["send", "LINK_PING", "token=7", "--timeout", "nan"]),  # waited forever
    ("--sack-interval", ["send", "LINK_PING", "token=7", "--sack-interval", "1e308"]),  # OverflowError, SACK thread
    ("--duration", ["monitor", "--duration", "-5"]),  # returned at once, successfully
    ("--duration", ["monitor", "--duration", "inf"]),
    ("--baud", ["collect", "--baud", "99999999999999999999"]),
    ("--timeout", ["submit", "--prompt", "x", "--timeout", "0"]),
    ("--deadline", ["submit", "--prompt", "x", "--deadline", "nan"]),
    ("--timeout", ["cancel", "5", "--timeout", "-1"]),
])
def test_ground_absurd_numbers_are_usage_errors(tmp_path, keyfile, option, argv):
    result = ground(*argv, "--keys", str(keyfile), "--port", "loop://", "--archive", str(tmp_path / "archive.sqlite"))
    assert result.returncode == 2
    assert f"error: argument {option}: expected" in one_line_error(result)
    assert list(tmp_path.glob("archive.sqlite*")) == []
