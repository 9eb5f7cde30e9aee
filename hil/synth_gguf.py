"""Write small random llama GGUF files: a synthetic model for tests and for HIL runs that need no real one.

    write_llama_gguf(tmp_path / "m.gguf", dim=64, weight_type="Q4_0", tied=False)

Weights are N(0, 1/sqrt(fan_in)) so every matmul output has unit-ish scale; norms are
1 + 0.1 N(0,1) (so a kernel that ignores the norm weight is caught); the token embedding is
N(0, 1). Block-quantized types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) need the row length (gguf dims[0])
to be a multiple of 32: dim must be one always (every matrix but ffn_down has dim-long rows), ffn
must be one when ffn_down is block-quantized. vocab and n_heads are free.

Tokenizer metadata is a minimal GPT-2 style byte-level BPE: the 256 byte characters in GPT-2's
bytes_to_unicode order, a few merges and their tokens, the control tokens <|endoftext|>,
<|im_start|>, <|im_end|>, padded to `vocab` with normal filler tokens.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

FILE_TYPE = {"F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q5_0": 8, "Q5_1": 9, "BF16": 32}
MERGES = ["Ġ t", "Ġ a", "h e", "i n", "r e", "o n", "Ġt he", "e r"]
CONTROL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable unicode map, in GPT-2's order (printables first)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def build_vocab(vocab: int) -> tuple[list[str], list[int], list[str], dict[str, int]]:
    """tokens, token types (1 normal, 3 control), merges, and ids of the special tokens."""
    tokens = list(bytes_to_unicode().values())
    for m in MERGES:
        tokens.append(m.replace(" ", ""))
    types = [1] * len(tokens)
    special = {}
    for t in CONTROL_TOKENS:
        special[t] = len(tokens)
        tokens.append(t)
        types.append(3)
    if vocab < len(tokens):
        raise ValueError(f"vocab must be >= {len(tokens)} (byte tokens + merges + control tokens)")
    i = 0
    while len(tokens) < vocab:
        tokens.append(f"[filler{i}]")
        types.append(1)
        i += 1
    return tokens, types, list(MERGES), special


def _qtype(name: str):
    from gguf import GGMLQuantizationType

    try:
        return GGMLQuantizationType[name]
    except KeyError:
        raise ValueError(f"unknown ggml type {name!r}") from None


def _add_tensor(writer, name: str, w: np.ndarray, type_name: str) -> None:
    """Store float array w (numpy shape [rows, row_len], i.e. gguf dims reversed) as type_name."""
    import gguf
    from gguf import GGMLQuantizationType
    from gguf.quants import quantize

    qt = _qtype(type_name)
    w = np.ascontiguousarray(w, dtype=np.float32)
    if qt == GGMLQuantizationType.F32:
        writer.add_tensor(name, w)
    elif qt == GGMLQuantizationType.F16:
        writer.add_tensor(name, w.astype(np.float16))
    else:
        block = gguf.GGML_QUANT_SIZES[qt][0]
        if w.shape[-1] % block:
            raise ValueError(f"{name}: row length {w.shape[-1]} is not a multiple of the {type_name} block size {block}")
        data = quantize(w, qt)  # uint8 [rows, bytes]
        writer.add_tensor(name, data, raw_shape=data.shape, raw_dtype=qt)


def _add_kv(writer, key: str, val: Any) -> None:
    """Infer a GGUF value type: bool, int -> uint32 (int32 if negative, uint64 if large),
    float -> float32, str, list -> array; or pass (value, GGUFValueType[, sub_type])."""
    from gguf import GGUFValueType

    if isinstance(val, tuple):
        writer.add_key_value(key, val[0], val[1], *(val[2:]))
    elif isinstance(val, bool):
        writer.add_bool(key, val)
    elif isinstance(val, (int, np.integer)):
        v = int(val)
        if v < 0:
            writer.add_int32(key, v)
        elif v >= 2**32:
            writer.add_uint64(key, v)
        else:
            writer.add_uint32(key, v)
    elif isinstance(val, float):
        writer.add_float32(key, val)
    elif isinstance(val, str):
        writer.add_key_value(key, val, GGUFValueType.STRING)
    elif isinstance(val, (list, tuple)):
        writer.add_key_value(key, list(val), GGUFValueType.ARRAY)
    else:
        raise TypeError(f"cannot infer GGUF type of {key}={val!r}")


def write_llama_gguf(
    path,
    *,
    dim: int = 64,
    n_layers: int = 2,
    n_heads: int = 4,
    n_kv_heads: int = 2,
    ffn: int = 96,
    vocab: int = 300,
    n_ctx: int = 128,
    weight_type: str = "Q4_1",
    embd_type: str | None = None,
    norm_type: str = "F32",
    tied: bool = True,
    rope_base: float = 10000.0,
    seed: int = 0,
    extra_kv: Mapping[str, Any] | None = None,
    skip_tensors: Iterable[str] = (),
    arch: str = "llama",
    output_type: str | None = None,
    tensor_types: Mapping[str, str] | None = None,
    tensor_shapes: Mapping[str, tuple[int, ...]] | None = None,
    rms_eps: float = 1e-5,
) -> Path:
    """Write a random llama GGUF and return its path.

    embd_type / output_type default to weight_type. extra_kv adds or overrides metadata
    (value None deletes a key). skip_tensors omits tensors by full name. arch sets
    general.architecture only (keys stay llama.*). tensor_types / tensor_shapes override one
    tensor's type / numpy shape ([rows, row_len] = gguf dims reversed) for bad-input tests.
    extra_kv={"general.architecture": None} writes a file without general.architecture.
    """
    import gguf

    if dim % n_heads or n_heads % n_kv_heads:
        raise ValueError("dim must divide by n_heads and n_heads by n_kv_heads")
    head_dim = dim // n_heads
    path = Path(path)
    rng = np.random.default_rng(seed)
    embd_type = embd_type or weight_type
    output_type = output_type or weight_type
    skip = set(skip_tensors)
    tensor_types = dict(tensor_types or {})
    tensor_shapes = dict(tensor_shapes or {})

    tokens, types, merges, special = build_vocab(vocab)
    kv: dict[str, Any] = {
        "general.name": "tokensat synthetic llama",
        "general.file_type": FILE_TYPE.get(weight_type, 0),
        "general.quantization_version": 2,
        "llama.block_count": n_layers,
        "llama.context_length": n_ctx,
        "llama.embedding_length": dim,
        "llama.feed_forward_length": ffn,
        "llama.attention.head_count": n_heads,
        "llama.attention.head_count_kv": n_kv_heads,
        "llama.rope.freq_base": float(rope_base),
        "llama.attention.layer_norm_rms_epsilon": float(rms_eps),
        "llama.rope.dimension_count": head_dim,
        "llama.vocab_size": vocab,
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "smollm",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": types,  # int list -> array of int32, as llama.cpp writes
        "tokenizer.ggml.merges": merges,
        "tokenizer.ggml.bos_token_id": special["<|im_start|>"],
        "tokenizer.ggml.eos_token_id": special["<|im_end|>"],
        "tokenizer.ggml.unknown_token_id": special["<|endoftext|>"],
        "tokenizer.ggml.padding_token_id": special["<|im_end|>"],
        "tokenizer.ggml.add_bos_token": False,
        "tokenizer.ggml.add_space_prefix": False,
    }
    for k, v in (extra_kv or {}).items():
        if v is None:
            kv.pop(k, None)
        else:
            kv[k] = v

    w = gguf.GGUFWriter(str(path), arch)
    if "general.architecture" in (extra_kv or {}):
        del w.kv_data[0]["general.architecture"]  # extra_kv decides: a value, or None = absent
    for k, v in kv.items():
        _add_kv(w, k, v)

    def mat(rows: int, cols: int) -> np.ndarray:
        return rng.standard_normal((rows, cols)).astype(np.float32) / np.float32(np.sqrt(cols))

    def norm() -> np.ndarray:
        return (1.0 + 0.1 * rng.standard_normal(dim)).astype(np.float32)

    # every tensor is drawn from rng whether or not it is written, so skipping or overriding one
    # tensor leaves the others bit-identical to the unmodified model of the same seed
    kvd = n_kv_heads * head_dim
    plan: list[tuple[str, np.ndarray, str]] = [
        ("token_embd.weight", rng.standard_normal((vocab, dim)).astype(np.float32), embd_type),
        ("output_norm.weight", norm(), norm_type),
    ]
    out_w = mat(vocab, dim)
    if not tied:
        plan.append(("output.weight", out_w, output_type))
    for i in range(n_layers):
        p = f"blk.{i}."
        plan += [
            (p + "attn_norm.weight", norm(), norm_type),
            (p + "attn_q.weight", mat(dim, dim), weight_type),
            (p + "attn_k.weight", mat(kvd, dim), weight_type),
            (p + "attn_v.weight", mat(kvd, dim), weight_type),
            (p + "attn_output.weight", mat(dim, dim), weight_type),
            (p + "ffn_norm.weight", norm(), norm_type),
            (p + "ffn_gate.weight", mat(ffn, dim), weight_type),
            (p + "ffn_up.weight", mat(ffn, dim), weight_type),
            (p + "ffn_down.weight", mat(dim, ffn), weight_type),
        ]
    for name, arr, tname in plan:
        if name in skip:
            continue
        if name in tensor_shapes:
            shape = tuple(tensor_shapes[name])
            arr = rng.standard_normal(shape).astype(np.float32) / np.float32(np.sqrt(shape[-1]))
        _add_tensor(w, name, arr, tensor_types.get(name, tname))

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def gguf_layout(path) -> dict[str, Any]:
    """Byte offsets of a GGUF file's sections, via gguf.GGUFReader, for corruption tests:
    kv_start, ti_start (first tensor info), data_start, data_end (end of the last tensor's bytes,
    i.e. without trailing alignment padding), plus per-kv and per-tensor-info offsets."""
    import gguf

    r = gguf.GGUFReader(str(path))
    kv_fields = [f for f in r.fields.values() if not f.name.startswith("GGUF.")]
    ti_offsets = [t.field.offset for t in r.tensors]
    data_end = max(t.data_offset + t.n_bytes for t in r.tensors)
    return {
        "kv_start": min(f.offset for f in kv_fields) if kv_fields else 24,
        "kv_offsets": {f.name: f.offset for f in kv_fields},
        "ti_start": min(ti_offsets),
        "ti_offsets": {t.name: t.field.offset for t in r.tensors},
        "data_start": r.data_offset,
        "data_end": data_end,
        "size": Path(path).stat().st_size,
        "tensors": {t.name: (t.tensor_type.name, [int(d) for d in t.shape], t.data_offset, t.n_bytes)
                    for t in r.tensors},
    }
