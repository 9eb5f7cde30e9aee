"""Onboard recording and playback in `flight run` (issue 8): an FDIR firing while the ground is out
of contact reaches the ground at the next contact, played back with its original onboard time;
and `ground playback` fetches a time range on command.

The node runs on the synthetic model with one FDIR rule that fires on uplink silence: the ground
sends one command, then nothing (no keep-alive), so the node loses contact and the rule fires
out of contact. The ground's line stays physically up, so it also hears the event live: the
played-back copy must carry the live one's time."""
from __future__ import annotations

import json
from pathlib import Path

from ground.client import GroundClient
from tests.link.conftest import SYNTH_N_CTX, synth_node_model  # noqa: F401 (a fixture)
from tests.node.helpers import FlightRun, HilLink, ground, new_keys

CONFIG = f"""[link]
hk_period_s = 0.2
contact_timeout_s = 1.0
rto_s = 0.5
[engine]
n_ctx = {SYNTH_N_CTX}
threads = 1
[recorder]
hk_period_s = 1.0
flush_period_s = 0.2
[[fdir]]
name = "GROUND_SILENT"
channel = "LINK_SILENCE_S"
op = ">"
threshold = 2.0
persistence = 3
action = "STANDBY"
max_response_s = 1.0
"""


def test_an_fdir_firing_out_of_contact_is_played_back_at_the_next_contact(tmp_path: Path, synth_node_model: Path):
    link = HilLink()
    keys = new_keys(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    (tmp_path / "node.toml").write_text(CONFIG)
    node = FlightRun(link.flight, keys, data, tmp_path / "flight.log", "--config", str(tmp_path / "node.toml"),
                     "--model", str(synth_node_model))
    archive = tmp_path / "ground.sqlite"
    try:
        node.start()
        client = GroundClient(link.ground, keys=keys, archive=archive, sack_interval_s=None).connect()
        try:
            start = client.onboard_time(wait=5.0)
            client.send_and_await_completion("CMD_NOOP")  # contact, then silence: no keep-alive follows
            client.await_event("LINK_CONTACT_LOST", timeout=10)
            live = client.await_event("FDIR_FIRED", lambda e: e.args["rule"] == "GROUND_SILENT", timeout=10)
            since = client.history_index()
            client.send_and_await_completion("CMD_NOOP")  # contact again: the automatic playback
            regained = client.await_event("LINK_CONTACT_ACQUIRED", since=since, timeout=10).onboard_time
            played = client.await_played_back_event("FDIR_FIRED", lambda e: e.args["rule"] == "GROUND_SILENT",
                                                    since=since, timeout=20)
            archived = [e for e in client.archive.events() if e["played_back"] and e["name"] == "FDIR_FIRED"]
        finally:
            client.close()
        # The range on command, through the CLI: the same record, by its seq.
        out = ground(link.ground, keys, archive, "playback", "--from", str(start), "--kinds", "events", "--json",
                     "--timeout", "60")
    finally:
        node.stop()
        link.stop()
    assert not played.in_contact and played.event.message == live.message
    assert 0 <= live.onboard_time - played.event.onboard_time < 0.5  # recorded when emitted; the live one when sent
    assert played.event.onboard_time < regained
    assert [(e["rec_seq"], e["onboard_time"]) for e in archived] == [(played.seq, played.onboard_time)]
    assert out.returncode == 0, out.stderr
    records = [json.loads(line) for line in out.stdout.splitlines()]
    assert {"seq": played.seq, "event": "FDIR_FIRED", "onboard_time": played.onboard_time} in [
        {key: r.get(key) for key in ("seq", "event", "onboard_time")} for r in records]
    assert all(r["kind"] == "EVENT" and r["onboard_time"] >= start for r in records)
    assert f"{len(records)} records played back" in out.stderr
    assert "Traceback" not in node.log_text()
