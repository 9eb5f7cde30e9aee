"""Weight scrubbing in `flight run` with the real model, driven from the ground: TEST_INJECT_SEU
flips a bit of the live weights, the scrubber detects it, the FDIR rule WEIGHT_UPSET has it
repaired within its stated time, every step is an event and a counter, and a greedy job after
the repair gives the tokens it gave before the flip."""
from __future__ import annotations

import gguf
import pytest

from flight.engine.model_path import default_model_path
from flight.link.job_result import decode_result
from ground.client import CommandError, GroundClient, HazardousCommandError
from tests.node.helpers import FlightRun, HilLink, new_keys, write_config

PROMPT = "Radiation in low Earth orbit flips bits in memory because"
PERIOD_S = 2.0


@pytest.fixture
def link():
    hil = HilLink()
    yield hil
    hil.stop()


def test_an_injected_upset_is_detected_repaired_and_the_tokens_are_unchanged(link, tmp_path):
    keys = new_keys(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    config = write_config(tmp_path / "n.toml", f"\n[engine]\nscrub_period_s = {PERIOD_S}\n")
    node = FlightRun(link.flight, keys, data, tmp_path / "flight.log", "--config", str(config))
    norm = next(t for t in gguf.GGUFReader(default_model_path()).tensors if t.name == "output_norm.weight")
    offset = int(norm.data_offset) + 3  # an exponent octet of a weight every token's logits use
    node.start()
    client = GroundClient(link.ground, keys=keys, archive=tmp_path / "ground.sqlite", sack_interval_s=0.2).connect()
    try:
        client.await_telemetry("SCRUB_PASSES", lambda v: v >= 1, timeout=30)
        before = decode_result(client.await_result(client.submit_job(PROMPT, 24, token_ids=True), timeout=60))

        with pytest.raises(HazardousCommandError):  # the ground refuses to send it unconfirmed
            client.send_and_await_completion("TEST_INJECT_SEU", offset=offset, bit=6)
        with pytest.raises(CommandError) as beyond:
            client.send_and_await_completion("TEST_INJECT_SEU", confirm_hazardous=True, offset=1 << 40, bit=0)
        assert beyond.value.response.reason == "BAD_ARGUMENT"

        mark = client.history_index()
        done = client.send_and_await_completion("TEST_INJECT_SEU", confirm_hazardous=True, offset=offset, bit=6)
        block = done.data["block"]
        assert done.data["offset"] == offset and done.data["bit"] == 6
        detected = client.await_event("SCRUB_UPSET_DETECTED", since=mark, timeout=PERIOD_S + 5)
        fired = client.await_event("FDIR_FIRED", lambda e: e.args["rule"] == "WEIGHT_UPSET", since=mark, timeout=10)
        repaired = client.await_event("SCRUB_UPSET_REPAIRED", since=mark, timeout=10)
        assert detected.args["block"] == repaired.args["block"] == block
        assert fired.args["action"] == "SCRUB_REPAIR" and fired.args["latency_ms"] <= 1000 and not fired.args["late"]
        hk = client.await_telemetry("SCRUB_UPSETS_REPAIRED", lambda v: v == 1, timeout=10)
        assert hk.value == 1

        scrubbed = client.send_and_await_completion("SCRUB_NOW")
        assert scrubbed.data["bad"] == [] and scrubbed.data["blocks"] > 1000

        after = decode_result(client.await_result(client.submit_job(PROMPT, 24, token_ids=True), timeout=60))
        assert after["token_ids"] == before["token_ids"]

        mark = client.history_index()
        random_flip = client.send_and_await_completion("TEST_INJECT_SEU", confirm_hazardous=True, random=True)
        again = client.await_event("SCRUB_UPSET_REPAIRED", since=mark, timeout=PERIOD_S + 10)
        assert again.args["block"] == random_flip.data["block"]
        client.await_telemetry("SCRUB_UPSETS_REPAIRED", lambda v: v == 2, since=mark, timeout=10)
        channels = client.latest_housekeeping()
        assert channels["SCRUB_UPSETS_DETECTED"] == channels["SCRUB_UPSETS_REPAIRED"] == 2
        assert channels["SCRUB_UPSETS_PENDING"] == 0 and channels["SCRUB_FLASH_CORRUPT"] == 0
        assert 0 < channels["SCRUB_CPU_SHARE"] < 0.05  # the 2 s test period; the default's share is benchmarked
    finally:
        client.close()
        node.stop()
    assert "Traceback" not in node.log_text()
