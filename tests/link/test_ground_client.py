"""The ground client library and the `ground` command line, against a live flight link service."""
import pytest

from flight.link.dictionary import ValueCheckError
from ground.cli import main as ground_main
from tests.link.helpers import hk_value
from tests.link.stand_in_jobs import result_text, stand_in_text


def test_arguments_are_checked_before_anything_is_sent(ground):
    sent_before = ground.archive.query("SELECT value FROM counters WHERE name LIKE 'arsn:%'")
    with pytest.raises(ValueCheckError):
        ground.send_command("LINK_SET_HK_PERIOD", period_ms=1)
    with pytest.raises(ValueCheckError):
        ground.send_command("LINK_PING")
    with pytest.raises(KeyError):
        ground.send_command("LINK_SELF_DESTRUCT")
    with pytest.raises(ValueError, match="hazardous"):
        ground.send_command("STORE_PURGE_DELIVERED")
    assert ground.archive.query("SELECT value FROM counters WHERE name LIKE 'arsn:%'") == sent_before


def test_await_times_out_cleanly(ground):
    with pytest.raises(TimeoutError, match="event JOB_FAILED"):
        ground.await_event("JOB_FAILED", timeout=0.2)


def test_histories_can_be_cleared(ground):
    ground.send_and_await_completion("CMD_NOOP")
    ground.await_event("CMD_NOOP_RECEIVED")
    ground.clear_histories()
    with pytest.raises(TimeoutError):
        ground.await_event("CMD_NOOP_RECEIVED", timeout=0.3)


def test_submit_job_streams_tokens_and_collects_result(ground):
    job_id = ground.submit_job("tokens in orbit", 100, stream=True)
    text = stand_in_text("tokens in orbit", 100)
    assert result_text(ground.await_result(job_id, timeout=20)) == text
    ground.await_event("JOB_FINISHED", lambda e: e.args["job_id"] == job_id)
    assert ground.streamed_text(job_id) == text  # nothing was lost on this clean line
    assert result_text(ground.results()[job_id]) == text


def test_a_job_not_submitted_to_stream_streams_nothing(ground):
    since = ground.history_index()
    job_id = ground.submit_job("quiet please", 40)
    assert result_text(ground.await_result(job_id, timeout=20)) == stand_in_text("quiet please", 40)
    ground.await_event("JOB_FINISHED", lambda e: e.args["job_id"] == job_id, since=since)
    assert ground.streamed_text(job_id) == ""
    reading = ground.await_telemetry("JOB_QUEUE_DEPTH")
    assert reading.limit_state == "nominal"


def test_hazardous_command_with_confirmation(relay, tmp_path, keyfile, flight, ground):
    flight.service.register_handler("STORE_PURGE_DELIVERED", lambda args, origin: {"count": flight.service.results.purge_delivered()})
    job_id = ground.submit_job("purge me", 2)
    ground.await_result(job_id)
    hk_value(ground, "DL_RESULTS_PENDING", lambda v: v == 0)
    response = ground.send_and_await_completion("STORE_PURGE_DELIVERED", confirm_hazardous=True)
    assert response.data == {"count": 1}
    assert flight.service.results.result(job_id) is None


def test_cli_send_submit_results(relay, flight, tmp_path, keyfile, capsys):
    common = ["--port", relay.ground_path, "--keys", str(keyfile), "--archive", str(tmp_path / "cli.sqlite"),
              "--sack-interval", "0.1"]
    assert ground_main(["send", "LINK_PING", "token=0x10", *common]) == 0
    assert "COMPLETED {'token': 16}" in capsys.readouterr().out
    assert ground_main(["send", "LINK_SET_HK_PERIOD", "period_ms=5", *common]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("ground: ") and "minimum" in err and "\n" not in err
    assert ground_main(["send", "STORE_PURGE_DELIVERED", *common]) == 1
    assert "hazardous" in capsys.readouterr().err
    assert ground_main(["submit", "--prompt", "cli job", "--max-tokens", "4", *common]) == 0
    assert capsys.readouterr().out.strip() == "cli job cli job"
    assert ground_main(["results", "--archive", str(tmp_path / "cli.sqlite")]) == 0
    assert "cli job cli job" in capsys.readouterr().out


def test_cli_reports_bad_key_file(tmp_path, capsys):
    path = tmp_path / "keys.json"
    path.write_text("{}")
    path.chmod(0o644)
    assert ground_main(["send", "CMD_NOOP", "--port", "loop://", "--keys", str(path),
                        "--archive", str(tmp_path / "a.sqlite")]) == 1
    assert "chmod 600" in capsys.readouterr().err


def test_cli_stops_quietly_when_its_reader_goes_away(tmp_path):
    # `ground monitor | head` closes the pipe under the CLI: no traceback, the shell's 141
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-u", "-m", "ground.cli", "keygen", "--out", str(tmp_path / "k.json")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141
    assert "Traceback" not in err and "BrokenPipeError" not in err
