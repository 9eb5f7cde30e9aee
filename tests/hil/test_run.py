"""`hil run` end to end: flight run, the environment, the link emulator, the ground client, the
faults and the verdict, all real processes and ptys.

Short forms run under `make test`: each shipped scenario cut to its first pass (a fraction of an
orbit) at a high K on the synthetic model, with a short scrub period so the post-test wait for
upsets stays short, and power levels of the same watts but far higher token rates, so that the
jobs sized for the real model's pace end within the short form (the node paces the engine to its
power level's tokens/s). The shipped files at their own K, on the real model, are the long forms
(`make test-full`)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hil.run import run_scenario

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = REPO / "scenarios"
HIL = str(Path(sys.executable).with_name("hil"))
QUICK = {"engine": {"scrub_period_s": 3.0},
         "power_levels": [{"name": "LOW", "watts": 7.0, "tokens_per_s": 2000.0},
                          {"name": "MID", "watts": 15.0, "tokens_per_s": 4000.0},
                          {"name": "HIGH", "watts": 25.0, "tokens_per_s": 8000.0}]}


def short(duration_s: float, accel: float) -> dict[str, Any]:
    return {"scenario": {"duration_s": duration_s, "accel": accel, "model": "synthetic"}, "flight": QUICK}


def failed(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in report["criteria"] if not c["passed"]]


def criterion(report: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in report["criteria"] if c["name"] == name)


def test_nominal_short(tmp_path):
    report = run_scenario(SCENARIOS / "nominal.toml", seed=1, out_dir=tmp_path, overrides=short(1000, 200))
    assert report["passed"], failed(report)
    assert report["jobs"]["submitted"] == 4 and report["jobs"]["delivered"] == 4 and report["tokens"] > 0
    assert report["sim_seconds"] == pytest.approx(1000, abs=2) and report["wall_seconds"] < 60
    assert {"report.json", "report.html", "flight.log", "ground.log", "battery.png", "link.png"} <= \
        {p.name for p in tmp_path.iterdir()}


def test_crash_recovery_short(tmp_path):
    report = run_scenario(SCENARIOS / "crash_recovery.toml", seed=6, out_dir=tmp_path, overrides=short(820, 50))
    assert report["passed"], failed(report)
    assert report["flight_starts"] == 1 + 5  # five kills inside the short form, each restarted
    assert report["jobs"]["delivered"] == report["jobs"]["submitted"] == 6


def test_bad_link_short(tmp_path):
    report = run_scenario(SCENARIOS / "bad_link.toml", seed=5, out_dir=tmp_path, overrides=short(1000, 80))
    assert report["passed"], failed(report)
    radio = report["link"]["downlink"]
    assert radio["bits_flipped"] > 0 or radio["bytes_lost_dropout"] > 0  # the link was really bad
    assert report["sensor_bus"]["readings_sent"] > 0


def test_radiation_storm_short(tmp_path):
    report = run_scenario(SCENARIOS / "radiation_storm.toml", seed=4, out_dir=tmp_path, overrides=short(900, 100))
    assert report["passed"], failed(report)
    seu = criterion(report, "seu_repaired_in_time")["value"]
    assert seu["injected"] >= 20 and seu["missed"] == 0  # the 20-flip burst at least, each repaired


def test_eclipse_heavy_short(tmp_path):
    report = run_scenario(SCENARIOS / "eclipse_heavy.toml", seed=2, out_dir=tmp_path, overrides=short(1100, 200))
    assert report["passed"], failed(report)
    assert criterion(report, "safe_after_brownout")["passed"]


def test_hot_case_short(tmp_path):
    report = run_scenario(SCENARIOS / "hot_case.toml", seed=3, out_dir=tmp_path, overrides=short(1200, 100))
    assert report["passed"], failed(report)


def test_a_failed_criterion_is_exit_1_with_the_report_written(tmp_path):
    scenario = tmp_path / "empty.toml"
    scenario.write_text('[scenario]\nname = "empty"\nduration_s = 60\naccel = 20\nmodel = "synthetic"\n'
                        "[environment]\nseu_rate_per_bit_day = 0.0\n[criteria]\nmin_delivered = 1\n")
    done = subprocess.run([HIL, "run", str(scenario), "--out", str(tmp_path / "out")], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1, done.stderr
    assert "FAIL  results_not_lost" in done.stdout
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["passed"] is False and saved["jobs"]["submitted"] == 0


@pytest.mark.full
@pytest.mark.parametrize("name", ["nominal", "eclipse_heavy", "hot_case", "radiation_storm", "bad_link",
                                  "crash_recovery"])
def test_shipped_scenario_passes_at_its_default_k(tmp_path, name):
    report = run_scenario(SCENARIOS / f"{name}.toml", out_dir=tmp_path)
    assert report["passed"], failed(report)
