"""FDIR in the real `flight run`, with `hil link --pty` and a ground client (issue 8).

The engine process killed (kill -9) or hung (SIGSTOP) under a running job is restarted by the
shipped table's rule (ENGINE_DIED, ENGINE_HUNG), within the rule's max_response_s, and the job
ends with the tokens of an uninterrupted `flight generate`; with ENGINE_DIED disabled by
FDIR_RULE_ENABLE a dead engine stays down, reported, until the rule is enabled again. Command
loss, with a [[fdir]] table whose COMMAND_LOSS waits seconds instead of a day: the radio port
goes back to its default rate, which is reported, and the result made before the loss is still
onboard and delivered at the next contact.
"""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from flight.executive.fdir import DEFAULT_RULES
from flight.link.dictionary import load_dictionary
from flight.link.job_result import decode_result
from ground.client import CommandError, GroundClient
from tests.node.helpers import FlightRun, HilLink, flight_generate, new_keys, write_config

PROMPT = "The three most useful things a satellite in low Earth orbit can do are"
SAMPLING = dict(temperature=0.8, seed=99)
N_TOKENS = 200
SHIPPED = {rule.name: rule for rule in DEFAULT_RULES}
D = load_dictionary()


@pytest.fixture
def link():
    hil = HilLink()
    yield hil
    hil.stop()


@pytest.fixture(scope="module")
def reference() -> dict:
    return flight_generate(PROMPT, N_TOKENS, "--temperature", str(SAMPLING["temperature"]),
                           "--seed", str(SAMPLING["seed"]))


