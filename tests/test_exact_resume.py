"""Exact resume (issue 7): a job interrupted after k tokens continues with exactly the tokens it
would have produced uninterrupted, greedy or sampled, alone or inside a batch.

Two things make it so, and both are checked here bit for bit:
  * the logits of re-evaluating prompt + k tokens in one prefill equal those the uninterrupted
    run's k-th one-token decode step produced (np.array_equal on float32, not "close"): every
    kernel computes a row the same way whatever the other rows of the pass are (prefill chunks,
    the 1x4 batched tile, the one-column decode tile, other sequences of a batch, SIMD path);
  * the sampler's RNG state after token k is saved and restored (Generation.rng_state,
    on_progress, BatchEvent.rng_state; rng_state= on generate and join).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from flight.engine import Engine, EngineError
from hil.synth_gguf import write_llama_gguf

# "Satellites in low Earth orbit" as the real model's tokenizer splits it
PROMPT_IDS = [23876, 43757, 281, 1642, 2591, 8591]
SAMPLED = dict(temperature=0.8, top_k=40, top_p=0.95, seed=1234)
GREEDY = dict(temperature=0.0)
N_FULL = 40

# Recorded on the real model (SmolLM2-135M-Instruct Q4_1) before the RNG state became readable
# and settable: a seed must keep giving the tokens it gave (seeded runs of stored jobs replay).
RECORDED = [
    (dict(temperature=0.0),
     [365, 60, 2097, 2285, 25, 359, 253, 1502, 282, 8304, 338, 416, 325, 804, 288, 1108, 260, 2591,
      506, 5264, 284, 2412, 30, 1069, 359, 2724, 288, 1538, 940, 335, 11367, 1920, 28, 1285, 2779, 28,
      11687, 28, 284, 5200]),
    (dict(temperature=0.8, top_k=40, top_p=0.95, seed=1234),
     [16553, 53, 59, 29, 60, 3709, 25, 198, 198, 504, 23837, 417, 99, 6802, 450, 12386, 29, 10179,
      29, 67, 2285, 13131, 3631, 253, 21383, 282, 904, 29, 18053, 28, 904, 29, 18053, 10726, 25913,
      14130, 365, 9345, 2285, 25]),
    (dict(temperature=0.8, top_k=40, top_p=0.95, seed=7),
     [365, 60, 2097, 2285, 25, 198, 198, 504, 13934, 4731, 755, 13949, 365, 60, 4153, 25, 198, 198,
      504, 330, 8157, 2285, 365, 49, 259, 10191, 1674, 284, 33645, 2904, 24002, 25, 198, 198, 504,
      3284, 5744, 8640, 365, 37053]),
    (dict(temperature=1.0, seed=42),
     [42, 1216, 13131, 359, 9031, 351, 278, 1467, 44113, 365, 302, 2508, 1460, 25, 281, 480, 13253,
      3103, 9696, 30, 533, 1898, 502, 359, 10000, 411, 260, 8629, 5077, 28, 1035, 904, 7805, 2631, 28,
      527, 281, 4925, 351, 1035]),
    (dict(temperature=1.3, top_p=0.9, seed=2**64 - 1),
     [365, 60, 2097, 2285, 12993, 9670, 27, 2097, 5576, 60, 77, 9031, 351, 17386, 72, 5202, 281, 29,
      33475, 5646, 288, 425, 272, 912, 2591, 24762, 42, 28552, 365, 52, 7577, 33720, 12144, 9352,
      23639, 28914, 4115, 29, 8350, 8729]),
    (dict(temperature=0.7, top_k=10, seed=0),
     [416, 325, 804, 288, 2621, 260, 16027, 1955, 28, 527, 523, 1363, 4509, 335, 260, 2548, 282, 260,
      2591, 30, 198, 198, 2705, 970, 288, 536, 451, 314, 288, 722, 253, 8304, 338, 314, 23440, 253,
      3925, 28, 1343, 347]),
]
# two sampled sequences decoded together in one batch (24 tokens each), same recording
RECORDED_BATCH = {
    5: [365, 60, 2097, 2285, 25, 359, 1036, 804, 288, 1108, 260, 2165, 282, 5200, 335, 6562, 8133, 30,
        378, 1391, 506, 3003, 6987, 314],
    6: [365, 60, 2097, 2285, 25, 457, 719, 804, 288, 1108, 2412, 1363, 28, 564, 480, 8591, 553, 3435,
        260, 2591, 506, 5264, 327, 4836],
}

N_LOGITS = 20  # decode steps whose logits are compared with a re-prefill, on the real model
# prompts of the other sequences sharing a batch with the one under test
OTHER_PROMPTS = [[504, 3575, 282, 4649, 314], [1132, 28, 216, 34, 28], [1073, 2115, 281, 253],
                 [378, 260, 1699, 4082]]
OTHER_KW = dict(temperature=0.9, top_k=50, top_p=0.9)


@pytest.fixture(scope="module")
def engine(real_model_path) -> Engine:
    # 6 slots: a 5-sequence batch runs its decode matmuls through the 1x4 tile and the
    # one-column remainder, with a slot to spare for a resumed sequence joining
    e = Engine.load(real_model_path, n_ctx=160, n_batch=6)
    yield e
    e.close()


def trajectory(e: Engine, ids: list[int], n: int, kw: dict, others: Sequence[list[int]] = (),
               first: bool = True) -> tuple[list[int], list[np.ndarray]]:
    """Decode n tokens of ids in a batch, uninterrupted, next to `others` (joined after it when
    first, else before it and already a few steps along); the tokens and, for each, the logits
    it was sampled from."""
    for slot in range(e.n_batch):  # no cached prefixes: joins take the free slots in order
        e._m.forget(slot)
    b = e.batch()

    def join_others() -> None:
        for i, o in enumerate(others):
            b.join(o, max_tokens=n + 16, seed=100 + i, **OTHER_KW)

    if not first:
        join_others()
        for _ in range(3):
            b.step()
    # one token of slack: a sequence that reaches its limit leaves, and its logits with it
    seq = b.join(ids, max_tokens=n + 1, **kw)
    logits = [b.logits(seq)]  # the first token's, sampled at the join from the prefill
    if first:
        join_others()
    while len(b.sequences[seq].tokens) < n:
        events = b.step()
        mine = [ev for ev in events if ev.seq_id == seq]
        assert len(mine) == 1 and mine[0].stop_reason == "none"
        if len(b.sequences[seq].tokens) > 1:  # the first was handed out without a forward
            logits.append(b.logits(seq))
    tokens = b.sequences[seq].tokens
    for sid in list(b.sequences):
        b.leave(sid)
    return tokens, logits


def reprefill(e: Engine, ids: list[int], tokens: list[int], ks: Sequence[int]) -> dict[int, np.ndarray]:
    """Logits of prompt + the first k tokens evaluated afresh (no cached prefix), per k."""
    out = {}
    for k in ks:
        e.forget()
        out[k] = e.prefill_logits(ids + tokens[:k])
    return out


def assert_same_bits(got: np.ndarray, want: np.ndarray, what: str) -> None:
    assert got.dtype == want.dtype == np.float32
    if not np.array_equal(got, want):
        diff = np.abs(got.astype(np.float64) - want)
        pytest.fail(f"{what}: {int((got != want).sum())} logits differ, max |diff| {diff.max():.3g}")


# ---------------------------------------------------------------------------------------------
# seeds keep their tokens


def test_seeded_runs_give_the_tokens_recorded_before_the_rng_api(engine: Engine) -> None:
    for kw, tokens in RECORDED:
        assert engine.generate(PROMPT_IDS, max_tokens=N_FULL, **kw).tokens == tokens, kw
    b = engine.batch()
    seqs = {b.join(PROMPT_IDS, max_tokens=24, temperature=0.9, top_k=40, top_p=0.95, seed=s): s
            for s in RECORDED_BATCH}
    while b.active:
        b.step()
    assert {s: b.sequences[q].tokens for q, s in seqs.items()} == RECORDED_BATCH


# ---------------------------------------------------------------------------------------------
# logits: decode step k == re-prefill of prompt + k tokens, bit for bit


@pytest.fixture(scope="module")
def uninterrupted(engine: Engine) -> tuple[list[int], list[np.ndarray]]:
    return trajectory(engine, PROMPT_IDS, N_LOGITS, SAMPLED)


@pytest.fixture(scope="module")
def reprefilled(engine: Engine, uninterrupted) -> dict[int, np.ndarray]:
    return reprefill(engine, PROMPT_IDS, uninterrupted[0], range(N_LOGITS))


def test_reprefill_gives_the_decode_steps_logits(uninterrupted, reprefilled) -> None:
    tokens, logits = uninterrupted
    for k in range(N_LOGITS):
        assert_same_bits(reprefilled[k], logits[k], f"prompt + {k} tokens")
    # a batch of one decodes as generate() does: the recorded single stream's tokens
    assert tokens == RECORDED[1][1][:N_LOGITS]


@pytest.mark.parametrize("first", [True, False], ids=["tile-of-4", "remainder-column"])
def test_decode_steps_inside_a_batch_give_the_same_logits(engine: Engine, uninterrupted, reprefilled,
                                                          first: bool) -> None:
    # five sequences: the rows of slots 0-3 go through the 1x4 tile, slot 4's through the
    # one-column kernel; the sequence under test joins first (slot 0) or last (slot 4)
    tokens, logits = trajectory(engine, PROMPT_IDS, N_LOGITS, SAMPLED, OTHER_PROMPTS, first=first)
    assert tokens == uninterrupted[0]
    for k in range(N_LOGITS):
        assert_same_bits(logits[k], uninterrupted[1][k], f"batched step {k}")
        assert_same_bits(logits[k], reprefilled[k], f"batched step {k} vs re-prefill")


def test_resumed_prefill_inside_a_batch_gives_the_same_logits(engine: Engine, uninterrupted) -> None:
    tokens, logits = uninterrupted
    states: list[int] = []
    engine.forget()
    engine.generate(PROMPT_IDS, max_tokens=N_LOGITS, on_progress=lambda t, s: states.append(s),
                    **SAMPLED)
    b = engine.batch()
    for i, o in enumerate(OTHER_PROMPTS):
        b.join(o, max_tokens=60, seed=100 + i, **OTHER_KW)
    b.step()
    b.step()
    for k in (1, 7, 16):
        # the other sequences are mid-decode; this one joins with k tokens and their RNG state
        seq = b.join(PROMPT_IDS, max_tokens=N_FULL, resume_tokens=tokens[:k],
                     rng_state=states[k - 1], **SAMPLED)
        assert_same_bits(b.logits(seq), logits[k], f"joined with {k} tokens")
        ev = [e for e in b.step() if e.seq_id == seq]
        assert [e.token for e in ev] == [tokens[k]]
        b.step()
        assert_same_bits(b.logits(seq), logits[k + 1], f"joined with {k} tokens, one step on")
        b.leave(seq)
    for sid in list(b.sequences):
        b.leave(sid)


def test_scalar_path_gives_the_same_decode_and_reprefill_logits(real_model_path, uninterrupted) -> None:
    # the scalar path is ~10x slower: a short run, against the AVX2/NEON bits
    n = 6
    with Engine.load(real_model_path, n_ctx=64, simd="scalar") as scalar:
        tokens, logits = trajectory(scalar, PROMPT_IDS, n, SAMPLED)
        assert tokens == uninterrupted[0][:n]
        for k in range(n):
            assert_same_bits(logits[k], uninterrupted[1][k], f"scalar step {k} vs auto")
        for k, got in reprefill(scalar, PROMPT_IDS, tokens, [0, n - 1]).items():
            assert_same_bits(got, logits[k], f"scalar re-prefill of {k} tokens")


SYNTH_TYPES = ["F32", "F16", "Q8_0", "Q4_0", "Q4_1"]


@pytest.fixture(scope="module")
def synth_models(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("resume_models")
    # untied: the output matmul has the weight type too (tied, it would take the embedding's)
    return {t: str(write_llama_gguf(d / f"{t}.gguf", weight_type=t, tied=False, seed=11))
            for t in SYNTH_TYPES}


@pytest.mark.parametrize("simd", ["auto", "scalar"])
@pytest.mark.parametrize("wtype", SYNTH_TYPES)
def test_synthetic_models_reprefill_gives_the_decode_steps_logits(synth_models, wtype: str,
                                                                  simd: str) -> None:
    rng = np.random.default_rng(3)
    # a 60-token prompt: prompt + k tokens crosses the 64-row prefill chunk from k = 5 on
    ids = [int(i) for i in rng.integers(0, 256, 60)]
    others = [[int(i) for i in rng.integers(0, 256, n)] for n in (3, 9, 17, 30)]
    n = 10
    with Engine.load(synth_models[wtype], n_ctx=128, n_batch=5, threads=2, simd=simd) as e:
        e.eos_ids = []  # a random model may sample an end-of-turn id: the count stays fixed
        tokens, alone = trajectory(e, ids, n, SAMPLED)
        fresh = reprefill(e, ids, tokens, range(n))
        for first in (True, False):
            t, batched = trajectory(e, ids, n, SAMPLED, others, first=first)
            assert t == tokens
            for k in range(n):
                assert_same_bits(batched[k], alone[k], f"{wtype} batched step {k}")
        for k in range(n):
            assert_same_bits(fresh[k], alone[k], f"{wtype} prompt + {k} tokens")


# ---------------------------------------------------------------------------------------------
# end to end: interrupt after k tokens, resume, same tokens


def stop_after(k: int):
    """An on_progress callback that stops the run after its k-th token."""
    seen: list[int] = []

    def on_progress(token: int, state: int) -> bool:
        seen.append(token)
        return len(seen) < k

    return on_progress


@pytest.mark.parametrize("kw", [GREEDY, SAMPLED], ids=["greedy", "sampled"])
def test_interrupted_and_resumed_run_gives_the_uninterrupted_tokens(engine: Engine, kw: dict) -> None:
    checkpoints: list[int] = []
    full = engine.generate(PROMPT_IDS, max_tokens=N_FULL, on_progress=lambda t, s: checkpoints.append(s),
                           **kw)
    assert full.stop_reason == "limit" and len(full.tokens) == N_FULL
    assert full.rng_state == checkpoints[-1]
    for k in (0, 1, 16, 33):
        # preempted after k tokens: the callback stops the run there
        if k:
            cut = engine.generate(PROMPT_IDS, max_tokens=N_FULL, on_progress=stop_after(k), **kw)
            assert cut.stop_reason == "request" and cut.tokens == full.tokens[:k]
            assert cut.rng_state == checkpoints[k - 1]
            saved_tokens, saved_state = cut.tokens, cut.rng_state
        else:  # preempted before the first token: the state is the seed's
            saved_tokens, saved_state = [], Engine.rng_state_for_seed(kw.get("seed", 0))
        engine.forget()  # a restart: nothing cached
        seen: list[int] = []
        resumed = engine.generate(PROMPT_IDS, max_tokens=N_FULL, resume_tokens=saved_tokens,
                                  rng_state=saved_state, on_token=seen.append, **kw)
        assert resumed.tokens == full.tokens, k
        assert seen == full.tokens[k:] and resumed.n_resumed == k
        assert resumed.rng_state == full.rng_state and resumed.stop_reason == "limit"
        assert resumed.text == full.text


def test_resume_reuses_the_cached_prefix(engine: Engine) -> None:
    # a preemption without a restart: the slot still holds prompt + tokens, nothing is redone
    full = engine.generate(PROMPT_IDS, max_tokens=N_FULL, **SAMPLED)
    cut = engine.generate(PROMPT_IDS, max_tokens=10, **SAMPLED)  # the limit draws nothing more
    resumed = engine.generate(PROMPT_IDS, max_tokens=N_FULL, resume_tokens=cut.tokens,
                              rng_state=cut.rng_state, **SAMPLED)
    assert resumed.tokens == full.tokens
    assert resumed.n_reused == len(PROMPT_IDS) + 9  # all but the last token, evaluated again


def test_resume_inside_a_batch(engine: Engine) -> None:
    alone = {i: engine.generate(o, max_tokens=30, seed=100 + i, **OTHER_KW).tokens
             for i, o in enumerate(OTHER_PROMPTS[:3])}
    full = engine.generate(PROMPT_IDS, max_tokens=N_FULL, **SAMPLED)
    # interrupted inside a batch: the sequence leaves after 12 tokens, its last event's state kept
    b = engine.batch()
    seq = b.join(PROMPT_IDS, max_tokens=N_FULL, **SAMPLED)
    b.join(OTHER_PROMPTS[3], max_tokens=30, **OTHER_KW)
    while len(b.sequences[seq].tokens) < 12:
        last = [ev for ev in b.step() if ev.seq_id == seq][-1]
    b.leave(seq)
    saved = b.sequences[seq]
    assert saved.tokens == full.tokens[:12] and saved.rng_state == last.rng_state
    for sid in list(b.sequences):
        b.leave(sid)
    # resumed inside another batch, next to three sequences at other positions
    b = engine.batch()
    ids = {b.join(o, max_tokens=30, seed=100 + i, **OTHER_KW): i for i, o in enumerate(OTHER_PROMPTS[:3])}
    for _ in range(5):
        b.step()
    resumed = b.join(PROMPT_IDS, max_tokens=N_FULL, resume_tokens=saved.tokens,
                     rng_state=saved.rng_state, **SAMPLED)
    while b.active:
        b.step()
    assert b.sequences[resumed].tokens == full.tokens and b.sequences[resumed].n_resumed == 12
    assert b.sequences[resumed].rng_state == full.rng_state
    for sid, i in ids.items():
        assert b.sequences[sid].tokens == alone[i], i
    # and a batch checkpoint resumes in a single stream just as well
    engine.forget()
    assert engine.generate(PROMPT_IDS, max_tokens=N_FULL, resume_tokens=saved.tokens,
                           rng_state=saved.rng_state, **SAMPLED).tokens == full.tokens


# ---------------------------------------------------------------------------------------------
# the RNG state as a Python value


def test_rng_state_round_trips_as_a_64_bit_unsigned_int(engine: Engine) -> None:
    states: list[int] = []
    g = engine.generate(PROMPT_IDS, max_tokens=N_FULL, on_progress=lambda t, s: states.append(s),
                        **SAMPLED)
    assert all(type(s) is int and 1 <= s < 2**64 for s in states)
    assert len(set(states)) == len(states)  # one draw per sampled token
    assert any(s >= 2**63 for s in states)  # the top bit survives (no signed conversion)
    # greedy decoding draws nothing: its state stays the seed's
    assert engine.generate(PROMPT_IDS, max_tokens=5, seed=9).rng_state == Engine.rng_state_for_seed(9)
    assert engine.generate(PROMPT_IDS, max_tokens=5, rng_state=2**64 - 1).rng_state == 2**64 - 1
    # starting at the seed's state is the same as giving the seed
    again = engine.generate(PROMPT_IDS, max_tokens=N_FULL, rng_state=Engine.rng_state_for_seed(1234),
                            **{**SAMPLED, "seed": 999})
    assert again.tokens == g.tokens and again.rng_state == g.rng_state
    b = engine.batch()
    seq = b.join(PROMPT_IDS, max_tokens=3, rng_state=2**64 - 1, **SAMPLED)
    assert b.sequences[seq].rng_state == 2**64 - 1  # nothing handed out yet
    while b.active:
        b.step()
    assert b.sequences[seq].rng_state not in (0, 2**64 - 1)


@pytest.mark.parametrize("bad, message", [
    (-1, "between 1 and 2\\*\\*64-1"), (2**64, "between 1 and 2\\*\\*64-1"),
    (0, "between 1 and 2\\*\\*64-1"), (1.5, "must be an integer"), ("7", "must be an integer"),
    (True, "must be an integer"),
])
def test_bad_rng_states_are_refused_in_one_line(engine: Engine, bad, message: str) -> None:
    for call in (lambda: engine.generate(PROMPT_IDS, max_tokens=2, rng_state=bad, **SAMPLED),
                 lambda: engine.batch().join(PROMPT_IDS, max_tokens=2, rng_state=bad, **SAMPLED)):
        with pytest.raises(EngineError, match=message) as ei:
            call()
        assert isinstance(ei.value, ValueError) and "\n" not in str(ei.value)
    assert engine._m.batch_active == 0  # nothing half-joined


def test_resumes_that_could_not_be_exact_are_refused(engine: Engine) -> None:
    with pytest.raises(EngineError, match="needs the rng_state"):
        engine.generate(PROMPT_IDS, max_tokens=8, resume_tokens=[365], **SAMPLED)
    with pytest.raises(EngineError, match="needs the rng_state"):
        engine.batch().join(PROMPT_IDS, max_tokens=8, resume_tokens=[365], **SAMPLED)
    with pytest.raises(EngineError, match="nothing to resume"):
        engine.generate(PROMPT_IDS, max_tokens=2, resume_tokens=[365, 60])
    with pytest.raises(EngineError, match="nothing to resume"):
        engine.generate(PROMPT_IDS, max_tokens=500, resume_tokens=[365] * (engine.n_ctx - 5))
    with pytest.raises(EngineError, match="outside the vocabulary"):
        engine.generate(PROMPT_IDS, max_tokens=8, resume_tokens=[10**6])
    # greedy needs no state: it draws nothing
    full = engine.generate(PROMPT_IDS, max_tokens=8).tokens
    assert engine.generate(PROMPT_IDS, max_tokens=8, resume_tokens=full[:3]).tokens == full


def test_overwritten_logits_are_an_error_not_stale_data(engine: Engine) -> None:
    b = engine.batch()
    a = b.join(PROMPT_IDS, max_tokens=4)
    b.join(OTHER_PROMPTS[0], max_tokens=4)  # its prefill overwrites a's first logits
    with pytest.raises(EngineError, match="overwritten"):
        b.logits(a)
    b.step()
    b.step()
    assert b.logits(a).shape == (engine.config["vocab"],)
    for sid in list(b.sequences):
        b.leave(sid)
    with pytest.raises(EngineError, match="not in the batch"):
        b.logits(a)
