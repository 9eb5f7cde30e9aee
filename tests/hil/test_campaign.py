"""`hil campaign` (hil/campaign.py): the runs' seeds, the aggregate of their reports, the files,
and real campaigns on Dask: a LocalCluster of two workers through the command line, an
existing scheduler, and a run that raises counted as a failed run."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from hil.campaign import RunOutcome, aggregate, run_campaign, run_seeds, write
from tests.node.helpers import BIN, REPO

SCENARIO = REPO / "scenarios" / "nominal.toml"
# The nominal scenario's first pass only (its jobs go up at 420 s), a synthetic model, high K.
SHORT = ["--set", 'scenario.model="synthetic"', "--set", "scenario.duration_s=1000", "--accel", "200"]
SHORTER = {"scenario": {"model": "synthetic", "duration_s": 600.0}}


def report(passed: bool, *, jpt: float | None = 0.2, hit: float = 1.0, failing: tuple[str, ...] = ()) -> dict[str, Any]:
    """A run's report as hil.run.run_scenario returns it, with only what the aggregate reads."""
    names = ("results_not_lost", "deadline_hit_rate", "cost_reported")
    return {"passed": passed, "criteria": [{"name": n, "passed": n not in failing, "value": 0, "limit": 0}
                                           for n in names],
            "jobs": {"submitted": 4, "delivered": 4 - ("results_not_lost" in failing), "lost": int("results_not_lost"
                                                                                                 in failing),
                     "duplicated": 0, "not_submitted": 0, "deadline_hit_rate": hit},
            "tokens": 100, "joules_per_token": jpt, "usd_per_token": None if jpt is None else jpt / 1000,
            "sim_seconds": 600.0, "wall_seconds": 10.0}


def test_run_seeds_are_distinct_reproducible_and_fit_a_scenario_seed() -> None:
    seeds = run_seeds(7, 50)
    assert seeds == run_seeds(7, 50)
    assert len(set(seeds)) == 50
    assert all(0 <= s < 2**31 for s in seeds)
    assert run_seeds(7, 3) == seeds[:3]  # more runs extend a campaign, they do not reshuffle it
    assert run_seeds(8, 3) != seeds[:3]


def test_aggregate_pass_rates_count_a_raised_run_as_failing_every_criterion() -> None:
    outcomes = [RunOutcome(2, 30, report=report(False, jpt=0.4, hit=0.5, failing=("deadline_hit_rate",))),
                RunOutcome(0, 10, report=report(True, jpt=0.2)),
                RunOutcome(3, 40, error="RunError: flight run exited 1"),
                RunOutcome(1, 20, report=report(False, jpt=None, failing=("cost_reported", "results_not_lost")))]
    result = aggregate("nominal", 5, outcomes)
    assert (result["runs"], result["completed"], result["errors"], result["passed"]) == (4, 3, 1, 1)
    assert result["pass_rate"] == 0.25
    rates = {c["name"]: (c["passed"], c["judged"], c["pass_rate"]) for c in result["criteria"]}
    assert rates == {"results_not_lost": (2, 3, 0.5), "deadline_hit_rate": (2, 3, 0.5),
                     "cost_reported": (2, 3, 0.5)}
    assert [c["name"] for c in result["criteria"]] == ["results_not_lost", "deadline_hit_rate", "cost_reported"]
    assert result["jobs"] == {"submitted": 12, "delivered": 11, "lost": 1, "duplicated": 0, "not_submitted": 0}
    jpt = result["joules_per_token"]  # the run without tokens has no J/token, the raised one nothing
    assert jpt["values"] == [0.2, 0.4] and jpt["n"] == 2 and jpt["median"] == pytest.approx(0.3)
    assert result["deadline_hit_rate"]["values"] == [1.0, 1.0, 0.5]
    assert result["deadline_hit_rate"]["min"] == 0.5
    rows = result["run_table"]
    assert [r["run"] for r in rows] == [0, 1, 2, 3]
    assert rows[3] == {"run": 3, "seed": 40, "passed": False, "error": "RunError: flight run exited 1",
                       "failed_criteria": [], "joules_per_token": None, "deadline_hit_rate": None, "tokens": None,
                       "sim_seconds": None, "wall_seconds": None}
    assert rows[1]["failed_criteria"] == ["results_not_lost", "cost_reported"]


def test_aggregate_of_runs_that_all_raised_has_empty_distributions() -> None:
    result = aggregate("nominal", 1, [RunOutcome(0, 1, error="KilledWorker: x"), RunOutcome(1, 2, error="E")])
    assert (result["passed"], result["pass_rate"], result["criteria"]) == (0, 0.0, [])
    assert result["joules_per_token"]["n"] == 0 and result["joules_per_token"]["median"] is None


