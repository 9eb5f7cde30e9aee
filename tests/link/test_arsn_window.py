"""Anti-replay lockout, and the way back: an ARSN far ahead of the node's counter is refused
(OUT_OF_WINDOW) instead of locking the ground out; ARSNs come from the ground's own persisted
counter, allocated atomically; a desynchronised counter is reset with the offline recovery key."""
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from flight.link.dictionary import load_dictionary
from flight.link.keys import write_new_key_file
from ground.archive import CounterExhausted, GroundArchive
from ground.cli import main as ground_main
from ground.client import CommandError, GroundClient
from tests.link.conftest import REPO, FlightUnderTest, open_ground
from tests.link.helpers import hk_value, response_to

D = load_dictionary()
PING = D.command_by_name["LINK_PING"].opcode


@pytest.mark.parametrize("far", [
    lambda last: 2**63,  # a ground clock far in the future, in microseconds, was enough before
    lambda last: 2**64 - 1,
    lambda last: last + D.security.arsn_window + 1,  # the first value beyond the window
])
def test_far_future_arsn_is_refused_and_the_ground_commands_on_across_a_kill9(relay, node_factory, tmp_path, keyfile,
                                                                             far):
    node = node_factory(relay.flight_path)
    node.start()
    ground = open_ground(relay, tmp_path, keyfile)
    try:
        ground.send_and_await_completion("LINK_PING", token=1)
        arsn = far(ground.archive.last_arsn(ground.spi))
        since = ground.history_index()
        ground.send_packet(ground.encode_tc("COMMAND", {"opcode": PING, "args": [2]}, arsn=arsn))
        rejection = response_to(ground, arsn, since)
        assert (rejection.reason, rejection.authenticated) == ("OUT_OF_WINDOW", False)
        assert hk_value(ground, "LINK_ARSN_OUT_OF_WINDOW", lambda v: v == 1) == 1
        assert ground.send_and_await_completion("LINK_PING", token=3).data == {"token": 3}
        node.kill9()
        node.start()
        ground.await_telemetry("LINK_BOOT_COUNT", lambda v: v == 2, timeout=20, since=ground.history_index())
        assert ground.send_and_await_completion("LINK_PING", token=4).data == {"token": 4}
        assert hk_value(ground, "LINK_LAST_ARSN", lambda v: True) < arsn  # never recorded, across the reboot too
    finally:
        ground.close()


def test_ground_counter_ignores_the_clock(tmp_path):
    archive = GroundArchive(tmp_path / "g.sqlite")
    assert [archive.next_arsn(1) for _ in range(3)] == [1, 2, 3]
    assert archive.next_arsn(2) == 1  # per SPI


def test_counter_at_its_top_is_a_one_line_error_not_a_crash(relay, flight, tmp_path, keyfile, capsys):
    archive_path = tmp_path / "top.sqlite"
    archive = GroundArchive(archive_path)
    archive.set_arsn(1, 2**64 - 1)
    with pytest.raises(CounterExhausted, match="ground recover"):
        archive.next_arsn(1)
    archive.close()
    code = ground_main(["send", "LINK_PING", "token=1", "--port", relay.ground_path, "--keys", str(keyfile),
                        "--archive", str(archive_path), "--timeout", "2"])
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1 and "ground recover" in err and "Traceback" not in err


