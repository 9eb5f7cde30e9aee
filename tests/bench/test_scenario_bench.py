"""Wall time of each shipped scenario at its default K (issue 9): every file in scenarios/ flown
by hil.run.run_scenario as `hil run` does, with its own seed, accel and model.

Figures in extra_info: wall_seconds (start-up and the post-test downlink included) and
sim_seconds, with the verdict. Marked full: the set takes many minutes; `make bench` runs it
(--full), and it skips with benchmarks disabled (make test-full), whose scenario tests fly the
same set. No time is asserted; those tests judge the criteria.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from hil.run import run_scenario

SCENARIOS = sorted((Path(__file__).resolve().parents[2] / "scenarios").glob("*.toml"))


@pytest.mark.full
@pytest.mark.parametrize("scenario", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_scenario_wall_time(benchmark, tmp_path: Path, scenario: Path) -> None:
    if not benchmark.enabled:  # make test-full flies the full set already (the scenarios' tests)
        pytest.skip("a measurement: runs under make bench")
    reports: list[dict] = []
    benchmark.pedantic(lambda: reports.append(run_scenario(scenario, out_dir=tmp_path)), rounds=1, iterations=1)
    report = reports[0]
    benchmark.extra_info.update({"accel": report["accel"], "wall_seconds": report["wall_seconds"],
                                 "sim_seconds": report["sim_seconds"], "passed": report["passed"]})
    assert report["sim_seconds"] > 0  # the scenario was flown, not refused