def test_write_gives_json_html_and_the_figures(tmp_path: Path) -> None:
    result = aggregate("nominal", 5, [RunOutcome(0, 10, report=report(True, jpt=0.2)),
                                      RunOutcome(1, 20, report=report(False, jpt=0.3, hit=0.75,
                                                                      failing=("deadline_hit_rate",))),
                                      RunOutcome(2, 30, error="RunError: <boom> & more")])
    write(result, tmp_path)
    saved = json.loads((tmp_path / "campaign.json").read_text())
    assert saved["figures"] == ["criteria.png", "joules_per_token.png", "deadline_hit_rate.png"]
    for name in saved["figures"]:
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (tmp_path / "campaign.html").read_text()
    assert "1/3 runs passed" in page and "RunError: &lt;boom&gt; &amp; more" in page
    assert "runs/001/report.html" in page


def test_campaign_command_two_runs_on_a_local_cluster_of_two(tmp_path: Path) -> None:
    out = tmp_path / "campaign"
    proc = subprocess.run([str(BIN / "hil"), "campaign", str(SCENARIO), "--runs", "2", "--workers", "2", "--seed", "5",
                           *SHORT, "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:] + proc.stdout
    assert "nominal: 2/2 runs passed" in proc.stdout
    result = json.loads((out / "campaign.json").read_text())
    assert result["seed"] == 5 and [r["seed"] for r in result["run_table"]] == run_seeds(5, 2)
    assert result["completed"] == 2 and result["jobs"]["delivered"] == result["jobs"]["submitted"] > 0
    assert result["joules_per_token"]["n"] == 2
    for n, seed in enumerate(run_seeds(5, 2)):
        run = json.loads((out / "runs" / f"{n:03d}" / "report.json").read_text())
        assert run["seed"] == seed and run["passed"]
        assert (out / "runs" / f"{n:03d}" / "scenario.toml").read_text() == SCENARIO.read_text()
    assert (out / "campaign.html").exists()


def test_campaign_on_an_existing_scheduler(tmp_path: Path) -> None:
    from dask.distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        result = run_campaign(SCENARIO, runs=1, seed=3, out_dir=tmp_path, scheduler=cluster.scheduler_address,
                              accel=300, overrides=SHORTER)
        # the run went through this scheduler: its transition log holds the run's task
        keys = client.run_on_scheduler(lambda dask_scheduler: [str(entry[0]) for entry in dask_scheduler.transition_log])
    assert any(key.startswith("hil-run-nominal-000-") for key in keys)
    assert result["completed"] == 1 and result["passed"] == 1, result["run_table"]


def test_a_run_that_raises_is_a_failed_run_not_a_crashed_campaign(tmp_path: Path) -> None:
    bare = tmp_path / "bare.gguf"  # a model without a manifest: each run refuses it, in the worker
    bare.write_bytes(b"GGUF")
    result = run_campaign(SCENARIO, runs=2, seed=1, out_dir=tmp_path / "c", workers=1, model=bare,
                          overrides=SHORTER)
    assert (result["runs"], result["completed"], result["errors"], result["passed"]) == (2, 0, 2, 0)
    for row in result["run_table"]:
        assert row["error"].startswith("ScenarioError: model ") and "has no manifest" in row["error"]
    assert json.loads((tmp_path / "c" / "campaign.json").read_text())["errors"] == 2


@pytest.mark.parametrize("argv, message", [
    (["--runs", "0"], "expected a number of runs"),
    (["--runs", "2", "--workers", "2", "--scheduler", "tcp://127.0.0.1:1"], "not allowed with argument"),
    (["--runs", "2", "--set", "link.ber"], "expected TABLE.KEY=VALUE"),
    (["--runs", "2", "--set", "link.ber=fast"], "is not a TOML value"),
    (["--runs", "2", "--set", "orbit.x=1"], "override 'orbit'"),
    (["--runs", "2", "--set", "link.ber=-1"], "link.ber must be at least 0"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, argv: list[str], message: str) -> None:
    proc = subprocess.run([str(BIN / "hil"), "campaign", str(SCENARIO), *argv, "--out", str(tmp_path / "c")],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "c" / "campaign.json").exists()


def test_missing_scenario_is_one_line_and_exit_2(tmp_path: Path) -> None:
    proc = subprocess.run([str(BIN / "hil"), "campaign", str(tmp_path / "none.toml"), "--runs", "1"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.startswith("hil campaign: cannot read")
