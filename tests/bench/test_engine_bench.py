"""Engine throughput: decode, prefill, batched decode, time to first token, peak memory.

`make bench` runs these with --benchmark-enable; `make test` runs each body once (benchmarks
disabled), so every test also checks what it measures: token counts, no reused prefix,
batched output equal to single-stream output. Assertions are never on time.

tok/s figures go into benchmark.extra_info (saved with --benchmark-json, printed at the end of
the session by tests/bench/conftest.py). They come from our own per-round timings (the
engine's phase timers, or perf_counter around the measured phase), median over the timed rounds,
so they are filled even when benchmarks are disabled.
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from flight.engine import Engine

ROOT = Path(__file__).resolve().parents[2]
SHORT_PROMPT = "The capital of France is"  # same short prompt as scripts/bench_vs_llamacpp.py
FILLER = ("The satellite passes over the ground station twice a day, and each pass lasts about "
          "ten minutes. During that window the link carries commands up and telemetry down. ")
N_DECODE = 64
N_PREFILL = 512
N_BATCH_TOKENS = 32
BATCH_SIZES = [1, 4, 8, 16]
ROUNDS = 5
PREFILL_ROUNDS = 3  # prefill rounds are the slowest ones; 3 keep `make bench` short
# Completion prompts whose greedy continuation runs past N_BATCH_TOKENS without an end-of-turn
# token, so every batched sequence decodes exactly N_BATCH_TOKENS (checked below).
BATCH_PROMPTS = [
    "The capital of France is", "def fibonacci(n):", "Once upon a time, in a small village,",
    "The three laws of thermodynamics are", "A satellite in low Earth orbit",
    "The recipe for bread calls for", "In 1969, the first humans",
    "Photosynthesis is the process by which", "The best way to learn a language is",
    "The ground station antenna", "Solar panels convert sunlight into",
    "The history of the Roman Empire", "A good night of sleep helps",
    "The main causes of climate change are", "Jupiter is the largest planet",
    "Machine learning models are trained",
]


def _timed(runs: list) -> list:
    """The runs pytest-benchmark timed: warm-up rounds come first, so keep the last ROUNDS
    (with benchmarks disabled there is exactly one run)."""
    return runs[-ROUNDS:]


def _pedantic(benchmark, target: Callable[[], object], setup: Callable[[], None],
              rounds: int = ROUNDS) -> object:
    # setup runs untimed before every round: it is where the KV cache is reset
    return benchmark.pedantic(target, setup=setup, rounds=rounds, warmup_rounds=1, iterations=1)


@pytest.fixture(scope="module")
def engine(real_model_path: Path) -> Iterator[Engine]:
    """One stream, the flight configuration (n_ctx 2048): decode, prefill, first token."""
    e = Engine.load(real_model_path)
    yield e
    e.close()


@pytest.fixture(scope="module", params=BATCH_SIZES, ids=lambda b: f"B{b}")
def batch_engine(request: pytest.FixtureRequest, real_model_path: Path) -> Iterator[Engine]:
    # n_ctx is allocated per slot: 128 holds a prompt plus N_BATCH_TOKENS, and keeps 16 slots small
    e = Engine.load(real_model_path, n_ctx=128, n_batch=request.param)
    yield e
    e.close()


def test_decode_one_stream(benchmark, engine: Engine) -> None:
    """Greedy decode of N_DECODE tokens after a short prompt, no end-of-turn stop."""
    ids = engine.tokenize(SHORT_PROMPT)
    runs: list[tuple[list[int], dict]] = []

    def decode() -> None:
        # the low-level call with no eos ids: the count is fixed whatever the model says
        runs.append(engine._m.generate(ids, N_DECODE, 0.0, 0, 1.0, 0, [], None))

    _pedantic(benchmark, decode, setup=engine.forget)
    timed = _timed(runs)
    for tokens, st in runs:
        assert len(tokens) == st["n_generated"] == N_DECODE and st["stop_reason"] == "limit"
        assert tokens == runs[0][0]  # greedy: every round decodes the same tokens
    # the first token comes from the prefill logits; each later one is one forward (decode_s)
    tok_s = statistics.median((N_DECODE - 1) / st["decode_s"] for _, st in timed)
    benchmark.extra_info.update(decode_tok_s=round(tok_s, 1), tokens=N_DECODE,
                                prompt_tokens=len(ids), threads=engine.threads, simd=engine.simd)


def test_prefill_512(benchmark, engine: Engine) -> None:
    """One N_PREFILL-token prompt into an empty cache (forget() before each round)."""
    ids = engine.tokenize(FILLER * 20)[:N_PREFILL]
    assert len(ids) == N_PREFILL
    runs = []

    def prefill() -> None:
        # max_tokens=1: the one token is sampled from the prefill logits, so no decode step runs
        runs.append(engine.generate(ids, max_tokens=1))

    _pedantic(benchmark, prefill, setup=engine.forget, rounds=PREFILL_ROUNDS)
    for g in runs:
        assert g.n_reused == 0, "the cached prefix was reused: forget() did not reset the cache"
        assert len(g.prompt_tokens) == N_PREFILL and len(g.tokens) == 1
        assert g.tokens == runs[0].tokens
    tok_s = statistics.median(g.prefill_tok_s for g in runs[-PREFILL_ROUNDS:])
    benchmark.extra_info.update(prefill_tok_s=round(tok_s, 1), prompt_tokens=N_PREFILL,
                                threads=engine.threads, simd=engine.simd)


@pytest.fixture(scope="module")
def single_stream_reference(engine: Engine) -> Callable[[str], list[int]]:
    """Greedy tokens of one prompt decoded alone: what each batched sequence must reproduce."""
    cache: dict[str, list[int]] = {}

    def reference(prompt: str) -> list[int]:
        if prompt not in cache:
            cache[prompt] = engine.generate(prompt, max_tokens=N_BATCH_TOKENS).tokens
        return cache[prompt]

    return reference


def test_batched_decode(benchmark, batch_engine: Engine,
                        single_stream_reference: Callable[[str], list[int]]) -> None:
    """B distinct prompts joined, then stepped until all are done: aggregate tok/s."""
    b = batch_engine.n_batch
    prompts = BATCH_PROMPTS[:b]
    runs: list[tuple[float, int]] = []  # (seconds stepping, events) per round
    state: dict = {}

    def join() -> None:
        # joining prefills each prompt; that is prefill work, so it stays out of the timed part
        batch = batch_engine.batch()
        state["batch"] = batch
        state["seq"] = {batch.join(p, max_tokens=N_BATCH_TOKENS): p for p in prompts}

    def step_until_done() -> None:
        batch = state["batch"]
        n_events = 0
        t0 = time.perf_counter()
        while batch.active:
            n_events += len(batch.step())
        runs.append((time.perf_counter() - t0, n_events))

    _pedantic(benchmark, step_until_done, setup=join)
    batch = state["batch"]
    for seq_id, prompt in state["seq"].items():
        seq = batch.sequences[seq_id]
        assert seq.stop_reason == "limit" and len(seq.tokens) == N_BATCH_TOKENS, prompt
    # batching must not change results; checking the first and last prompt keeps make test quick
    for seq_id, prompt in list(state["seq"].items())[:: max(b - 1, 1)]:
        assert batch.sequences[seq_id].tokens == single_stream_reference(prompt), prompt
    assert all(n == b * N_BATCH_TOKENS for _, n in runs)
    # the first step only hands out the tokens sampled at join (from the prefill logits):
    # b * (N - 1) tokens cost a forward, the same count decode_tok_s uses for one stream
    decoded = b * (N_BATCH_TOKENS - 1)
    tok_s = statistics.median(decoded / dt for dt, _ in _timed(runs))
    benchmark.extra_info.update(batch=b, aggregate_tok_s=round(tok_s, 1),
                                per_stream_tok_s=round(tok_s / b, 1), tokens_per_stream=N_BATCH_TOKENS,
                                threads=batch_engine.threads, simd=batch_engine.simd)


def test_time_to_first_token(benchmark, engine: Engine) -> None:
    """Short prompt into an empty cache, max_tokens=1: prefill plus sampling one token."""
    ids = engine.tokenize(SHORT_PROMPT)
    runs = []
    _pedantic(benchmark, lambda: runs.append(engine.generate(ids, max_tokens=1)), setup=engine.forget)
    engine.forget()
    expected = int(np.argmax(engine.prefill_logits(ids)))  # greedy: the first token is the argmax
    for g in runs:
        assert g.n_reused == 0 and g.tokens == [expected]
    ms = statistics.median(g.first_token_s for g in _timed(runs)) * 1e3
    benchmark.extra_info.update(first_token_ms=round(ms, 2), prompt_tokens=len(ids))


# Run in a fresh interpreter so the peak covers exactly: Python, the engine at flight settings
# (n_ctx 2048, one slot), and a short generation that touches every weight page.
_PEAK_RSS_CHILD = """
import json, resource
from flight.engine import Engine
with Engine.load(n_ctx=2048) as e:
    tokens, st = e._m.generate(e.tokenize({prompt!r}), {n}, 0.0, 0, 1.0, 0, [], None)
    print(json.dumps({{"tokens": len(tokens), "resident_bytes": e.resident_bytes,
                      "weight_bytes": e.weight_bytes, "alloc_bytes": e.alloc_bytes,
                      "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}}))
"""


def test_peak_resident_memory(benchmark) -> None:
    """Peak RSS (ru_maxrss, KiB on Linux) of a process that loads the engine and generates 8
    tokens; the benchmark time is that process's whole cold start."""
    n = 8
    code = _PEAK_RSS_CHILD.format(prompt=SHORT_PROMPT, n=n)

    def run_child() -> dict:
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                             text=True, timeout=120, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    r = benchmark.pedantic(run_child, rounds=1, warmup_rounds=0, iterations=1)
    assert r["tokens"] == n
    assert r["resident_bytes"] == r["weight_bytes"] + r["alloc_bytes"]
    # every weight page is read by the forward pass, so the weights at least are resident
    assert r["maxrss_kib"] * 1024 >= r["weight_bytes"]
    mib = 1024 * 1024
    benchmark.extra_info.update(peak_rss_mib=round(r["maxrss_kib"] * 1024 / mib, 1),
                                engine_resident_mib=round(r["resident_bytes"] / mib, 1),
                                weight_mib=round(r["weight_bytes"] / mib, 1),
                                alloc_mib=round(r["alloc_bytes"] / mib, 1), n_ctx=2048)
