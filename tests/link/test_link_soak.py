"""The long forms, run by `make test-full` only: a minute of line-rate flood with commanding
throughout, and the flight node killed -9 at random instants, again and again, mid-transfer."""
from __future__ import annotations

import random
import time

import pytest

from flight.link.framing import frame
from tests.link.conftest import open_ground
from tests.link.helpers import wait_until
from tests.link.test_link_attacks import LINE_RATE, Flood, Rig, keyless_packet
from flight.link.job_result import decode_result
from tests.link.conftest import synth_completion
from tests.link.test_recovery import archived_texts

pytestmark = pytest.mark.full


def test_a_minute_of_flood_with_commands_throughout(tmp_path, keyfile):
    rig = Rig(tmp_path, keyfile)
    try:
        up0, down0, t0 = rig.relay.uplink.bytes_passed, rig.relay.downlink.bytes_passed, time.monotonic()
        slowest = 0.0
        with Flood(rig.relay, frame(keyless_packet())):
            for token in range(12):
                started = time.monotonic()
                assert rig.ground.send_and_await_completion("LINK_PING", token=token, timeout=5.0).data == {"token": token}
                slowest = max(slowest, time.monotonic() - started)
                time.sleep(max(0.0, started + 5.0 - time.monotonic()))
            up, down = rig.relay.uplink.bytes_passed - up0, rig.relay.downlink.bytes_passed - down0
        elapsed = time.monotonic() - t0
        print(f"\n{elapsed:.0f} s of keyless flood at {up / elapsed / LINE_RATE:.0%} of the line: downlink "
              f"{down / up:.1%} of it; slowest of 12 pings {slowest:.2f} s")
        assert up / elapsed > 0.9 * LINE_RATE and down / up < 0.10
        assert rig.flight.service.telemetry.get("CMD_EXECUTED") == 12
    finally:
        rig.close()


def test_flight_killed_nine_times_at_random_mid_transfer(relay, node_factory, tmp_path, keyfile, synth_node_model):
    rng = random.Random(9)
    node = node_factory(relay.flight_path)
    node.start()
    ground = open_ground(relay, tmp_path, keyfile)
    try:
        relay.down.drop = 0.3
        jobs = {ground.submit_job(f"job {n} from a flaky node", 400, timeout=1.0, attempts=30):
                synth_completion(synth_node_model, f"job {n} from a flaky node", 400) for n in range(4)}
        for boot in range(2, 11):
            time.sleep(rng.uniform(0.05, 1.5))
            node.kill9()
            node.start()
            ground.await_telemetry("LINK_BOOT_COUNT", lambda v, b=boot: v == b, timeout=30)
            # contact again: the ground's next SACK (a fresh ARSN) was accepted by the new boot
            since = ground.history_index()
            ground.await_telemetry("LINK_CONTACT", lambda v: v is True, timeout=30, since=since)
        relay.down.drop = 0.0
        for job_id, text in jobs.items():
            assert decode_result(ground.await_result(job_id, timeout=60))["text"] == text
        wait_until(lambda: ground.await_telemetry("DL_RESULTS_PENDING", since=ground.history_index()).value == 0,
                   timeout=30, what="every result acknowledged onboard")
    finally:
        ground.close()
    assert archived_texts(tmp_path / "ground.sqlite") == jobs
