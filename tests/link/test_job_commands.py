"""`ground submit`, `ground cancel` and `ground results` against an in-process flight link with the
stand-in job source: what goes up, what is printed (text, stream, summary, --json shapes,
--no-wait), and errors as one line with a non-zero exit."""
from __future__ import annotations

import json
import time

import pytest

from flight.link.dictionary import load_dictionary
from flight.link.onboard_time import CucTime
from ground.archive import GroundArchive
from ground.cli import main as ground_main
from tests.link.conftest import open_ground
from tests.link.stand_in_jobs import stand_in_text

RESULT_FIELDS = [field.name for field in load_dictionary().result.fields]


@pytest.fixture
def cli(relay, flight, tmp_path, keyfile, capsys):
    """Run `ground ACTION ...` in this process against the flight; returns (exit code, stdout, stderr)."""
    archive = tmp_path / "cli.sqlite"
    common = ["--port", relay.ground_path, "--keys", str(keyfile), "--archive", str(archive), "--sack-interval", "0.1"]

    def run(action: str, *argv: str, connect: bool = True) -> tuple[int, str, str]:
        try:
            code = ground_main([action, *argv, *(common if connect else ["--archive", str(archive)])])
        except SystemExit as exc:  # a usage error, from argparse
            code = exc.code
        out, err = capsys.readouterr()
        return code, out, err

    run.archive = archive
    return run


def one_line(err: str) -> str:
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_submit_waits_and_prints_the_text_then_a_summary(cli, flight):
    code, out, err = cli("submit", "--prompt", "cli job", "--max-tokens", "4")
    assert code == 0 and out == stand_in_text("cli job", 4) + "\n"
    stored, summary = err.splitlines()
    job_id = int(stored.split()[1])
    assert stored == f"job {job_id} stored onboard"
    assert summary.startswith(f"job {job_id}: 4 tokens, stop limit, 0 tok/s, 0 J/token, $0/token")
    assert flight.runner.submitted[job_id]["stream"] is False


def test_submit_stream_prints_the_tokens_as_they_arrive(cli, flight):
    code, out, err = cli("submit", "--prompt", "streamed words", "--max-tokens", "70", "--stream")
    assert code == 0 and out == stand_in_text("streamed words", 70) + "\n"
    assert "incomplete" not in err and len(err.splitlines()) == 2
    [job_id] = flight.runner.submitted
    assert flight.runner.submitted[job_id]["stream"] is True


def test_submit_json_prints_one_object_and_nothing_else(cli):
    code, out, err = cli("submit", "--prompt", "as json", "--max-tokens", "3", "--json", "--stream", "--token-ids")
    assert code == 0 and err == ""
    [line] = out.splitlines()
    result = json.loads(line)
    assert list(result) == RESULT_FIELDS and result["tokens"] == 3
    assert result["text"] == stand_in_text("as json", 3) and result["stop_reason"] == "limit"
    assert len(result["token_ids"]) == 3 and all(isinstance(t, int) for t in result["token_ids"])
    assert result["joules"] == 0.0 and result["cost_usd"] == 0.0


def test_submit_no_wait_prints_the_job_id_and_sends_the_options(cli, flight):
    flight.runner.hold.set()  # the job stays queued: nothing but its storage is waited for
    code, out, err = cli("submit", "--prompt", "later", "--max-tokens", "5", "--no-wait", "--chat",
                         "--priority", "-7", "--temperature", "0.7", "--top-k", "40", "--top-p", "0.9",
                         "--seed", "1234")
    assert code == 0 and err == ""
    job_id = int(out)
    args = flight.runner.submitted[job_id]
    assert (args["chat"], args["stream"], args["priority"], args["deadline"], args["top_k"], args["seed"]) == \
        (True, False, -7, 0, 40, 1234)
    assert args["temperature"] == pytest.approx(0.7) and args["top_p"] == pytest.approx(0.9)
    code, out, err = cli("submit", "--prompt", "later too", "--max-tokens", "5", "--no-wait", "--json")
    assert code == 0 and err == ""
    other = json.loads(out)["job_id"]
    assert list(json.loads(out)) == ["job_id"] and other > job_id
    archive = GroundArchive(cli.archive, create=False)
    assert archive.job(job_id)["priority"] == -7 and archive.job(job_id)["chat"] is True
    assert archive.job(other)["priority"] == 0
    archive.close()


def test_submit_deadline_is_relative_and_counted_on_the_onboard_clock(cli, flight, monkeypatch):
    # The node's clock runs 5000 s ahead of ours; TM packets carry its time.
    monkeypatch.setattr(CucTime, "now", classmethod(lambda cls: cls.from_unix(time.time() + 5000.0)))
    time.sleep(0.3)  # housekeeping sent before the change has gone by
    code, out, err = cli("submit", "--prompt", "due soon", "--max-tokens", "2", "--deadline", "60", "--no-wait")
    assert code == 0 and err == ""
    assert flight.runner.submitted[int(out)]["deadline"] == pytest.approx(time.time() + 5060.0, abs=2.0)