def test_two_ground_processes_on_one_archive_never_share_an_arsn(tmp_path):
    archive = tmp_path / "shared.sqlite"
    GroundArchive(archive).close()
    script = textwrap.dedent(f"""
        from ground.archive import GroundArchive
        archive = GroundArchive({str(archive)!r})
        print(" ".join(str(archive.next_arsn(1)) for _ in range(300)))
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    taken = [int(value) for proc in procs for value in proc.communicate(timeout=60)[0].split()]
    assert sorted(taken) == list(range(1, 601))


def commanding_client(relay, keys: Path, archive: Path) -> GroundClient:
    """A ground session that only commands: no SACKs (a recovery key may send nothing else)."""
    return GroundClient(relay.ground_path, keys=keys, archive=archive, sack_interval_s=None).connect()


@pytest.fixture
def recovery_keyfile(tmp_path: Path) -> Path:
    path = tmp_path / "recovery-keys.json"
    write_new_key_file(path, spi=9, role="recovery")
    return path


@pytest.fixture
def flight_with_recovery(relay, tmp_path, keyfile, recovery_keyfile):
    side = FlightUnderTest(relay.flight_path, tmp_path / "onboard.sqlite", [keyfile, recovery_keyfile])
    yield side
    side.stop()


def test_recovery_key_resynchronises_a_ground_that_lost_its_archive(relay, flight_with_recovery, tmp_path, keyfile,
                                                                      recovery_keyfile):
    old = open_ground(relay, tmp_path, keyfile, archive="old.sqlite")
    try:
        old.send_and_await_completion("CMD_NOOP")
        node_last = old.archive.last_arsn(1)
    finally:
        old.close()
    node_last = max(node_last, flight_with_recovery.service._replay.last(1))
    fresh = commanding_client(relay, keyfile, tmp_path / "new.sqlite")
    try:
        with pytest.raises(CommandError) as err:
            fresh.send_and_await_completion("LINK_PING", token=1, timeout=2)
        assert (err.value.response.reason, err.value.response.authenticated) == ("REPLAY", False)
    finally:
        fresh.close()
    rescuer = commanding_client(relay, recovery_keyfile, tmp_path / "new.sqlite")
    try:
        data = rescuer.recover_arsn(1)
        rescuer.await_event("LINK_ARSN_SET", lambda e: e.args["spi"] == 1 and e.args["recovery_spi"] == 9)
    finally:
        rescuer.close()
    assert data["spi"] == 1 and data["last_arsn"] >= node_last and data["previous"] >= node_last
    fresh = open_ground(relay, tmp_path, keyfile, archive="new.sqlite")
    try:
        assert fresh.send_and_await_completion("LINK_PING", token=5).data == {"token": 5}
    finally:
        fresh.close()


def test_recovery_moves_down_only_when_allowed(relay, flight_with_recovery, tmp_path, keyfile, recovery_keyfile):
    ground = open_ground(relay, tmp_path, keyfile)
    ground.send_and_await_completion("CMD_NOOP")
    ground.close()
    rescuer = commanding_client(relay, recovery_keyfile, tmp_path / "ground.sqlite")
    try:
        up_only = rescuer.recover_arsn(1, last_arsn=0)
        assert up_only["last_arsn"] == up_only["previous"] > 0
        lowered = rescuer.recover_arsn(1, last_arsn=0, allow_lower=True)
        assert lowered == {"spi": 1, "previous": up_only["last_arsn"], "last_arsn": 0}
        assert rescuer.archive.last_arsn(1) == 0
    finally:
        rescuer.close()


def test_recovery_key_powers_are_confined(relay, flight_with_recovery, tmp_path, keyfile, recovery_keyfile):
    """The operations key cannot reset counters; the recovery key can do nothing else; a recorded
    recovery packet does not work twice."""
    ground = open_ground(relay, tmp_path, keyfile)
    try:
        with pytest.raises(CommandError) as err:
            ground.send_and_await_completion("LINK_SET_ARSN", confirm_hazardous=True, spi=1, last_arsn=0,
                                             allow_lower=True)
        assert (err.value.response.reason, err.value.response.authenticated) == ("KEY_NOT_ALLOWED", True)
    finally:
        ground.close()
    rescuer = commanding_client(relay, recovery_keyfile, tmp_path / "r.sqlite")
    try:
        challenge = rescuer.await_telemetry("LINK_RECOVERY_CHALLENGE").value
        with pytest.raises(CommandError) as err:
            rescuer.send_and_await_completion("LINK_PING", arsn=challenge, token=1)
        assert err.value.response.reason == "KEY_NOT_ALLOWED"
        challenge = rescuer.await_telemetry("LINK_RECOVERY_CHALLENGE", lambda v: v != challenge).value
        recorded = rescuer.encode_tc("COMMAND", {"opcode": D.command_by_name["LINK_SET_ARSN"].opcode,
                                                 "args": [1, 0, True], "confirm_hazardous": True}, arsn=challenge)
        since = rescuer.history_index()
        rescuer.send_packet(recorded)
        assert response_to(rescuer, challenge, since, "COMPLETED").data["last_arsn"] == 0
        since = rescuer.history_index()
        rescuer.send_packet(recorded)  # replayed by someone who recorded it
        assert response_to(rescuer, challenge, since).reason == "REPLAY"
        with pytest.raises(CommandError) as err:  # a guessed challenge
            rescuer.send_and_await_completion("LINK_SET_ARSN", arsn=challenge + 2, confirm_hazardous=True, spi=1,
                                              last_arsn=0, allow_lower=True, timeout=2)
        assert err.value.response.reason == "REPLAY"
    finally:
        rescuer.close()
    assert flight_with_recovery.service.telemetry.get("CMD_EXECUTED") == 1  # the one genuine recovery


def test_ground_recover_on_the_command_line(relay, flight_with_recovery, tmp_path, keyfile, recovery_keyfile, capsys):
    common = ["--port", relay.ground_path, "--archive", str(tmp_path / "lost-and-new.sqlite")]
    old = open_ground(relay, tmp_path, keyfile, archive="old.sqlite")
    old.send_and_await_completion("CMD_NOOP")
    old.close()
    assert ground_main(["send", "LINK_PING", "token=1", "--keys", str(keyfile), "--timeout", "1.5", *common]) == 1
    err = capsys.readouterr().err
    assert "REPLAY" in err and "ground recover" in err and len(err.strip().splitlines()) == 1
    assert ground_main(["recover", "--keys", str(keyfile), "--target-spi", "1", *common]) == 1
    err = capsys.readouterr().err
    assert "not a recovery key" in err and len(err.strip().splitlines()) == 1
    assert ground_main(["recover", "--keys", str(recovery_keyfile), "--target-spi", "1", *common]) == 0
    assert "SPI 1: anti-replay counter" in capsys.readouterr().out
    assert ground_main(["send", "LINK_PING", "token=2", "--keys", str(keyfile), *common]) == 0
    assert "COMPLETED" in capsys.readouterr().out
