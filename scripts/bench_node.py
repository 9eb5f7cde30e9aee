#!/usr/bin/env python3
"""The node's figures (issue 7), each measured against its reference in the same run.

    .venv/bin/python scripts/bench_node.py [--threads N] [--idle-s 30] [--json OUT] [--keep]

1. (tests/bench/test_executive_bench.py: the executive's tick with 1000 jobs; pytest-benchmark.)
2. Main-loop lateness at 10 Hz while inference runs. A Node in this process (flight/node.py,
   its port one end of a pty pair from os.openpty, drained by a thread), the real model, a batch
   of 8: rounds of 8 jobs of 200 greedy tokens, submitted through its job service as JOB_SUBMIT
   would be. Each tick's lateness (Executive.lateness_ms(): start minus due time) is taken from
   the on_tick hook while jobs run; p50, p99, max.
3. Tokens/s that `flight run` delivers. `flight run` (a process) on an in-process hil LinkRelay
   at 115200 baud, a GroundClient in this process. The jobs are stored while the node is held in
   STANDBY (MODE_SET), then MODE_SET INFERENCE lets them all start together.
       delivered (onboard) = generated tokens / (latest result's `finished` - onboard time of the
                             MODE_CHANGED (to INFERENCE) event)
       delivered (ground)  = generated tokens / (time the last result was archived - time
                             MODE_SET INFERENCE was sent)
   Both clocks are this machine's (the node stamps with time.time()). 8 concurrent jobs are set
   against the engine's own batched figure (BatchDecoder, B=8, in this process: the same model,
   threads, n_ctx, prompts and max_tokens, timed from the first join, its prefill, to the last
   token); one job against `flight generate` (same --threads; time to first token plus decode,
   from its --json). The references run before the node starts and after it stopped; the ratio
   is to their mean. The power levels' tokens/s are set far above the engine's speed (5 000 to
   10 000, the config's maximum), so the sim's rate cap never binds. Greedy tokens are checked
   equal to the references'. The single job is run --single-reps times (median).
4. CPU share of the idle node: `flight run` in INFERENCE with no job, the GroundClient connected
   (a SACK every second), for --idle-s; utime+stime from /proc/PID/stat of the flight run
   process (all its threads) and, separately, of its engine child, over wall time.
5. Downlink efficiency: 1500-token greedy jobs without streaming, one on prose (the model's
   greedy prose repeats itself: it compresses about 6x) and one counting (one octet a token: the
   hard case). efficiency = result text
   octets / (downlink octets delivered by the relay between submit and result archived - the
   idle downlink rate x that window); the idle rate is measured over the idle window of 4. Each
   frame is also sorted by APID on its way through the relay (its downlink hook), which gives the
   octets the job caused exactly (everything but housekeeping, net of the idle rate of those
   APIDs), free of the +-1 housekeeping packet that a window's edges add to the first figure.
   Compression: text / compressed result, msgpack / compressed result.

A measurement, not a test: it prints its figures with their goals and exits 0.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tty
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from cobs import cobs
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from flight.config import load_config  # noqa: E402
from flight.engine import Engine  # noqa: E402
from flight.engine.model_path import default_model_path  # noqa: E402
from flight.engine.worker import default_engine_threads  # noqa: E402
from flight.link.dictionary import load_dictionary  # noqa: E402
from flight.link.job_result import decode_result  # noqa: E402
from flight.link.keys import write_new_key_file  # noqa: E402
from flight.link.service import CommandOrigin  # noqa: E402
from flight.node import Node  # noqa: E402
from ground.client import GroundClient  # noqa: E402
from hil.link import LinkRelay  # noqa: E402
from hil.radio import Impairments  # noqa: E402

console = Console(stderr=True, highlight=False)
BIN = Path(sys.executable).parent
D = load_dictionary()
HK_APID = D.packet("HK").apid
APID_NAMES = {p.apid: p.name for p in (D.packet(n) for n in ("HK", "EVENT", "CMD_RESPONSE", "JOB_TOKENS",
                                                             "JOB_RESULT_SEGMENT", "CMD_REJECTION"))}
MODE = {name: D.enum_value("MODE", name) for name in ("STANDBY", "INFERENCE")}
BAUD = 115200
N_BATCH = 8
N_CTX = 2048
MAX_TOKENS = 200
LONG_TOKENS = 1500
# Completions (no chat template) whose greedy continuation runs the whole 200 tokens, no EOS.
PROMPTS = [
    "The capital of France is", "Once upon a time, in a small village,", "The three laws of thermodynamics are",
    "A satellite in low Earth orbit", "The recipe for bread calls for", "Photosynthesis is the process by which",
    "The best way to learn a language is", "The ground station antenna",
]
# Greedy, the default model runs 1500 tokens on these before any EOS (checked each run: stop "limit").
LONG_PROMPTS = {"prose": "The history of the Roman Empire", "counting": "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,"}
CONFIG = """\
[executive]
auto_inference = true
[engine]
model = {model}
n_batch = {n_batch}
n_ctx = {n_ctx}
threads = {threads}
[link]
hk_period_s = 1.0
# tokens/s far above the engine's own speed: the sim's rate cap never binds
[[power_levels]]
name = "LOW"
watts = 7.0
tokens_per_s = 5000.0
[[power_levels]]
name = "MID"
watts = 15.0
tokens_per_s = 7500.0
[[power_levels]]
name = "HIGH"
watts = 25.0
tokens_per_s = 10000.0
"""


def cpu_name() -> str:
    info: dict[str, str] = {}
    with open("/proc/cpuinfo") as f:
        for line in f:
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    name = info.get("model name", platform.processor() or "unknown CPU")
    fam, model = info.get("cpu family"), info.get("model")
    zen = {("25", "17"): "Zen 4 (Genoa)", ("25", "160"): "Zen 4c", ("25", "1"): "Zen 3 (Milan)",
           ("23", "49"): "Zen 2 (Rome)"}.get((fam or "", model or ""), "")
    return f"{name}, family {fam} model {model}{' = ' + zen if zen else ''}, {os.cpu_count()} vCPU"


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1), nearest rank (as the executive's EXEC_LATE_MS_P99)."""
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


def progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed:.0f}/{task.total:.0f}"),
                    TimeElapsedColumn(), console=console, transient=True)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, step: float = 0.05) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise TimeoutError(f"{what}: not within {timeout} s")
        time.sleep(step)


# -- references -------------------------------------------------------------------------------------


def engine_batch(model: str, threads: int) -> dict[str, Any]:
    """The engine's own B=8 figure: 8 prompts join (prefill), then step to the end."""
    with Engine.load(model, threads=threads, n_ctx=N_CTX, n_batch=N_BATCH) as e:
        ids = [e.tokenize(p) for p in PROMPTS]
        b = e.batch()
        t0 = time.perf_counter()
        seqs = [b.join(i, max_tokens=MAX_TOKENS) for i in ids]
        t_prefilled = time.perf_counter()
        while b.active:
            b.step()
        dt = time.perf_counter() - t0
        tokens = [b.sequences[s].tokens for s in seqs]
    n = sum(len(t) for t in tokens)
    return {"tok_s": n / dt, "tokens": n, "seconds": dt, "prefill_s": t_prefilled - t0,
            "decode_tok_s": n / (dt - (t_prefilled - t0)), "token_lists": tokens}


def flight_generate(prompt: str, max_tokens: int, threads: int) -> dict[str, Any]:
    out = subprocess.run([str(BIN / "flight"), "generate", "--prompt", prompt, "--max-tokens", str(max_tokens),
                          "--threads", str(threads), "--n-ctx", str(N_CTX), "--json"],
                         cwd=REPO, capture_output=True, text=True, timeout=300, check=True)
    g = json.loads(out.stdout)
    n = len(g["tokens"])
    seconds = g["time_to_first_token_s"] + (n - 1) / g["decode_tok_s"] if n > 1 else g["time_to_first_token_s"]
    return {"tok_s": n / seconds, "tokens": n, "seconds": seconds, "token_list": g["tokens"],
            "stop_reason": g["stop_reason"], "text": g["text"]}


