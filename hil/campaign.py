"""`hil campaign`: Monte Carlo over a scenario's random parts, its runs spread over Dask workers.

    result = run_campaign("scenarios/nominal.toml", runs=20, seed=7, out_dir=Path("out"), workers=2)

Each run is hil.run.run_scenario with its own seed; the seed is what draws a run's random parts
(the radiation's upsets and the SEU bursts' offsets, the link's bit errors, bursts and dropouts).
The runs' seeds are spawned from the campaign's (numpy SeedSequence), so a campaign replays run
for run, and any one run replays alone: `hil run DIR/runs/NNN/scenario.toml --seed S`.

Where the runs go: a dask.distributed LocalCluster of `workers` worker processes, one thread
each (a run starts `flight run` and ptys and keeps several threads of its own busy, so workers
are processes and take one run at a time), or the existing scheduler at `scheduler`. The
scenario is shipped to the workers as text, so a remote worker needs no copy of the file; a
--model path must exist on every worker, and a remote worker's run files stay on its machine
(its report comes back through Dask).

What comes back is aggregated (`aggregate`) into DIR/campaign.json and DIR/campaign.html: the
pass rate of the runs and of each criterion, the distributions of J/token and of the deadline
hit rate, and one row per run. A run that raises, or whose worker dies, is a failed run with its
error's line, not a failed campaign.
"""
from __future__ import annotations

import html
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hil.report import fmt_cell
from hil.scenario import MAX_ACCEL, ScenarioError, load

SEED_BOUND = 2**31  # run seeds fit a scenario file's `seed` key (hil/scenario.py allows 0..2**31)
CONNECT_TIMEOUT_S = 10.0  # to reach an existing scheduler


class CampaignError(ValueError):
    """A campaign that cannot be started (bad input, an unreachable scheduler); one line."""


@dataclass(frozen=True)
class RunOutcome:
    """One run of the campaign: its report, or the error that took its place."""

    index: int
    seed: int
    report: dict[str, Any] | None = None
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.report is not None and bool(self.report["passed"])


def run_seeds(seed: int, runs: int) -> list[int]:
    """The runs' seeds: independent streams spawned from the campaign's, the same for the same seed."""
    children = np.random.SeedSequence(seed).spawn(runs)
    return [int(child.generate_state(1, np.uint32)[0]) % SEED_BOUND for child in children]


def one_run(scenario_text: str, *, seed: int, out_dir: str, accel: float | None, model: str | None,
            overrides: dict[str, Any] | None) -> dict[str, Any]:
    """What a worker runs: the scenario written into the run's directory (its record, and a worker
    on another machine has no copy), then flown."""
    from hil.run import run_scenario  # in the worker: the client needs none of the runner's imports

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    scenario = out / "scenario.toml"
    scenario.write_text(scenario_text)
    return run_scenario(scenario, seed=seed, out_dir=out, accel=accel, model=model, overrides=overrides)


