"""A HIL run's report: report.json (the machine-readable verdict) and report.html (the same, with
the figures drawn by ground/reports/plots.py and the simulated-time and wall-time figures side
by side, each saying how it was obtained)."""
from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from ground.reports.plots import Series, draw_all


def time_figures(*, sim_s: float, wall_s: float, accel: float, tokens: int, compute_s: float, joules: float,
                 usd: float) -> list[dict[str, Any]]:
    """Rows of (figure, per simulated time, per wall time, how obtained)."""
    def rate(x: float, over: float) -> float | None:
        return round(x / over, 4) if over > 0 else None

    return [
        {"figure": "duration, s", "sim": round(sim_s, 1), "wall": round(wall_s, 1),
         "how": f"simulated: the environment's clock from start to end of the timeline; wall: time.monotonic() "
                f"over the whole run, start-up and the final collection included (K = {accel:g})"},
        {"figure": "tokens per second", "sim": rate(tokens, sim_s), "wall": rate(tokens, wall_s),
         "how": "tokens in the results received, over simulated and over wall time. The engine's work is real, "
                "so per simulated second the node makes K times fewer tokens than it would in flight"},
        {"figure": "tokens per compute second", "sim": None, "wall": rate(tokens, compute_s),
         "how": "tokens over the engine time the results charge (compute_s): real compute time, what flight "
                "would see"},
        {"figure": "J per token", "sim": None, "wall": rate(joules, tokens),
         "how": "the results' joules (real compute time x the compute power the node reported) over their "
                "tokens; not scaled by K"},
        {"figure": "$ per token", "sim": None, "wall": None if not tokens else usd / tokens,
         "how": "the results' cost (compute_s at the cost model's $ per compute second) over their tokens"},
    ]


def write(report: dict[str, Any], series: Series, out_dir: Path) -> None:
    """report.json, the figures' PNGs and report.html into out_dir."""
    figures = draw_all(series, out_dir) if len(series.get("t_s", [])) > 1 else []
    report["figures"] = [name for _, name in figures]
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out_dir / "report.html").write_text(_html(report, figures))


def _html(report: dict[str, Any], figures: list[tuple[str, str]]) -> str:
    e = html.escape
    verdict = "PASSED" if report["passed"] else "FAILED"
    rows = "".join(
        f"<tr class={'ok' if c['passed'] else 'bad'}><td>{e(c['name'])}</td><td>{'pass' if c['passed'] else 'FAIL'}"
        f"</td><td>{e(json.dumps(c['value'], default=str))}</td><td>{e(str(c['limit']))}</td></tr>"
        for c in report["criteria"])
    times = "".join(f"<tr><td>{e(r['figure'])}</td><td>{fmt_cell(r['sim'])}</td><td>{fmt_cell(r['wall'])}</td>"
                    f"<td>{e(r['how'])}</td></tr>" for r in report["time_figures"])
    jobs = "".join(f"<tr><td>{e(k)}</td><td>{fmt_cell(v)}</td></tr>" for k, v in report["jobs"].items())
    images = "".join(f"<figure><img src='{e(name)}' alt='{e(title)}'><figcaption>{e(title)}</figcaption></figure>"
                     for title, name in figures)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>HIL {e(report['scenario'])}: {verdict}</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:auto}} td,th{{padding:2px 8px;text-align:left}}
tr.ok td:nth-child(2){{color:green}} tr.bad td:nth-child(2){{color:#b00;font-weight:bold}}
table{{border-collapse:collapse}} tr{{border-bottom:1px solid #ddd}}</style></head><body>
<h1>HIL scenario {e(report['scenario'])}: {verdict}</h1>
<p>{e(report.get('description', ''))}</p>
<p>seed {report['seed']}, K = {report['accel']:g} simulated s per wall s, model {e(str(report['model']))}</p>
<h2>Criteria</h2><table><tr><th>criterion</th><th></th><th>value</th><th>limit</th></tr>{rows}</table>
<h2>Jobs</h2><table>{jobs}</table>
<p>tokens {report['tokens']}, J/token {fmt_cell(report['joules_per_token'])}, $/token {fmt_cell(report['usd_per_token'])}</p>
<h2>Simulated time and wall time</h2>
<table><tr><th>figure</th><th>simulated</th><th>wall</th><th>how it was obtained</th></tr>{times}</table>
<h2>Figures</h2>{images}
<p>Logs: <a href="flight.log">flight.log</a>, <a href="ground.log">ground.log</a></p>
</body></html>
"""


def fmt_cell(value: Any) -> str:
    """A value as an HTML table cell's text: floats to 4 significant digits, None as a dash."""
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))
