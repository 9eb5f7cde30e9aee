"""The report files from recorded data: the figures (ground/reports/plots.py) are real PNGs,
report.json holds the issue's keys and report.html shows the verdict, criteria and time figures."""
from __future__ import annotations

import json
import math

import pytest

from ground.reports.plots import FIGURES, draw_all
from hil import report

PNG = b"\x89PNG\r\n\x1a\n"


def series(n: int = 50) -> dict[str, list[float]]:
    t = [60.0 * i for i in range(n)]
    return {"t_s": t, "soc": [0.6 + 0.2 * math.sin(x / 900) for x in t], "floor_soc": [0.3] * n,
            "solar_w": [max(0.0, 90 * math.sin(x / 900)) for x in t], "load_w": [20.0] * n, "compute_w": [12.0] * n,
            "board_c": [40.0] * n, "radiator_c": [20.0] * n, "limit_c": [85.0] * n,
            "mode": [math.nan] * 3 + [3.0] * (n - 3), "tokens_per_s": [80.0] * n, "contact": [i % 10 < 2 for i in
                                                                                           range(n)],
            "up_bytes": [10.0 * i for i in range(n)], "down_bytes": [100.0 * i for i in range(n)],
            "submitted": [min(i, 4) for i in range(n)], "delivered": [min(max(i - 5, 0), 4) for i in range(n)]}


def test_every_figure_is_drawn_as_a_png(tmp_path):
    drawn = draw_all(series(), tmp_path)
    assert [name for _, name in drawn] == [name for _, name, _, _ in FIGURES]
    for _, name in drawn:
        assert (tmp_path / name).read_bytes().startswith(PNG)


def test_a_figure_without_its_columns_is_left_out_and_ragged_columns_are_refused(tmp_path):
    only_battery = {"t_s": [0.0, 1.0], "soc": [0.5, 0.6]}
    assert draw_all(only_battery, tmp_path) == [("Battery state of charge", "battery.png")]
    with pytest.raises(ValueError):
        draw_all({"t_s": [0.0, 1.0], "soc": [0.5]}, tmp_path)


def test_report_json_and_html(tmp_path):
    verdict = {"scenario": "x", "description": "d <b>", "seed": 1, "accel": 50.0, "model": "synthetic",
               "passed": False,
               "criteria": [{"name": "battery_above_floor", "passed": True, "value": 40.0, "limit": 30.0},
                            {"name": "deadline_hit_rate", "passed": False, "value": 0.5, "limit": 0.9}],
               "jobs": {"submitted": 2, "delivered": 2, "lost": 0, "duplicated": 0, "deadline_hit_rate": 0.5},
               "tokens": 20, "joules_per_token": 0.2, "usd_per_token": 1e-4, "sim_seconds": 3000.0,
               "wall_seconds": 70.0,
               "time_figures": report.time_figures(sim_s=3000.0, wall_s=70.0, accel=50.0, tokens=20, compute_s=0.5,
                                                   joules=4.0, usd=0.002)}
    report.write(verdict, series(), tmp_path)
    saved = json.loads((tmp_path / "report.json").read_text())
    assert {"scenario", "seed", "passed", "criteria", "jobs", "tokens", "joules_per_token", "usd_per_token",
            "sim_seconds", "wall_seconds"} <= saved.keys()
    assert saved["figures"] == [name for _, name, _, _ in FIGURES]
    page = (tmp_path / "report.html").read_text()
    assert "FAILED" in page and "d &lt;b&gt;" in page and "deadline_hit_rate" in page
    assert all(f"src='{name}'" in page for name in saved["figures"])
    rows = {row["figure"]: row for row in saved["time_figures"]}
    assert rows["tokens per second"]["sim"] == round(20 / 3000, 4) and rows["J per token"]["wall"] == 0.2