def run_campaign(scenario_path: str | Path, *, runs: int, out_dir: str | Path, seed: int | None = None,
                 workers: int | None = None, scheduler: str | None = None, accel: float | None = None,
                 model: str | Path | None = None, overrides: dict[str, Any] | None = None,
                 progress: bool = False) -> dict[str, Any]:
    """Fly the campaign and return its aggregate (also written to out_dir). CampaignError or
    ScenarioError (one line) for input that cannot be used, raised before any run starts; with
    progress, a rich progress bar on stderr once the runs are under way."""
    from dask.distributed import Client, LocalCluster, as_completed

    if runs < 1:
        raise CampaignError(f"runs must be at least 1, got {runs}")
    if scheduler is not None and workers is not None:
        raise CampaignError("--workers is for the local cluster: an existing scheduler has its own workers")
    if workers is not None and workers < 1:
        raise CampaignError(f"workers must be at least 1, got {workers}")
    if accel is not None and not 0 < accel <= MAX_ACCEL:
        raise CampaignError(f"accel must be above 0 and at most {MAX_ACCEL:g}, got {accel!r}")
    scenario = load(scenario_path)
    if overrides:
        scenario = scenario.with_overrides(overrides)  # bad overrides fail here, once, not in every run
    if model is not None and not Path(model).is_file():
        raise ScenarioError(f"model {model}: no such file")
    text = Path(scenario_path).read_text()
    campaign_seed = scenario.seed if seed is None else seed
    seeds = run_seeds(campaign_seed, runs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    cluster = None
    outcomes: list[RunOutcome] = []
    try:
        if scheduler is None:
            # dashboard off: it needs bokeh and a port, and nobody watches it here
            cluster = LocalCluster(n_workers=workers or os.cpu_count() or 1, threads_per_worker=1, processes=True,
                                   dashboard_address=None)
            client = Client(cluster)
        else:
            try:
                client = Client(scheduler, timeout=CONNECT_TIMEOUT_S)
            except (OSError, TimeoutError, ValueError) as exc:
                raise CampaignError(f"cannot reach the Dask scheduler at {scheduler}: "
                                    f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
        with client, _Progress(scenario.name, runs, enabled=progress) as bar:
            futures = {client.submit(one_run, text, seed=s, out_dir=str((out / "runs" / f"{i:03d}").resolve()),
                                     accel=accel, model=None if model is None else str(Path(model).resolve()),
                                     overrides=overrides, key=f"hil-run-{scenario.name}-{i:03d}-{s}", pure=False): (i, s)
                       for i, s in enumerate(seeds)}
            for future in as_completed(futures):
                index, run_seed = futures[future]
                try:
                    outcome = RunOutcome(index, run_seed, report=future.result())
                except (KeyboardInterrupt, SystemExit):
                    raise
                except BaseException as exc:  # noqa: BLE001 (also dask's CancelledError, a BaseException)
                    outcome = RunOutcome(index, run_seed, error=_one_line(exc))
                outcomes.append(outcome)
                bar.done(outcome)
    finally:
        if cluster is not None:
            cluster.close()
    result = aggregate(scenario.name, campaign_seed, outcomes)
    # what a run needs besides its scenario.toml and seed to be flown again alone
    result.update(overrides=overrides or {}, accel=accel, model=None if model is None else str(model))
    write(result, out)
    return result


class _Progress:
    """The rich progress bar over the runs, with the failures so far beside it (or nothing)."""

    def __init__(self, name: str, runs: int, *, enabled: bool):
        self._bar = None
        self._failed = 0
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(TextColumn("[bold]campaign {task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("{task.fields[status]}"), console=Console(stderr=True))
            self._task = self._bar.add_task(name, total=runs, status="")

    def __enter__(self) -> _Progress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def done(self, outcome: RunOutcome) -> None:
        self._failed += not outcome.passed
        if self._bar is not None:
            self._bar.update(self._task, advance=1, status=f"{self._failed} failed")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


# --- the aggregate -------------------------------------------------------------------------------


def distribution(values: list[float]) -> dict[str, Any]:
    """Summary of a sample: n, mean, std, min, p05, median, p95, max (None for an empty sample)."""
    if not values:
        return {"n": 0, "mean": None, "std": None, "min": None, "p05": None, "median": None, "p95": None,
                "max": None, "values": []}
    a = np.asarray(values, dtype=float)
    return {"n": len(values), "mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(values) > 1 else 0.0,
            "min": float(a.min()), "p05": float(np.percentile(a, 5)), "median": float(np.median(a)),
            "p95": float(np.percentile(a, 95)), "max": float(a.max()), "values": [float(v) for v in values]}


def aggregate(scenario: str, seed: int, outcomes: list[RunOutcome]) -> dict[str, Any]:
    """campaign.json's content from the runs' outcomes, in any order.

    Pass rates are over every run: a run that raised judged nothing, so it counts as failing each
    criterion (`judged` says how many runs did judge it). The distributions are over the runs
    that produced the figure (J/token is None for a run that delivered no token)."""
    outcomes = sorted(outcomes, key=lambda o: o.index)
    total = len(outcomes)
    reports = [o.report for o in outcomes if o.report is not None]
    names: list[str] = []
    for report in reports:  # criteria in the runner's order, first seen first
        names.extend(c["name"] for c in report["criteria"] if c["name"] not in names)
    criteria = []
    for name in names:
        verdicts = [c["passed"] for r in reports for c in r["criteria"] if c["name"] == name]
        passed = sum(1 for v in verdicts if v)
        criteria.append({"name": name, "passed": passed, "judged": len(verdicts),
                         "pass_rate": passed / total if total else 0.0})
    jobs = {key: sum(int(r["jobs"].get(key, 0)) for r in reports)
            for key in ("submitted", "delivered", "lost", "duplicated", "not_submitted")}
    passed = sum(1 for o in outcomes if o.passed)

    def figure(key: str, report: dict[str, Any]) -> float | None:
        value = report["jobs"][key] if key == "deadline_hit_rate" else report.get(key)
        return None if value is None or not math.isfinite(value) else float(value)

    rows = []
    for o in outcomes:
        r = o.report
        rows.append({"run": o.index, "seed": o.seed, "passed": o.passed, "error": o.error,
                     "failed_criteria": [c["name"] for c in r["criteria"] if not c["passed"]] if r else [],
                     "joules_per_token": figure("joules_per_token", r) if r else None,
                     "deadline_hit_rate": figure("deadline_hit_rate", r) if r else None,
                     "tokens": r["tokens"] if r else None,
                     "sim_seconds": r["sim_seconds"] if r else None, "wall_seconds": r["wall_seconds"] if r else None})
    return {
        "scenario": scenario, "seed": seed, "runs": total, "completed": len(reports),
        "errors": total - len(reports), "passed": passed, "pass_rate": passed / total if total else 0.0,
        "criteria": criteria, "jobs": jobs,
        "joules_per_token": distribution([v for row in rows if (v := row["joules_per_token"]) is not None]),
        "deadline_hit_rate": distribution([v for row in rows if (v := row["deadline_hit_rate"]) is not None]),
        "usd_per_token": distribution([float(r["usd_per_token"]) for r in reports if r.get("usd_per_token") is not None]),
        "wall_seconds": distribution([float(r["wall_seconds"]) for r in reports]),
        "run_table": rows,
    }


# --- the files -----------------------------------------------------------------------------------


def write(result: dict[str, Any], out_dir: Path) -> None:
    """campaign.json, the figures' PNGs and campaign.html into out_dir."""
    from ground.reports.plots import draw_campaign

    figures = draw_campaign(result, out_dir)
    result["figures"] = [name for _, name in figures]
    (out_dir / "campaign.json").write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / "campaign.html").write_text(_html(result, figures))


def _html(result: dict[str, Any], figures: list[tuple[str, str]]) -> str:
    e = html.escape
    criteria = "".join(f"<tr><td>{e(c['name'])}</td><td>{c['passed']}/{result['runs']}</td>"
                       f"<td>{100 * c['pass_rate']:.1f} %</td><td>{c['judged']}</td></tr>" for c in result["criteria"])
    stats = ("n", "mean", "std", "min", "p05", "median", "p95", "max")
    dists = "".join(f"<tr><td>{e(label)}</td>" + "".join(f"<td>{fmt_cell(result[key][s])}</td>" for s in stats) + "</tr>"
                    for key, label in (("joules_per_token", "J/token"), ("deadline_hit_rate", "deadline hit rate"),
                                       ("usd_per_token", "$/token"), ("wall_seconds", "wall s per run")))
    runs = "".join(
        f"<tr class={'ok' if row['passed'] else 'bad'}><td><a href='runs/{row['run']:03d}/report.html'>"
        f"{row['run']:03d}</a></td><td>{row['seed']}</td><td>{'pass' if row['passed'] else 'FAIL'}</td>"
        f"<td>{fmt_cell(row['joules_per_token'])}</td><td>{fmt_cell(row['deadline_hit_rate'])}</td>"
        f"<td>{fmt_cell(row['wall_seconds'])}</td><td>{e(row['error'] or ', '.join(row['failed_criteria']))}</td></tr>"
        for row in result["run_table"])
    images = "".join(f"<figure><img src='{e(name)}' alt='{e(title)}'><figcaption>{e(title)}</figcaption></figure>"
                     for title, name in figures)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>HIL campaign {e(result['scenario'])}</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:auto}} td,th{{padding:2px 8px;text-align:left}}
tr.ok td:nth-child(3){{color:green}} tr.bad td:nth-child(3){{color:#b00;font-weight:bold}}
table{{border-collapse:collapse}} tr{{border-bottom:1px solid #ddd}}</style></head><body>
<h1>HIL campaign {e(result['scenario'])}: {result['passed']}/{result['runs']} runs passed</h1>
<p>campaign seed {result['seed']}; {result['completed']} runs completed, {result['errors']} raised (counted as failed);
jobs {result['jobs']['delivered']}/{result['jobs']['submitted']} delivered, {result['jobs']['lost']} lost,
{result['jobs']['duplicated']} duplicated</p>
<h2>Pass rate per criterion</h2><table><tr><th>criterion</th><th>passed</th><th>rate</th><th>judged</th></tr>
{criteria}</table>
<h2>Distributions</h2><table><tr><th></th>{''.join(f'<th>{s}</th>' for s in stats)}</tr>{dists}</table>
<h2>Figures</h2>{images}
<h2>Runs</h2><table><tr><th>run</th><th>seed</th><th></th><th>J/token</th><th>deadline hit rate</th><th>wall s</th>
<th>failed criteria or error</th></tr>{runs}</table>
</body></html>
"""