def test_submit_the_node_fails_is_one_line_naming_the_reason(cli, flight):
    flight.runner.n_ctx = 8
    code, out, err = cli("submit", "--prompt", "three word prompt", "--max-tokens", "6", "--json")
    assert code == 1 and out == ""
    line = one_line(err)
    assert line.startswith("ground: JOB_SUBMIT FAILED: CONTEXT_OVERFLOW") and "context of 8 tokens" in line


def test_submit_that_times_out_says_the_job_is_stored(cli, flight):
    flight.runner.hold.set()
    code, out, err = cli("submit", "--prompt", "slow", "--max-tokens", "2", "--timeout", "0.3", "--stream")
    assert code == 1 and out == "\n" and "Traceback" not in err
    stored, line = err.splitlines()
    job_id = int(stored.split()[1])
    assert line == (f"ground: no result for job {job_id} within 0.3 s; the job is stored onboard: "
                    "`ground collect` archives its result when it comes")


@pytest.mark.parametrize("argv, code, message", [
    (["--priority", "101"], 1, "ground: priority: 101 is above the maximum 100"),
    (["--top-p", "0"], 1, "ground: top_p: 0.0 is below the minimum 0.0001"),
    (["--temperature", "nan"], 1, "ground: temperature: expected a finite f32, got nan"),
    (["--max-tokens", "0"], 1, "ground: max_tokens: 0 is below the minimum 1"),
    (["--seed", "-1"], 1, "ground: seed: expected u32, got -1"),
    (["--priority", "high"], 2, "ground submit: error: argument --priority: invalid int value: 'high'"),
    (["--deadline", "-5"], 2, "ground submit: error: argument --deadline: expected seconds above 0"),
    (["--deadline", "inf"], 2, "ground submit: error: argument --deadline: expected seconds above 0"),
])
def test_submit_bad_arguments_are_one_line_before_anything_is_opened(cli, argv, code, message):
    result, out, err = cli("submit", "--prompt", "x", *argv)
    assert result == code and out == ""
    assert one_line(err).startswith(message)
    assert not cli.archive.exists()


def test_cancel_and_the_results_of_every_kind(relay, flight, tmp_path, keyfile, cli):
    flight.runner.hold.set()
    code, out, _ = cli("submit", "--prompt", "never run", "--max-tokens", "9", "--no-wait")
    job_id = int(out)
    code, out, err = cli("cancel", str(job_id), "--json")
    assert code == 0 and err == "" and json.loads(out) == {"job_id": job_id, "status": "COMPLETED", "tokens_done": 0}
    code, out, err = cli("cancel", str(job_id))
    assert code == 1 and out == "" and one_line(err).startswith("ground: JOB_CANCEL FAILED: JOB_ENDED")
    code, out, err = cli("cancel", "12345")
    assert code == 1 and out == "" and one_line(err).startswith("ground: JOB_CANCEL FAILED: UNKNOWN_JOB")
    code, out, err = cli("cancel", "0")
    assert code == 1 and one_line(err) == "ground: job_id: 0 is below the minimum 1"
    code, out, err = cli("cancel", "five")
    assert code == 2 and "invalid int value: 'five'" in one_line(err)

    flight.runner.release()
    code, out, _ = cli("submit", "--prompt", "run me", "--max-tokens", "3", "--json")
    done = json.loads(out)["job_id"]
    ground = open_ground(relay, tmp_path, keyfile, archive="cli.sqlite")  # collects the cancelled job's result
    try:
        ground.await_result(job_id, timeout=20)
        ground.archive.complete_result(7, b"archived before results were encoded \xff", 1)
    finally:
        ground.close()

    code, out, err = cli("results", "--json", connect=False)
    assert code == 0 and err == ""
    results = {r["job_id"]: r for r in map(json.loads, out.splitlines())}
    assert list(results) == sorted(results) and set(results) == {7, job_id, done}
    assert results[job_id]["stop_reason"] == "cancelled" and results[job_id]["tokens"] == 0
    assert results[done]["text"] == stand_in_text("run me", 3) and results[done]["tokens"] == 3 and results[done]["token_ids"] == []
    assert set(RESULT_FIELDS) <= set(results[done])
    assert results[7]["text"] == "archived before results were encoded \ufffd"
    assert results[7]["error"].startswith("result is not zlib data") and "\n" not in results[7]["error"]

    code, out, err = cli("results", connect=False)
    assert code == 0 and err == ""
    assert f"--- job {job_id}: 0 tokens, stop cancelled" in out
    assert f"--- job {done}: 3 tokens, stop limit" in out and stand_in_text("run me", 3) in out
    assert "--- job 7 (" in out and "not a decodable result" in out
