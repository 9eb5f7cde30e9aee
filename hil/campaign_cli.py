"""`hil campaign SCENARIO --runs N [--seed S] [--workers K] [--scheduler ADDRESS] [--accel K]
[--model PATH] [--set TABLE.KEY=VALUE ...] [--out DIR]`

Flies the scenario N times with seeds spawned from S (default: the scenario's), in parallel on
Dask (hil/campaign.py): a LocalCluster of K worker processes (default: one per CPU), or the
scheduler at ADDRESS (tcp://HOST:PORT) and its workers. --set replaces one key of the scenario's
tables for every run, its VALUE a TOML value (`--set scenario.model="synthetic"`,
`--set scenario.duration_s=600`, `--set link.ber=1e-5`). Writes DIR/campaign.json,
DIR/campaign.html with its figures and DIR/runs/NNN/ (each run's report, logs and scenario;
DIR defaults to hil-out/<scenario name>-campaign); a progress bar on stderr, then one line per
criterion with its pass rate and the runs' verdict.
Exit 0 when every run passed, 1 when one failed or raised, 2 for bad input, each error one line.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from flight.link.cli_support import EXIT_FAILURE, EXIT_USAGE, integer
from hil.campaign import CampaignError, run_campaign
from hil.run_cli import _accel, _seed
from hil.scenario import ScenarioError, load

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

MAX_RUNS = 100_000


def _setting(text: str) -> tuple[str, str, Any]:
    """TABLE.KEY=VALUE, VALUE parsed as TOML: (table, key, value)."""
    name, eq, value = text.partition("=")
    table, dot, key = name.strip().partition(".")
    if not (eq and dot and table and key):
        raise argparse.ArgumentTypeError(f"expected TABLE.KEY=VALUE, got {text!r}")
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        raise argparse.ArgumentTypeError(f"{name}: {value!r} is not a TOML value (quote strings)") from None
    return table, key.strip(), parsed


def add_campaign_command(sub: Any) -> None:
    """Add `campaign` to the `hil` command's subparsers."""
    campaign = sub.add_parser("campaign", help="Monte Carlo: fly a scenario N times with different seeds, on Dask")
    campaign.add_argument("scenario", metavar="SCENARIO", help="scenario TOML file")
    campaign.add_argument("--runs", type=integer(1, MAX_RUNS, "a number of runs"), required=True, metavar="N")
    campaign.add_argument("--seed", type=_seed, help="campaign seed the runs' seeds are spawned from "
                                                     "(default: the scenario's)")
    where = campaign.add_mutually_exclusive_group()
    where.add_argument("--workers", type=integer(1, 1024, "a number of workers"), metavar="K",
                       help="worker processes of the local Dask cluster (default: one per CPU)")
    where.add_argument("--scheduler", metavar="ADDRESS", help="an existing Dask scheduler (tcp://HOST:PORT)")
    campaign.add_argument("--accel", type=_accel, help="K simulated seconds per wall second (default: the scenario's)")
    campaign.add_argument("--model", metavar="PATH", help="GGUF model with its manifest, on every worker "
                                                           "(default: the scenario's)")
    campaign.add_argument("--set", type=_setting, action="append", default=[], metavar="TABLE.KEY=VALUE",
                          help="override a key of the scenario for every run (repeatable)")
    campaign.add_argument("--out", metavar="DIR", help="campaign directory (default: hil-out/<scenario name>-campaign)")
    campaign.set_defaults(func=_campaign)


def _campaign(args: argparse.Namespace) -> int:
    overrides: dict[str, dict[str, Any]] = {}
    for table, key, value in args.set:
        overrides.setdefault(table, {})[key] = value
    try:
        out = Path(args.out) if args.out else Path("hil-out") / f"{load(args.scenario).name}-campaign"
        result = run_campaign(args.scenario, runs=args.runs, out_dir=out, seed=args.seed, workers=args.workers,
                              scheduler=args.scheduler, accel=args.accel, model=args.model,
                              overrides=overrides or None, progress=True)
    except (ScenarioError, CampaignError, OSError) as exc:
        print(f"hil campaign: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for c in result["criteria"]:
        print(f"{100 * c['pass_rate']:5.1f} %  {c['name']}: {c['passed']}/{result['runs']}")
    for row in result["run_table"]:
        if row["error"]:
            print(f"run {row['run']:03d} (seed {row['seed']}) raised: {row['error']}")
    jpt = result["joules_per_token"]
    print(f"{result['scenario']}: {result['passed']}/{result['runs']} runs passed"
          + (f", J/token median {jpt['median']:.4g} [{jpt['min']:.4g}, {jpt['max']:.4g}]" if jpt["n"] else "")
          + f"; report {out / 'campaign.html'}")
    return 0 if result["passed"] == result["runs"] else EXIT_FAILURE