def start_node(link: HilLink, tmp_path: Path, config: str = "", *extra: str) -> tuple[FlightRun, Path]:
    keys = new_keys(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    node = FlightRun(link.flight, keys, data, tmp_path / "flight.log",
                     "--config", str(write_config(tmp_path / "n.toml", config)), *extra)
    node.start()
    return node, keys


@pytest.mark.parametrize("fault", ["killed", "hung", "killed, ENGINE_DIED disabled"])
def test_a_dead_or_hung_engine_is_restarted_by_its_rule_and_the_job_resumes(link, tmp_path, reference, fault):
    node, keys = start_node(link, tmp_path)  # the shipped rules
    client = GroundClient(link.ground, keys=keys, archive=tmp_path / "ground.sqlite", sack_interval_s=0.2).connect()
    disabled = "disabled" in fault
    died = D.enum_value("ENGINE_FAULT", "DIED")
    try:
        client.await_telemetry("LINK_CONTACT", lambda v: v is True, timeout=20)
        pid = client.await_telemetry("ENGINE_PID", lambda v: v > 0, timeout=20).value
        if disabled:
            client.send_and_await_completion("FDIR_RULE_ENABLE", rule="ENGINE_DIED", enabled=False)
        job = client.submit_job(PROMPT, N_TOKENS, token_ids=True, timeout=5.0, **SAMPLING)
        client.await_telemetry("ENGINE_TOKENS", lambda v: v >= 20, timeout=30)
        mark = client.history_index()
        os.kill(pid, signal.SIGSTOP if fault == "hung" else signal.SIGKILL)
        if disabled:
            client.await_event("ENGINE_ISOLATED", since=mark, timeout=10)
            down = client.history_index()
            with pytest.raises(TimeoutError):  # ENGINE_DIED would have answered within 0.5 s
                client.await_event("ENGINE_RESTARTED", since=mark, timeout=2.0)
            assert client.await_telemetry("ENGINE_FAULT", since=down, timeout=5).value == died
            assert client.await_telemetry("ENGINE_PID", since=down, timeout=5).value == 0
            assert client.archive.result(job) is None
            with pytest.raises(CommandError) as refused:  # at once, not after a tokenize timeout
                client.submit_job(PROMPT, 8, timeout=5.0)
            assert refused.value.response.reason == "ENGINE_UNAVAILABLE"
            mark = client.history_index()
            client.send_and_await_completion("FDIR_RULE_ENABLE", rule="ENGINE_DIED", enabled=True)
        fired = client.await_event("FDIR_FIRED", since=mark, timeout=30)
        restarted = client.await_event("ENGINE_RESTARTED", since=mark, timeout=30)
        result = decode_result(client.await_result(job, timeout=120))
        new_pid = client.await_telemetry("ENGINE_PID", lambda v: v not in (0, pid), since=mark, timeout=10).value
        fault_now = client.await_telemetry("ENGINE_FAULT", since=client.history_index(), timeout=5).value
    finally:
        client.close()
        node.stop()
    rule = "ENGINE_HUNG" if fault == "hung" else "ENGINE_DIED"
    assert (fired.args["rule"], fired.args["action"]) == (rule, "ENGINE_RESTART")
    assert fired.args["latency_ms"] <= SHIPPED[rule].max_response_s * 1000 and fired.args["late"] == ""
    assert fired.args["count"] == 1  # the rule's own firing counter
    cause = "SILENT" if fault == "hung" else "DIED"
    assert restarted.args["cause"] == D.enum_value("ENGINE_RESTART_CAUSE", cause)
    assert new_pid != pid and fault_now == D.enum_value("ENGINE_FAULT", "NONE")
    assert result["restarts"] == 1
    assert result["token_ids"] == reference["tokens"] and result["text"] == reference["text"]
    assert "Traceback" not in node.log_text()


COMMAND_LOSS = """
[[fdir]]
name = "COMMAND_LOSS"
channel = "LINK_SILENCE_S"
op = ">"
threshold = 4.0
persistence = 5
action = "LINK_RESET"
max_response_s = 1.0
"""


def test_command_loss_resets_the_radio_port_and_keeps_the_result_for_the_next_contact(link, tmp_path):
    # started at 57600 baud: the reset is to the default 115200 (a pty carries either)
    node, keys = start_node(link, tmp_path, COMMAND_LOSS, "--baud", "57600")
    archive = tmp_path / "ground.sqlite"
    try:
        # a session that only commands (no SACKs): after its job, nothing goes up at all
        client = GroundClient(link.ground, keys=keys, archive=archive, sack_interval_s=None).connect()
        try:
            job = client.submit_job("Solar panels", 16, timeout=5.0)
            mark = client.history_index()
            client.await_event("JOB_FINISHED", since=mark, timeout=20)
            reset = client.await_event("LINK_PORT_RESET", since=mark, timeout=20)
            fired = client.await_event("FDIR_FIRED", since=mark, timeout=5)
            pending = client.await_telemetry("DL_RESULTS_PENDING", since=client.history_index(), timeout=5).value
            with pytest.raises(TimeoutError):  # once per episode, not every tick
                client.await_event("LINK_PORT_RESET", since=client.history_index(), timeout=1.0)
        finally:
            client.close()
        # the next contact: SACKs go up, and the result kept onboard is delivered
        client = GroundClient(link.ground, keys=keys, archive=archive, sack_interval_s=0.2).connect()
        try:
            mark = client.history_index()
            client.await_telemetry("LINK_CONTACT", lambda v: v is True, since=mark, timeout=20)
            delivered = client.await_event("DL_RESULT_DELIVERED", since=mark, timeout=20)
            assert decode_result(client.await_result(job, timeout=20))["tokens"] > 0
        finally:
            client.close()
    finally:
        node.stop()
    assert (fired.args["rule"], fired.args["action"]) == ("COMMAND_LOSS", "LINK_RESET")
    assert fired.args["value"] > 4.0 and fired.args["late"] == "" and fired.args["latency_ms"] <= 1000
    assert reset.args["baud"] == 115200 and reset.args["silence_s"] >= 4
    assert pending >= 1 and delivered.args["job_id"] == job
    assert "Traceback" not in node.log_text()