# -- 2. lateness in process -----------------------------------------------------------------------------


class _Drain:
    """Reads and drops what the node writes to its pty (nobody listens on this radio)."""

    def __init__(self, fd: int):
        self.fd = fd
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            r, _, _ = select.select([self.fd], [], [], 0.2)
            if r:
                try:
                    os.read(self.fd, 65536)
                except OSError:
                    return


@dataclass
class TickLog:
    node: Node | None = None
    recording: bool = False
    late_ms: list[float] = field(default_factory=list)
    tick_us: list[float] = field(default_factory=list)

    def __call__(self) -> None:
        if self.recording and self.node is not None:
            ex = self.node.executive
            assert ex is not None
            self.late_ms.append(ex.lateness_ms()[-1])
            self.tick_us.append(ex.channels().get("EXEC_TICK_US", 0.0))  # the previous tick's


def lateness(work: Path, keys: Path, config_path: Path, rounds: int) -> dict[str, Any]:
    master, slave = os.openpty()
    tty.setraw(slave)
    drain = _Drain(master)
    data = work / "lateness-data"
    data.mkdir()
    config = load_config(config_path, {"link": {"port": os.ttyname(slave)}})
    log = TickLog()
    node = Node(config, [keys], data, on_tick=log)
    log.node = node
    node.start()
    exe = node.executive
    assert exe is not None
    try:
        wait_for(lambda: exe.channels().get("MODE_CURRENT") == MODE["INFERENCE"], 10, "INFERENCE")
        submit = node.job_service.submit
        command = D.command_by_name["JOB_SUBMIT"]
        completed0 = exe.channels()["JOB_COMPLETED"]
        overruns0 = exe.channels()["EXEC_OVERRUNS"]
        tokens0 = exe.channels()["ENGINE_TOKENS"]
        job_id = 1
        t0 = time.monotonic()
        with progress() as bar:
            task = bar.add_task(f"lateness: {rounds} x {N_BATCH} jobs in process", total=rounds * N_BATCH)
            for r in range(rounds):
                log.recording = True
                for prompt in PROMPTS:
                    args = command.check_args(command.order_args({"job_id": job_id, "prompt": prompt,
                                                                  "max_tokens": MAX_TOKENS}))
                    submit(args, CommandOrigin(spi=1, arsn=job_id))
                    job_id += 1
                target = completed0 + (r + 1) * N_BATCH
                while exe.channels()["JOB_COMPLETED"] < target:
                    bar.update(task, completed=exe.channels()["JOB_COMPLETED"] - completed0)
                    time.sleep(0.1)
                log.recording = False
                bar.update(task, completed=(r + 1) * N_BATCH)
        seconds = time.monotonic() - t0
        ch = exe.channels()
        tokens = ch["ENGINE_TOKENS"] - tokens0
        overruns = ch["EXEC_OVERRUNS"] - overruns0
    finally:
        node.stop()
        drain.stop.set()
        drain.thread.join()
        os.close(master)
        os.close(slave)
    late = log.late_ms
    return {"ticks": len(late), "p50_ms": pct(late, 0.5), "p99_ms": pct(late, 0.99), "max_ms": max(late),
            "mean_ms": statistics.fmean(late), "tick_us_p50": pct(log.tick_us, 0.5),
            "tick_us_p99": pct(log.tick_us, 0.99), "overruns": overruns, "jobs": rounds * N_BATCH,
            "tokens": tokens, "tok_s": tokens / seconds}


# -- 3-5: flight run over the paced link ----------------------------------------------------------------


