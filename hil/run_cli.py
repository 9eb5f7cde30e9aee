"""`hil run SCENARIO [--accel K] [--flight-port DEV --sensor-port DEV] [--model PATH] [--out DIR] [--seed S]`

Flies the scenario (hil/run.py) with a progress bar on stderr, writes DIR/report.json,
DIR/report.html with its figures, DIR/flight.log and DIR/ground.log (DIR defaults to
hil-out/<scenario name>), prints one verdict line per criterion and the report's path.
Exit 0 when every criterion passed, 1 when one failed or the run could not be carried out,
2 for bad input (a scenario, model or port that cannot be used), 130 on Ctrl-C, each error one
line.
"""
from __future__ import annotations

import argparse
import math
import signal
import sys
from pathlib import Path
from typing import Any

from flight.link.cli_support import EXIT_FAILURE, EXIT_USAGE
from hil.run import Ports, RunError, run_scenario
from hil.scenario import MAX_ACCEL, ScenarioError, load

EXIT_INTERRUPTED = 130  # as a shell reports a command ended by SIGINT


def _accel(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= MAX_ACCEL:
        raise argparse.ArgumentTypeError(f"expected simulated seconds per wall second, above 0 and at most "
                                         f"{MAX_ACCEL:g}, got {text!r}")
    return value


def _seed(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return int(text)


def add_run_command(sub: Any) -> None:
    """Add `run` to the `hil` command's subparsers."""
    run = sub.add_parser("run", help="fly a scenario: environment, link, faults, criteria, report")
    run.add_argument("scenario", metavar="SCENARIO", help="scenario TOML file (scenarios/README.md)")
    run.add_argument("--accel", type=_accel, help="K simulated seconds per wall second (default: the scenario's)")
    run.add_argument("--flight-port", metavar="DEV", help="attach: the board's radio serial device")
    run.add_argument("--ground-port", metavar="DEV", help="not supported yet (the ground client uses the emulator)")
    run.add_argument("--sensor-port", metavar="DEV", help="attach: the board's sensor-bus serial device")
    run.add_argument("--model", metavar="PATH", help="GGUF model with its manifest (default: the scenario's)")
    run.add_argument("--out", metavar="DIR", help="report directory (default: hil-out/<scenario name>)")
    run.add_argument("--seed", type=_seed, help="seed of the random parts (default: the scenario's)")
    run.set_defaults(func=_run)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM too unwinds the run, so its processes are stopped, not orphaned


def _run(args: argparse.Namespace) -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        out = Path(args.out) if args.out else Path("hil-out") / load(args.scenario).name
        report = run_scenario(args.scenario, seed=args.seed, out_dir=out, accel=args.accel, model=args.model,
                              ports=Ports(args.flight_port, args.ground_port, args.sensor_port), progress=True)
    except (ScenarioError, OSError) as exc:
        print(f"hil run: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except RunError as exc:
        print(f"hil run: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:  # everything the run started has been stopped on the way out
        print("hil run: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    for c in report["criteria"]:
        print(f"{'pass' if c['passed'] else 'FAIL'}  {c['name']}: {c['value']} (limit {c['limit']})")
    print(f"{report['scenario']}: {'PASSED' if report['passed'] else 'FAILED'} in {report['wall_seconds']:.0f} s wall "
          f"for {report['sim_seconds']:.0f} s simulated; report {out / 'report.html'}")
    return 0 if report["passed"] else EXIT_FAILURE
