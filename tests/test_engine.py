"""The engine's behaviour on the real model: decoding, streaming, stopping, resuming, batching,
sampling, and the SIMD paths agreeing bit for bit."""
from __future__ import annotations

import json
import subprocess
import sys
import threading

import numpy as np
import pytest

from flight.engine import Engine, EngineError

PROMPTS = ["The capital of France is", "def fibonacci(n):", "Satellites in low Earth orbit"]


@pytest.fixture(scope="module")
def engine(real_model_path) -> Engine:
    e = Engine.load(real_model_path, n_ctx=256, n_batch=4)
    yield e
    e.close()


def test_greedy_is_deterministic_and_streams_the_same_tokens(engine: Engine) -> None:
    seen: list[int] = []
    text: list[str] = []
    g1 = engine.generate(PROMPTS[0], max_tokens=12, on_token=seen.append, on_text=text.append)
    g2 = engine.generate(PROMPTS[0], max_tokens=12)
    assert g1.tokens == g2.tokens == seen
    assert "".join(text) == g1.text == engine.detokenize(g1.tokens)
    assert g1.stop_reason == "limit" and len(g1.tokens) == 12
    assert " Paris" in g1.text


def test_callback_stops_at_a_token_boundary(engine: Engine) -> None:
    seen: list[int] = []
    g = engine.generate(PROMPTS[1], max_tokens=50, on_token=lambda t: seen.append(t) or len(seen) < 5)
    assert len(g.tokens) == 5 and g.tokens == seen and g.stop_reason == "request"


def test_request_stop_from_another_thread(engine: Engine) -> None:
    seen: list[int] = []
    started = threading.Event()

    def on_token(t: int) -> None:
        seen.append(t)
        started.set()

    result: list = []
    th = threading.Thread(target=lambda: result.append(engine.generate(PROMPTS[2], max_tokens=200,
                                                                       on_token=on_token)))
    th.start()
    assert started.wait(30)
    engine.request_stop()
    th.join(60)
    g = result[0]
    assert g.stop_reason == "request" and 1 <= len(g.tokens) < 200 and g.tokens == seen


def test_resume_continues_exactly_and_reuses_the_cache(engine: Engine, real_model_path) -> None:
    ids = engine.tokenize(PROMPTS[2])
    full = engine.generate(ids, max_tokens=20).tokens
    resumed = engine.generate(ids + full[:8], max_tokens=12)
    assert resumed.tokens == full[8:20]
    assert resumed.n_reused >= len(ids)  # the slot still held prompt + generated tokens
    # a fresh engine, with nothing cached, continues the same way
    with Engine.load(real_model_path, n_ctx=256) as fresh:
        assert fresh.generate(ids + full[:8], max_tokens=12).tokens == full[8:20]


def test_batched_decode_matches_single_streams(engine: Engine) -> None:
    alone = {p: engine.generate(p, max_tokens=10).tokens for p in PROMPTS}
    batch = engine.batch()
    ids = {batch.join(PROMPTS[0], max_tokens=10): PROMPTS[0],
           batch.join(PROMPTS[1], max_tokens=10): PROMPTS[1]}
    for _ in range(3):
        batch.step()
    ids[batch.join(PROMPTS[2], max_tokens=10)] = PROMPTS[2]  # joins between steps
    while batch.active:
        batch.step()
    for seq_id, prompt in ids.items():
        assert batch.sequences[seq_id].tokens == alone[prompt], prompt


def test_batched_sequence_can_leave_early(engine: Engine) -> None:
    batch = engine.batch()
    a = batch.join(PROMPTS[0], max_tokens=8)
    b = batch.join(PROMPTS[1], max_tokens=8)
    batch.step()
    batch.leave(a)
    while batch.active:
        batch.step()
    assert batch.sequences[a].stop_reason == "request" and len(batch.sequences[a].tokens) == 1
    assert batch.sequences[b].tokens == engine.generate(PROMPTS[1], max_tokens=8).tokens


def test_batch_refuses_more_sequences_than_slots(engine: Engine) -> None:
    batch = engine.batch()
    for _ in range(engine.n_batch):
        batch.join(PROMPTS[0], max_tokens=4)
    with pytest.raises(EngineError, match="slots are busy"):
        batch.join(PROMPTS[0], max_tokens=4)
    while batch.active:
        batch.step()


def test_sampling_is_seeded_and_reproducible(engine: Engine) -> None:
    kw = dict(max_tokens=16, temperature=0.9, top_k=40, top_p=0.95)
    a = engine.generate(PROMPTS[2], seed=7, **kw).tokens
    b = engine.generate(PROMPTS[2], seed=7, **kw).tokens
    c = engine.generate(PROMPTS[2], seed=8, **kw).tokens
    assert a == b and a != c


def test_top_k_one_is_greedy(engine: Engine) -> None:
    greedy = engine.generate(PROMPTS[0], max_tokens=8).tokens
    assert engine.generate(PROMPTS[0], max_tokens=8, temperature=1.5, top_k=1, seed=3).tokens == greedy


