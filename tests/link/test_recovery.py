"""kill -9 of either end mid-transfer, with real processes: no result lost, none duplicated,
and no replay accepted after the flight restarts."""
import sqlite3
import subprocess
import sys

from flight.link.job_result import decode_result
from ground.client import GroundClient
from tests.link.conftest import REPO, FlightUnderTest, open_ground, synth_completion
from tests.link.helpers import arsn_of, response_to, wait_until

PING_OPCODE = 0x0101


def archived(path) -> dict[int, bytes]:
    with sqlite3.connect(path) as conn:
        return dict(conn.execute("SELECT job_id, data FROM results"))


def archived_texts(path) -> dict[int, str]:
    return {job_id: decode_result(data)["text"] for job_id, data in archived(path).items()}


def segments_held(path) -> int:
    try:
        with sqlite3.connect(path) as conn:
            return conn.execute("SELECT count(*) FROM segments").fetchone()[0]
    except sqlite3.OperationalError:  # the collector has not created its tables yet
        return 0


def test_flight_killed_mid_transfer(relay, node_factory, tmp_path, keyfile, synth_node_model):
    node = node_factory(relay.flight_path)
    node.start()
    ground = open_ground(relay, tmp_path, keyfile)
    try:
        relay.down.drop = 0.6  # a poor pass: the transfer is still partial when the node dies
        jobs = {ground.submit_job(f"job {n} says hello from orbit", 700, timeout=1.0, attempts=20):
                synth_completion(synth_node_model, f"job {n} says hello from orbit", 700) for n in range(3)}
        wait_until(lambda: ground.assembler.counters["SEGMENTS_NEW"] >= 3, what="some segments")
        node.kill9()
        relay.down.drop = 0.0
        node.start()
        ground.await_telemetry("LINK_BOOT_COUNT", lambda v: v == 2, timeout=20)
        for job_id, text in jobs.items():
            assert decode_result(ground.await_result(job_id, timeout=30))["text"] == text
        wait_until(lambda: ground.await_telemetry("DL_RESULTS_PENDING", since=ground.history_index()).value == 0,
                   what="flight has every result acknowledged")
        # A further restart sends nothing again: every result is delivered in the onboard store.
        node.kill9()
        node.start()
        ground.await_telemetry("LINK_BOOT_COUNT", lambda v: v == 3, timeout=20)
        assert ground.await_telemetry("DL_RESULTS_PENDING", since=ground.history_index()).value == 0
    finally:
        ground.close()
    assert archived_texts(tmp_path / "ground.sqlite") == jobs


def test_replay_refused_after_flight_kill9(relay, node_factory, tmp_path, keyfile):
    node = node_factory(relay.flight_path)
    node.start()
    ground = open_ground(relay, tmp_path, keyfile)
    try:
        recorded = ground.encode_tc("COMMAND", {"opcode": PING_OPCODE, "args": [1]})
        since = ground.history_index()
        ground.send_packet(recorded)
        response_to(ground, arsn_of(recorded), since, "COMPLETED")
        node.kill9()
        node.start()
        ground.await_telemetry("LINK_BOOT_COUNT", lambda v: v == 2, timeout=20)
        older = ground.encode_tc("COMMAND", {"opcode": PING_OPCODE, "args": [2]}, arsn=arsn_of(recorded) - 1)
        for packet in (recorded, older):
            since = ground.history_index()
            ground.send_packet(packet)
            assert response_to(ground, arsn_of(packet), since).reason == "REPLAY"
    finally:
        ground.close()


def test_ground_killed_mid_transfer(relay, tmp_path, keyfile):
    """The flight publishes results as the executive will; the ground is `ground collect`, killed -9."""
    flight = FlightUnderTest(relay.flight_path, tmp_path / "onboard.sqlite", keyfile)
    archive = tmp_path / "ground.sqlite"
    collect = [sys.executable, "-m", "ground.cli", "collect", "--port", relay.ground_path, "--keys", str(keyfile),
               "--archive", str(archive), "--sack-interval", "0.1"]
    procs = []
    try:
        relay.down.drop = 0.6
        jobs = {}
        for job_id in range(1, 5):
            data = bytes((job_id * i) % 251 for i in range(5000 * job_id))
            flight.service.publish_result(job_id, data, 1)
            jobs[job_id] = data
        procs.append(subprocess.Popen(collect, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_until(lambda: segments_held(archive) >= 3, what="collector holding segments")
        procs[-1].kill()  # SIGKILL
        procs[-1].wait(timeout=10)
        relay.down.drop = 0.0
        procs.append(subprocess.Popen(collect, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_until(lambda: len(archived(archive)) == len(jobs), timeout=60, what="every result archived")
        wait_until(lambda: not flight.service.results.pending_results(), what="flight has every result acknowledged")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=10)
        flight.stop()
    assert archived(archive) == jobs
    with sqlite3.connect(archive) as conn:
        assert conn.execute("SELECT count(*) FROM segments").fetchone()[0] == 0


def test_ground_restart_keeps_arsns_fresh(relay, flight, tmp_path, keyfile):
    """A restarted ground continues its archive's ARSN counter. (A ground with a new, empty archive
    starts below the node's counter and must resynchronise: see test_arsn_recovery.py.)"""
    for archive in ("a.sqlite", "a.sqlite", "a.sqlite"):
        client = GroundClient(relay.ground_path, keys=keyfile, archive=tmp_path / archive, sack_interval_s=0.1).connect()
        try:
            client.await_telemetry("LINK_CONTACT", lambda v: v is True, timeout=10)
            client.send_and_await_completion("CMD_NOOP")
        finally:
            client.close()
    assert flight.service.telemetry.get("LINK_REPLAYS_REJECTED") == 0