class ApidOctets:
    """The relay's downlink hook: counts each frame's octets (delimiter included) by APID."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.octets: Counter[int] = Counter()

    def __call__(self, frame: bytes) -> list[bytes]:
        try:
            packet = cobs.decode(frame[:-1])
            apid = ((packet[0] & 0x07) << 8) | packet[1]
        except (cobs.DecodeError, IndexError):
            apid = -1
        with self.lock:
            self.octets[apid] += len(frame)
        return [frame]

    def snapshot(self) -> Counter[int]:
        with self.lock:
            return Counter(self.octets)


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def engine_child(pid: int) -> int:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        children = [int(c) for c in f.read().split()]
    for child in children:
        with open(f"/proc/{child}/cmdline", "rb") as f:
            if b"flight.engine.worker" in f.read():
                return child
    raise RuntimeError(f"no engine child of {pid}: {children}")


@dataclass
class Mark:
    t: float
    downlink: int
    apid: Counter[int]

    @classmethod
    def now(cls, relay: LinkRelay, apids: ApidOctets) -> Mark:
        return cls(time.monotonic(), relay.downlink.bytes_passed, apids.snapshot())


class FlightRun:
    def __init__(self, work: Path, keys: Path, config: Path, threads: int, impairments: Impairments | None = None):
        self.apids = ApidOctets()  # sees each frame before the radio's bit errors (hil/link.py)
        self.relay = LinkRelay(baud=BAUD, downlink_tamper=self.apids, impairments=impairments)
        data = work / "flight-data"
        data.mkdir()
        self.log_path = work / "flight.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([str(BIN / "flight"), "run", "--port", self.relay.flight_path, "--keys", str(keys),
                                      "--data-dir", str(data), "--config", str(config), "--threads", str(threads),
                                      "--log-level", "INFO"], cwd=REPO, stderr=self.log)
        try:
            wait_for(lambda: b"node running" in self.log_path.read_bytes() or self.proc.poll() is not None, 120,
                     "flight run ready")
            if self.proc.poll() is not None:
                raise RuntimeError(f"flight run exited: {self.log_path.read_text()[-2000:]}")
            self.engine_pid = engine_child(self.proc.pid)
            self.gc = GroundClient(self.relay.ground_path, keys=keys, archive=work / "ground.sqlite", baud=BAUD,
                                   sack_interval_s=1.0).connect()
        except BaseException:
            self.stop()
            raise

    def mark(self) -> Mark:
        return Mark.now(self.relay, self.apids)

    def mode(self, name: str) -> float:
        """MODE_SET name; the ground time it was sent."""
        sent = time.time()
        self.gc.send_and_await_completion("MODE_SET", mode=MODE[name], timeout=20)
        return sent

    def stop(self) -> None:
        gc = getattr(self, "gc", None)
        if gc is not None:
            gc.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.relay.close()
        self.log.close()


def idle(fr: FlightRun, seconds: float) -> dict[str, Any]:
    gc = fr.gc
    gc.await_telemetry("LINK_CONTACT", lambda v: v is True, timeout=30)
    gc.await_telemetry("MODE_CURRENT", lambda v: v == MODE["INFERENCE"], timeout=30)
    time.sleep(3.0)  # settle: the start's events are down, the first SACKs went up
    a = fr.mark()
    cpu_a = cpu_seconds(fr.proc.pid), cpu_seconds(fr.engine_pid)
    with progress() as bar:
        task = bar.add_task("idle: flight run, no job, ground connected", total=seconds)
        end = a.t + seconds
        while (now := time.monotonic()) < end:
            bar.update(task, completed=now - a.t)
            time.sleep(min(0.5, end - now))
    cpu_b = cpu_seconds(fr.proc.pid), cpu_seconds(fr.engine_pid)
    b = fr.mark()
    wall = b.t - a.t
    hk = gc.latest_housekeeping()
    return {"wall_s": wall, "main_pct": (cpu_b[0] - cpu_a[0]) / wall * 100, "engine_pct": (cpu_b[1] - cpu_a[1]) / wall * 100,
            "downlink_Bps": (b.downlink - a.downlink) / wall,
            "apid_Bps": {k: (b.apid[k] - a.apid[k]) / wall for k in set(a.apid) | set(b.apid)},
            "hk_tick_us": hk.get("EXEC_TICK_US"), "mode": hk.get("MODE_CURRENT")}


def delivered(fr: FlightRun, prompts: list[str]) -> dict[str, Any]:
    """Store the jobs in STANDBY, then MODE_SET INFERENCE; delivered tokens/s onboard and at the ground."""
    gc = fr.gc
    fr.mode("STANDBY")
    jobs = [gc.submit_job(p, MAX_TOKENS, timeout=20, token_ids=True) for p in prompts]  # to compare tokens
    since = gc.history_index()
    sent = fr.mode("INFERENCE")
    changed = gc.await_event("MODE_CHANGED", lambda e: e.args["mode"] == MODE["INFERENCE"], timeout=20, since=since)
    started = gc.await_event("JOB_STARTED", timeout=20, since=since)  # the first: the tick after the mode change
    results, archived, octets = [], [], 0
    for job in jobs:
        data = gc.await_result(job, timeout=600)
        archived.append(time.time())
        octets += len(data)
        results.append(decode_result(data))
    n = sum(r["tokens"] for r in results)
    finished = max(r["finished"] for r in results)
    return {"jobs": len(jobs), "tokens": n, "onboard_s": finished - changed.onboard_time,
            "result_octets": octets, "tail_s": max(archived) - finished,
            "start_wait_s": started.onboard_time - changed.onboard_time,
            "onboard_tok_s": n / (finished - changed.onboard_time), "ground_s": max(archived) - sent,
            "ground_tok_s": n / (max(archived) - sent), "uplink_to_mode_s": changed.onboard_time - sent,
            "token_lists": [r["token_ids"] for r in results], "stop": Counter(r["stop_reason"] for r in results)}


def efficiency(fr: FlightRun, prompt: str, idle_fig: dict[str, Any]) -> dict[str, Any]:
    gc = fr.gc
    a = fr.mark()
    job = gc.submit_job(prompt, LONG_TOKENS, timeout=20)
    data = gc.await_result(job, timeout=900)
    b = fr.mark()
    window = b.t - a.t
    r = decode_result(data)
    text = len(r["text"].encode())
    spent = (b.downlink - a.downlink) - idle_fig["downlink_Bps"] * window
    by_apid = {k: (b.apid[k] - a.apid[k]) - idle_fig["apid_Bps"].get(k, 0.0) * window for k in set(a.apid) | set(b.apid)}
    job_octets = sum(v for k, v in by_apid.items() if k != HK_APID)
    msgpack_octets = len(zlib.decompress(data))
    return {"tokens": r["tokens"], "stop": r["stop_reason"], "text_octets": text, "result_octets": len(data),
            "msgpack_octets": msgpack_octets, "window_s": window, "downlink_octets": b.downlink - a.downlink,
            "spent_octets": spent, "efficiency": text / spent, "job_octets": job_octets,
            "efficiency_by_apid": text / job_octets, "hk_excess_octets": by_apid.get(HK_APID, 0.0),
            "by_apid": {APID_NAMES.get(k, "unframed" if k < 0 else str(k)): round(v)
                        for k, v in sorted(by_apid.items()) if k != HK_APID and round(v)},
            "text_ratio": text / len(data), "msgpack_ratio": msgpack_octets / len(data)}


# -- report ---------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="GGUF file (default: the packaged model)")
    ap.add_argument("--threads", type=int, default=default_engine_threads(),
                    help="engine threads for flight run, flight generate and the B=8 reference (default: cores - 1)")
    ap.add_argument("--idle-s", type=float, default=30.0, help="idle window for the CPU share and idle downlink rate")
    ap.add_argument("--lateness-rounds", type=int, default=3, help="rounds of 8 jobs for the lateness figure")
    ap.add_argument("--single-reps", type=int, default=3, help="single-job runs on the node (median)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, onboard and ground databases)")
    args = ap.parse_args()
    model = args.model or str(default_model_path())
    started = time.monotonic()
    cpu = cpu_name()
    console.print(f"[bold]bench_node[/bold]: {cpu}; model {os.path.basename(model)}; engine threads {args.threads}")

    work = Path(tempfile.mkdtemp(prefix="tokensat-bench-"))
    keys = work / "keys.json"
    write_new_key_file(keys)
    config = work / "node.toml"
    config.write_text(CONFIG.format(n_batch=N_BATCH, n_ctx=N_CTX, threads=args.threads, model=json.dumps(model)))

    refs: dict[str, list[dict[str, Any]]] = {"b8": [], "gen": []}

    def references(when: str) -> None:
        with console.status(f"references ({when}): engine B=8 and flight generate"):
            refs["b8"].append(engine_batch(model, args.threads))
            refs["gen"].append(flight_generate(PROMPTS[0], MAX_TOKENS, args.threads))

    references("before")
    lat = lateness(work, keys, config, args.lateness_rounds)

    with console.status("flight run: starting over the paced link"):
        fr = FlightRun(work, keys, config, args.threads)
    try:
        idle_fig = idle(fr, args.idle_s)
        with console.status("delivered: 8 concurrent jobs"):
            many = delivered(fr, PROMPTS)
        singles = []
        with progress() as bar:
            task = bar.add_task("delivered: one job", total=args.single_reps)
            for _ in range(args.single_reps):
                singles.append(delivered(fr, PROMPTS[:1]))
                bar.advance(task)
        eff = {}
        with progress() as bar:
            task = bar.add_task(f"downlink: {LONG_TOKENS}-token jobs, no streaming", total=len(LONG_PROMPTS))
            for name, prompt in LONG_PROMPTS.items():
                eff[name] = efficiency(fr, prompt, idle_fig)
                bar.advance(task)
    finally:
        with console.status("stopping flight run"):
            fr.stop()
    references("after")

    # -- the figures
    b8 = statistics.fmean(r["tok_s"] for r in refs["b8"])
    gen = statistics.fmean(r["tok_s"] for r in refs["gen"])
    single = {k: statistics.median(s[k] for s in singles) for k in ("onboard_tok_s", "ground_tok_s", "onboard_s",
                                                                      "ground_s", "uplink_to_mode_s", "start_wait_s")}
    same_b8 = sorted(map(tuple, many["token_lists"])) == sorted(map(tuple, refs["b8"][0]["token_lists"]))
    same_gen = all(s["token_lists"][0] == refs["gen"][0]["token_list"] for s in singles)

    out = Console(width=None if sys.stdout.isatty() else 220)
    info = Table(title=f"tokensat node figures: {cpu}; {os.path.basename(model)}, engine threads {args.threads}, "
                       f"n_batch {N_BATCH}, n_ctx {N_CTX}")
    for col, just in (("figure", "left"), ("measured", "right"), ("reference / detail", "left"), ("goal", "left"),
                      ("met", "center")):
        info.add_column(col, justify=just)  # type: ignore[arg-type]

    def ok(cond: bool) -> str:
        return "[green]yes[/green]" if cond else "[red]no[/red]"

    info.add_row("2. loop lateness p50 / p99 (10 Hz, 8 jobs running)",
                 f"{lat['p50_ms']:.2f} / {lat['p99_ms']:.2f} ms",
                 f"{lat['ticks']} ticks, max {lat['max_ms']:.1f} ms, {lat['overruns']} overruns; tick p50/p99 "
                 f"{lat['tick_us_p50']:.0f}/{lat['tick_us_p99']:.0f} µs; engine {lat['tok_s']:.0f} tok/s",
                 "p99 <= 10 ms", ok(lat["p99_ms"] <= 10))
    for label, value, ref, detail in (
            ("3. delivered, 8 jobs, onboard", many["onboard_tok_s"], b8,
             f"{many['onboard_s']:.2f} s; first JOB_STARTED {many['start_wait_s'] * 1e3:.0f} ms after MODE_CHANGED"),
            ("3. delivered, 8 jobs, at the ground", many["ground_tok_s"], b8,
             f"{many['ground_s']:.2f} s; last result archived {many['tail_s'] * 1e3:.0f} ms after the last finished, "
             f"{many['result_octets']} result octets"),
            ("3. delivered, 1 job, onboard", single["onboard_tok_s"], gen,
             f"{single['onboard_s']:.2f} s; JOB_STARTED {single['start_wait_s'] * 1e3:.0f} ms after MODE_CHANGED"),
            ("3. delivered, 1 job, at the ground", single["ground_tok_s"], gen, f"{single['ground_s']:.2f} s")):
        name = "engine B=8" if ref is b8 else "flight generate"
        info.add_row(label, f"{value:.1f} tok/s", f"{value / ref:.1%} of {name} {ref:.1f} tok/s ({detail})",
                     ">= 90%", ok(value / ref >= 0.9))
    info.add_row("4. idle CPU, flight run main process", f"{idle_fig['main_pct']:.2f} % of a core",
                 f"over {idle_fig['wall_s']:.0f} s, INFERENCE, no job, ground SACK every 1 s", "<= 3 %",
                 ok(idle_fig["main_pct"] <= 3))
    info.add_row("4. idle CPU, engine child", f"{idle_fig['engine_pct']:.2f} % of a core", "heartbeat every 0.2 s",
                 "", "")
    for name, e in eff.items():
        info.add_row(f"5. downlink efficiency, {name} ({e['tokens']} tok, {e['stop']})", f"{e['efficiency']:.2f}",
                     f"{e['text_octets']} text octets / {e['spent_octets']:.0f} beyond idle ({e['downlink_octets']} "
                     f"in {e['window_s']:.1f} s - {idle_fig['downlink_Bps']:.0f} B/s idle)", ">= 0.9",
                     ok(e["efficiency"] >= 0.9))
        info.add_row(f"5. same, by APID ({name})", f"{e['efficiency_by_apid']:.2f}",
                     f"{e['job_octets']:.0f} octets not housekeeping: "
                     + ", ".join(f"{k} {v}" for k, v in e["by_apid"].items())
                     + f"; housekeeping {e['hk_excess_octets']:+.0f} vs idle", ">= 0.9", ok(e["efficiency_by_apid"] >= 0.9))
        info.add_row(f"5. compression ({name})", f"{e['text_ratio']:.2f}x text, {e['msgpack_ratio']:.2f}x msgpack",
                     f"{e['text_octets']} text, {e['msgpack_octets']} msgpack -> {e['result_octets']} zlib", "", "")
    out.print(info)

    ref_table = Table(title="references, measured before the node started and after it stopped")
    for col in ("reference", "before", "after", "detail"):
        ref_table.add_column(col)
    ref_table.add_row("engine B=8 (BatchDecoder)", *(f"{r['tok_s']:.1f} tok/s" for r in refs["b8"]),
                      f"{refs['b8'][0]['tokens']} tokens, prefill {refs['b8'][0]['prefill_s'] * 1e3:.0f} ms, decode alone "
                      f"{refs['b8'][0]['decode_tok_s']:.1f} tok/s; node's tokens equal: {same_b8}")
    ref_table.add_row("flight generate (1 job)", *(f"{r['tok_s']:.1f} tok/s" for r in refs["gen"]),
                      f"{refs['gen'][0]['tokens']} tokens; node's tokens equal: {same_gen}; node single-job runs "
                      + ", ".join(f"{s['onboard_tok_s']:.1f}" for s in singles) + " tok/s onboard")
    out.print(ref_table)
    out.print(f"MODE_SET sent -> MODE_CHANGED stamped onboard: {many['uplink_to_mode_s'] * 1e3:.0f} ms (8 jobs), "
              f"{single['uplink_to_mode_s'] * 1e3:.0f} ms (1 job, median); idle downlink {idle_fig['downlink_Bps']:.0f} B/s "
              "(" + ", ".join(f"{APID_NAMES.get(k, k)} {v:.0f}" for k, v in sorted(idle_fig["apid_Bps"].items())
                              if k >= 0) + ")")
    out.print(f"run took {time.monotonic() - started:.0f} s" + (f"; files in {work}" if args.keep else ""))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)

    if args.json:
        figures = {"cpu": cpu, "model": model, "threads": args.threads, "lateness": lat, "idle": idle_fig,
                   "delivered_8": {k: v for k, v in many.items() if k != "token_lists"},
                   "delivered_1": [{k: v for k, v in s.items() if k != "token_lists"} for s in singles],
                   "references": {k: [{x: y for x, y in r.items() if x not in ("token_lists", "token_list", "text")}
                                      for r in v] for k, v in refs.items()},
                   "efficiency": eff}
        args.json.write_text(json.dumps(figures, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