def test_scalar_path_gives_the_same_bits_and_tokens(engine: Engine, real_model_path) -> None:
    with Engine.load(real_model_path, n_ctx=64, threads=1, simd="scalar") as scalar:
        for p in PROMPTS[:2]:
            ids = engine.tokenize(p)
            assert np.array_equal(scalar.prefill_logits(ids), engine.prefill_logits(ids))
        assert scalar.generate(PROMPTS[0], max_tokens=6).tokens == engine.generate(PROMPTS[0], max_tokens=6).tokens


def test_prompt_longer_than_context_is_refused(real_model_path) -> None:
    with Engine.load(real_model_path, n_ctx=16) as small:
        with pytest.raises(EngineError, match="does not fit the context of 16"):
            small.generate("word " * 40, max_tokens=4)
        g = small.generate("one two three", max_tokens=100)
        assert g.stop_reason == "context" and len(g.prompt_tokens) + len(g.tokens) == 17
        # one prompt token: the most any generation can hand out, a whole context's worth
        g = small.generate([504], max_tokens=100)
        assert g.stop_reason == "context" and len(g.tokens) == 16


@pytest.mark.parametrize("kwargs, message", [
    (dict(temperature=-1.0), "temperature"),
    (dict(top_p=0.0), "top-p"),
    (dict(top_k=-2), "top-k"),
    (dict(max_tokens=0), "max tokens"),
])
def test_bad_sampling_arguments_are_refused(engine: Engine, kwargs: dict, message: str) -> None:
    with pytest.raises(EngineError, match=message):
        engine.generate(PROMPTS[0], **kwargs)


def test_out_of_vocabulary_ids_are_refused(engine: Engine) -> None:
    with pytest.raises(EngineError, match="outside the vocabulary"):
        engine.prefill_logits([1, 2, engine.config["vocab"]])


def test_resident_size_is_reported(engine: Engine) -> None:
    c = engine.config
    kv = 2 * c["n_layers"] * engine.n_batch * engine.n_ctx * c["kv_dim"] * 2  # K and V, fp16
    assert engine.alloc_bytes >= kv
    assert 90e6 < engine.weight_bytes < 110e6  # the Q4_1 file's weights, mapped once
    assert engine.resident_bytes == engine.alloc_bytes + engine.weight_bytes


def test_cli_json(real_model_path) -> None:
    out = subprocess.run([sys.executable, "-m", "flight.cli", "generate", "--prompt", "1, 2, 3,",
                          "--max-tokens", "6", "--json", "--model", str(real_model_path)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    obj = json.loads(out.stdout)
    assert obj["prompt_tokens"] and len(obj["tokens"]) == 6
    assert obj["text"].startswith(" 4, 5")
    assert obj["prefill_tok_s"] > 0 and obj["decode_tok_s"] > 0


def test_cli_chat_streams_what_the_api_generates(engine: Engine, real_model_path) -> None:
    question = "Name three planets."
    out = subprocess.run([sys.executable, "-m", "flight.cli", "generate", "--chat", "--prompt",
                          question, "--max-tokens", "20", "--model", str(real_model_path)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    expected = engine.generate(engine.chat_prompt(question), max_tokens=20)
    assert expected.text and out.stdout == expected.text + "\n"
    assert "tok/s" in out.stderr


@pytest.mark.parametrize("args, message", [
    (["--threads", "0"], "threads must be between 1"),
    (["--n-ctx", "100000"], "exceeds the model's 8192"),
    (["--max-tokens", "0"], "--max-tokens must be at least 1"),
    (["--simd", "sse9"], "unknown SIMD path"),
    (["--top-p", "2"], "top-p"),
    (["--max-tokens", "99999999999"], "max tokens 99999999999 is out of range"),
    (["--top-k", "99999999999"], "top-k 99999999999 is out of range"),
])
def test_cli_bad_arguments_give_one_line(real_model_path, args: list[str], message: str) -> None:
    out = subprocess.run([sys.executable, "-m", "flight.cli", "generate", "--prompt", "hi",
                          "--model", str(real_model_path), *args],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in out.stderr


def test_the_gil_is_released_while_the_engine_works(real_model_path) -> None:
    # A Python loop in this thread keeps its pace while a one-thread generation (about a
    # second) runs in another. Were the GIL held through the C loop, this thread would get one
    # 5 ms switch interval in all that time: well under 1% of its pace alone.
    import time

    def spin(until) -> tuple[int, float]:
        n, t0 = 0, time.perf_counter()
        while not until(t0):
            n += 1
        return n, time.perf_counter() - t0

    with Engine.load(real_model_path, n_ctx=256, threads=1) as e:
        e.generate(PROMPTS[2], max_tokens=2)  # warm the mapping
        alone, t_alone = spin(lambda t0: time.perf_counter() - t0 > 0.3)
        th = threading.Thread(target=lambda: e.generate(PROMPTS[2], max_tokens=60))
        th.start()
        during, t_during = spin(lambda t0: not th.is_alive())
        th.join()
    assert t_during > 0.2  # the generation really ran that long
    assert during / t_during > 0.1 * alone / t_alone


def test_a_tiny_nucleus_is_greedy(engine: Engine) -> None:
    greedy = engine.generate(PROMPTS[1], max_tokens=8).tokens
    # top-p keeps the smallest set of tokens whose probability exceeds p: with p tiny that is
    # the single most likely token, whatever the temperature and seed
    assert engine.generate(PROMPTS[1], max_tokens=8, temperature=2.0, top_p=1e-6, seed=5).tokens == greedy
