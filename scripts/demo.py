"""`make demo`: the node on one machine, operated from the ground over the emulated radio.

Starts `hil link --pty` (a 115200-baud line between two ptys), `flight run` on its flight side
(the real model, sim sensors, a batch of two) and runs `ground` commands on its ground side, as
an operator would:

1. two jobs are submitted without waiting (priority 0); they fill the batch of two;
2. a third, priority 10, is submitted with --chat --stream: the scheduler preempts one of the
   two at a token boundary, the third's tokens are printed as they come down;
3. every result is collected and printed with tokens, tok/s, J/token and $/token, and the
   preempted job's text is the one it would have had uninterrupted (exact resume);
4. everything is stopped (SIGTERM; the node saves progress and exits within 5 s).

The commands it runs are printed first, so they can be copied.
"""
from __future__ import annotations

import json
import os
import shlex
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
console = Console(highlight=False)

CONFIG = """\
[engine]
n_batch = 2          # a small batch, so the third job must preempt one
[link]
hk_period_s = 1.0
"""
JOBS = [  # completed as given (no --chat): prompts that run on
    ("Once upon a time, a small satellite in low Earth orbit", 400, []),
    ("Ten uses of solar power in space:\n1.", 400, ["--temperature", "0.7", "--seed", "42"]),
]
URGENT = ("In two sentences, why run AI inference in orbit?", 80)


def show(argv: list[str]) -> None:
    console.print(f"[dim]$ {' '.join(shlex.quote(a) for a in argv)}[/dim]")


def ground(port: str, keys: Path, archive: Path, *argv: str, stream: bool = False) -> subprocess.CompletedProcess[str]:
    cmd = [str(BIN / "ground"), *argv, "--port", port, "--keys", str(keys), "--archive", str(archive)]
    show(cmd)
    if stream:  # stdout straight to the terminal: the tokens appear as they come down
        return subprocess.run(cmd, cwd=REPO, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="tokensat-demo-"))
    keys, data, archive, config = work / "keys.json", work / "data", work / "ground.sqlite", work / "node.toml"
    data.mkdir()
    config.write_text(CONFIG)
    subprocess.run([str(BIN / "ground"), "keygen", "--out", str(keys)], check=True, capture_output=True)
    console.rule("[bold]tokensat demo: flight run, operated from the ground over hil link")
    hil_cmd = [str(BIN / "hil"), "link", "--pty"]
    show(hil_cmd)
    hil = subprocess.Popen(hil_cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    ports = dict(hil.stdout.readline().strip().split(": ") for _ in range(2))  # type: ignore[union-attr]
    flight_cmd = [str(BIN / "flight"), "run", "--port", ports["flight"], "--keys", str(keys), "--data-dir", str(data),
                  "--config", str(config), "--log-level", "WARNING"]
    show(flight_cmd)
    flight_log = open(work / "flight.log", "w")
    node = subprocess.Popen(flight_cmd, cwd=REPO, stderr=flight_log)
    try:
        return run(ports["ground"], keys, archive, node)
    finally:
        if node.poll() is None:
            started = time.monotonic()
            node.send_signal(signal.SIGTERM)
            code = node.wait(timeout=10)
            console.print(f"flight run stopped (SIGTERM) in {time.monotonic() - started:.1f} s, exit {code}")
        hil.terminate()
        hil.wait(timeout=10)
        console.print(f"[dim]files: {work}[/dim]")


def run(port: str, keys: Path, archive: Path, node: subprocess.Popen) -> int:
    ids = []
    for prompt, n, extra in JOBS:
        out = ground(port, keys, archive, "submit", "--prompt", prompt, "--max-tokens", str(n), *extra,
                     "--no-wait", "--json")
        if out.returncode != 0:
            console.print(f"[red]{out.stderr.strip()}[/red]")
            return 1
        ids.append(json.loads(out.stdout)["job_id"])
        console.print(f"  job {ids[-1]} stored onboard")
    time.sleep(1.0)  # both run now, in one batch
    console.print("[bold]an urgent job, priority 10, streamed live:[/bold]")
    out = ground(port, keys, archive, "submit", "--prompt", URGENT[0], "--max-tokens", str(URGENT[1]), "--chat",
                 "--stream", "--priority", "10", stream=True)
    console.print(f"[dim]{out.stderr.strip()}[/dim]")
    if out.returncode != 0:
        return 1
    console.print("[bold]collecting the other results:[/bold]")
    deadline = time.monotonic() + 120
    while len(results(archive)) < 3 and time.monotonic() < deadline:
        ground(port, keys, archive, "collect", "--duration", "5")
    table = Table(title="results (ground results --json)")
    for column in ("job", "stop", "tokens", "preempted", "tok/s", "J/token", "$/token"):
        table.add_column(column, justify="right")
    shown = results(archive)
    for r in shown:
        table.add_row(str(r["job_id"]), r["stop_reason"], str(r["tokens"]), str(r["preemptions"]),
                      f"{r['tokens_per_s']:.0f}", f"{r['joules_per_token']:.3f}", f"{r['usd_per_token']:.2e}")
    console.print(table)
    for r in shown:
        console.print(f"[bold]job {r['job_id']}[/bold] {r['text'][:200]!r}")
    for line in events(archive, ("JOB_PREEMPTED", "JOB_STARTED", "MODE_CHANGED")):
        console.print(f"  [dim]event[/dim] {line}")
    by_prompt = {prompt: (n, extra) for prompt, n, extra in JOBS}
    for r, (prompt, _, _) in zip(shown, JOBS):
        if r["preemptions"]:
            n, extra = by_prompt[prompt]
            cmd = [str(BIN / "flight"), "generate", "--prompt", prompt, "--max-tokens", str(n), *extra, "--json"]
            show(cmd)
            alone = json.loads(subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True).stdout)
            same = alone["text"] == r["text"]
            console.print(f"job {r['job_id']} was preempted {r['preemptions']} time(s); its text equals an "
                          f"uninterrupted run's: [bold]{'yes' if same else 'NO'}[/bold]")
            if not same:
                return 1
    return 0 if len(shown) == 3 else 1


def results(archive: Path) -> list[dict]:
    out = subprocess.run([str(BIN / "ground"), "results", "--json", "--archive", str(archive)], capture_output=True,
                         text=True)
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def events(archive: Path, names: tuple[str, ...]) -> list[str]:
    with sqlite3.connect(archive) as conn:
        rows = conn.execute("SELECT name, message FROM events ORDER BY id").fetchall()
    return [f"{name}: {message}" for name, message in rows if name in names]


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
