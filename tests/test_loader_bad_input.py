"""Bad input to the model loader and the CLI: always a one-line EngineError (a ValueError) or a
one-line error exit, never a crash, a hang or a traceback.

Every Engine.load runs in a worker subprocess (one, reused; restarted after a crash), so a
segfault or abort is reported as a test failure naming the input instead of killing pytest,
and a hang as a timeout. The worker runs under a 4 GiB address-space limit so that a loader
trusting a corrupted size fails (MemoryError -> test failure) instead of exhausting the machine.
"""
from __future__ import annotations

import importlib.util
import json
import os
import select
import shutil
import signal
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hil.synth_gguf import gguf_layout, write_llama_gguf

ROOT = Path(__file__).resolve().parent.parent
try:
    from flight.engine import Engine, EngineError  # noqa: F401  (the worker imports them again)
    ENGINE_BUILT = True
except ImportError:
    ENGINE_BUILT = False
pytestmark = pytest.mark.skipif(not ENGINE_BUILT, reason="flight.engine not built")

LOAD_TIMEOUT_S = 30.0
WORKER = r"""
import json, os, resource, sys
out = os.fdopen(os.dup(1), "w", buffering=1)
os.dup2(2, 1)  # whatever the engine prints goes to stderr, not into the protocol
resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
from flight.engine import Engine, EngineError
out.write(json.dumps({"ready": True}) + "\n")
for line in sys.stdin:
    req = json.loads(line)
    try:
        eng = Engine.load(req["path"], **req["kwargs"])
    except BaseException as e:
        res = {"outcome": "raised", "type": type(e).__name__, "engine_error": isinstance(e, EngineError),
               "value_error": isinstance(e, ValueError), "msg": str(e)}
    else:
        res = {"outcome": "loaded"}
        if req.get("probe"):  # the loader accepted it: running it must not crash either
            try:
                eng.prefill_logits([1, 2, 3])
                res["probe"] = "ok"
            except BaseException as e:
                res["probe"] = f"{type(e).__name__}: {e}"
                res["probe_engine_error"] = isinstance(e, EngineError)
        eng.close()
    out.write(json.dumps(res) + "\n")
"""


class Worker:
    """One long-lived `python -c WORKER` process; load() sends a request and waits for a reply."""

    def __init__(self, keep_dir: Path):
        self.proc: subprocess.Popen | None = None
        self.keep_dir = keep_dir
        self.n_crashes = 0

    def _start(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.proc = subprocess.Popen([sys.executable, "-c", WORKER], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                     cwd=str(ROOT), env=env)
        hello = self._read(60.0)
        assert hello == {"ready": True}, f"worker failed to start: {hello}"

    def _read(self, timeout: float) -> dict:
        assert self.proc is not None and self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            self.stop()
            return {"outcome": "hang"}
        line = self.proc.stdout.readline()
        if not line:
            rc = self.proc.wait(timeout=10)
            self.proc = None
            name = signal.Signals(-rc).name if rc < 0 else f"exit status {rc}"
            return {"outcome": "crash", "how": name}
        return json.loads(line)

    def load(self, path, probe: bool = False, **kwargs) -> dict:
        """Engine.load(path, threads=2, n_ctx=64, n_batch=1, **kwargs) in the worker."""
        kwargs = {"threads": 2, "n_ctx": 64, "n_batch": 1, **kwargs}
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"path": str(path), "kwargs": kwargs, "probe": probe}) + "\n")
        self.proc.stdin.flush()
        res = self._read(LOAD_TIMEOUT_S)
        if res["outcome"] in ("crash", "hang") and Path(path).is_file():
            self.n_crashes += 1
            keep = self.keep_dir / f"{res['outcome']}{self.n_crashes}_{Path(path).name}"
            shutil.copyfile(path, keep)
            res["kept"] = str(keep)
        return res

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()  # our own child, by handle
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    w = Worker(tmp_path_factory.mktemp("loader_crash_inputs"))
    yield w
    w.stop()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return tmp_path_factory.mktemp("loader_inputs")


@pytest.fixture(scope="module")
def good(files):
    """A small valid model: 1 layer, Q4_1, tied, vocab 300, context 128."""
    return write_llama_gguf(files / "good.gguf", n_layers=1, weight_type="Q4_1")


@pytest.fixture(scope="module")
def good_bytes(good) -> bytes:
    return good.read_bytes()


@pytest.fixture(scope="module")
def layout(good):
    return gguf_layout(good)


def assert_engine_error(res: dict, *keywords: str, what: str = "") -> None:
    """res must be a clean EngineError with a one-line message (mentioning one of keywords)."""
    assert res["outcome"] == "raised", f"{what}: expected EngineError, got {res}"
    assert res["engine_error"] and res["value_error"], f"{what}: raised {res['type']}, not EngineError: {res['msg']!r}"
    msg = res["msg"].strip()
    assert msg and len(msg.splitlines()) == 1, f"{what}: message is not one line: {res['msg']!r}"
    assert len(msg) < 400, f"{what}: message too long: {msg[:200]!r}..."
    if keywords:
        assert any(k.lower() in msg.lower() for k in keywords), f"{what}: {msg!r} names none of {keywords}"


def assert_no_crash(res: dict, what: str = "") -> None:
    """Corrupted-but-maybe-valid input: loading may succeed or fail cleanly, nothing else."""
    assert res["outcome"] in ("raised", "loaded"), f"{what}: {res}"
    if res["outcome"] == "raised":
        assert_engine_error(res, what=what)
    elif "probe_engine_error" in res:
        assert res["probe_engine_error"], f"{what}: loaded, then prefill raised {res['probe']}"


def variant(files: Path, name: str, **kw) -> Path:
    kw.setdefault("n_layers", 1)
    return write_llama_gguf(files / f"{name}.gguf", **kw)


def patched(files: Path, data: bytes, name: str, edits: list[tuple[int, bytes]] = (), size: int | None = None) -> Path:
    buf = bytearray(data if size is None else data[:size])
    for off, b in edits:
        buf[off:off + len(b)] = b
    p = files / f"{name}.gguf"
    p.write_bytes(bytes(buf))
    return p


# ---------------------------------------------------------------------------------------------
# a minimal GGUF walker: the offsets of every structural integer (counts, lengths, type ids,
# dims, offsets), the bytes where corruption is most dangerous
# ---------------------------------------------------------------------------------------------
_SCALAR_SIZE = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
STRING, ARRAY = 8, 9


def walk_gguf(data: bytes) -> dict:
    spans: list[tuple[int, int, str]] = []
    pos = 0

    def take(n: int, what: str) -> int:
        nonlocal pos
        v = int.from_bytes(data[pos:pos + n], "little")
        spans.append((pos, n, what))
        pos += n
        return v

    take(4, "magic")
    take(4, "version")
    n_tensors = take(8, "n_tensors")
    n_kv = take(8, "n_kv")
    kv = {}
    for _ in range(n_kv):
        start = pos
        klen = take(8, "key_len")
        key = data[pos:pos + klen].decode()
        pos += klen
        vtype = take(4, f"{key}:type")
        if vtype == STRING:
            n = take(8, f"{key}:len")  # (not `pos += take()`: that would add to the old pos)
            pos += n
        elif vtype == ARRAY:
            etype = take(4, f"{key}:elem_type")
            count = take(8, f"{key}:count")
            for _ in range(count):
                if etype == STRING:
                    n = take(8, f"{key}:item_len")
                    pos += n
                else:
                    pos += _SCALAR_SIZE[etype]
        else:
            pos += _SCALAR_SIZE[vtype]
        kv[key] = (start, pos)
    tensors = {}
    for _ in range(n_tensors):
        nlen = take(8, "name_len")
        name = data[pos:pos + nlen].decode()
        pos += nlen
        n_dims = int.from_bytes(data[pos:pos + 4], "little")
        field = {"n_dims": pos}
        take(4, f"{name}:n_dims")
        field["dims"] = pos
        for j in range(n_dims):
            take(8, f"{name}:dim{j}")
        field["type"] = pos
        take(4, f"{name}:type")
        field["offset"] = pos
        take(8, f"{name}:offset")
        tensors[name] = field
    return {"spans": spans, "kv": kv, "tensors": tensors, "ti_end": pos}


def test_walker_agrees_with_gguf_reader(good_bytes, layout):
    w = walk_gguf(good_bytes)
    assert set(w["tensors"]) == set(layout["tensors"])
    assert min(s for s, _ in w["kv"].values()) == layout["kv_start"]
    assert min(f["n_dims"] for f in w["tensors"].values()) > layout["ti_start"]
    assert layout["ti_start"] <= w["ti_end"] <= layout["data_start"]


def test_the_good_file_loads(worker, good):
    res = worker.load(good, probe=True, threads=2, n_ctx=128, n_batch=1)
    assert res == {"outcome": "loaded", "probe": "ok"}


# ---------------------------------------------------------------------------------------------
# whole-file problems
# ---------------------------------------------------------------------------------------------
def test_missing_file(worker, files):
    assert_engine_error(worker.load(files / "does_not_exist.gguf"), "does_not_exist", "no such", "not found",
                        what="missing file")


def test_directory_instead_of_file(worker, files):
    assert_engine_error(worker.load(files), what="directory")


def test_empty_file(worker, files):
    p = files / "empty.gguf"
    p.write_bytes(b"")
    assert_engine_error(worker.load(p), what="empty file")


@pytest.mark.parametrize("magic", [b"GGML", b"GGJT", b"FUGG", b"\0\0\0\0", b"ggup"])
def test_wrong_magic(worker, files, good_bytes, magic):
    p = patched(files, good_bytes, f"magic_{magic.hex()}", [(0, magic)])
    assert_engine_error(worker.load(p), "magic", "gguf", "not a", what=f"magic {magic!r}")


@pytest.mark.parametrize("version", [0, 1, 4, 0xFFFFFFFF])
def test_unsupported_version(worker, files, good_bytes, version):
    p = patched(files, good_bytes, f"version_{version}", [(4, struct.pack("<I", version))])
    assert_engine_error(worker.load(p), "version", what=f"version {version}")


def test_not_a_gguf_at_all(worker, files):
    p = files / "text.gguf"
    p.write_bytes(b"hello, this is not a model\n" * 100)
    assert_engine_error(worker.load(p), what="text file")


# ---------------------------------------------------------------------------------------------
# truncation
# ---------------------------------------------------------------------------------------------
def _truncation_points(layout) -> list[int]:
    k, t, d, e = layout["kv_start"], layout["ti_start"], layout["data_start"], layout["data_end"]
    return sorted({0, 1, 3, 4, 7, 8, 12, 16, 23, 24, k + 4, k + 9, (k + t) // 2, t - 1, t, t + 5,
                   (t + d) // 2, d - 1, d, d + 1, (d + e) // 2, e - 1})


def test_truncated_at_section_boundaries(worker, files, good_bytes, layout):
    for n in _truncation_points(layout):
        p = patched(files, good_bytes, f"trunc_{n}", size=n)
        assert_engine_error(worker.load(p), what=f"truncated to {n} of {len(good_bytes)} bytes")
        p.unlink()


@settings(max_examples=70, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_truncated_anywhere(worker, files, good_bytes, layout, data):
    # any length short of the end of the last tensor's bytes is missing data
    # (only the trailing alignment padding may go)
    n = data.draw(st.integers(0, layout["data_end"] - 1), label="length")
    p = patched(files, good_bytes, "trunc_any", size=n)
    assert_engine_error(worker.load(p), what=f"truncated to {n} bytes")


# ---------------------------------------------------------------------------------------------
# bit flips in header / metadata / tensor info: clean error or a working model, nothing else
# ---------------------------------------------------------------------------------------------
def _flip(buf: bytearray, bit: int) -> None:
    buf[bit // 8] ^= 1 << (bit % 8)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_bit_flips_in_structural_fields(worker, files, good_bytes, data):
    spans = walk_gguf(good_bytes)["spans"]
    buf = bytearray(good_bytes)
    what = []
    for _ in range(data.draw(st.integers(1, 3), label="n_flips")):
        off, size, name = data.draw(st.sampled_from(spans), label="field")
        bit = data.draw(st.integers(0, size * 8 - 1), label="bit")
        _flip(buf, off * 8 + bit)
        what.append(f"{name}@{off} bit {bit}")
    p = files / "flip_struct.gguf"
    p.write_bytes(bytes(buf))
    assert_no_crash(worker.load(p, probe=True), what="; ".join(what))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_bit_flips_anywhere_before_tensor_data(worker, files, good_bytes, layout, data):
    buf = bytearray(good_bytes)
    region = data.draw(st.sampled_from(["header", "kv", "tensor_info"]), label="region")
    lo, hi = {"header": (0, 24), "kv": (24, layout["ti_start"]),
              "tensor_info": (layout["ti_start"], layout["data_start"])}[region]
    flips = data.draw(st.lists(st.integers(lo * 8, hi * 8 - 1), min_size=1, max_size=4), label="bits")
    for b in flips:
        _flip(buf, b)
    p = files / "flip_any.gguf"
    p.write_bytes(bytes(buf))
    assert_no_crash(worker.load(p, probe=True), what=f"{region} bits {flips}")


# ---------------------------------------------------------------------------------------------
# targeted corruptions of counts, lengths, types, dims and offsets
# ---------------------------------------------------------------------------------------------
U64_BAD = [2**63, 2**64 - 1, 2**32, 10**9]


@pytest.mark.parametrize("field", ["n_tensors", "n_kv"])
@pytest.mark.parametrize("value", U64_BAD + [0], ids=hex)
def test_huge_or_zero_counts(worker, files, good_bytes, field, value):
    off = 8 if field == "n_tensors" else 16
    p = patched(files, good_bytes, f"{field}_{value}", [(off, struct.pack("<Q", value))])
    assert_engine_error(worker.load(p), what=f"{field} = {value}")


def _kv_edit(good_bytes: bytes, key: str, part: str, value: bytes) -> tuple[int, bytes]:
    start, _ = walk_gguf(good_bytes)["kv"][key]
    klen = int.from_bytes(good_bytes[start:start + 8], "little")
    vt = start + 8 + klen  # value type
    return {"key_len": start, "type": vt, "len": vt + 4, "elem_type": vt + 4, "count": vt + 8}[part], value


@pytest.mark.parametrize("key,part,value", [
    ("general.architecture", "key_len", struct.pack("<Q", 2**63)),
    ("general.architecture", "key_len", struct.pack("<Q", 0)),
    ("general.architecture", "type", struct.pack("<I", 99)),
    ("general.architecture", "len", struct.pack("<Q", 2**64 - 1)),
    ("general.architecture", "len", struct.pack("<Q", 10**6)),
    ("llama.block_count", "type", struct.pack("<I", 8)),  # uint32 read as a string
    ("llama.block_count", "type", struct.pack("<I", 9)),  # ... as an array
    ("tokenizer.ggml.tokens", "count", struct.pack("<Q", 2**62)),
    ("tokenizer.ggml.tokens", "count", struct.pack("<Q", 2**31 + 5)),
    ("tokenizer.ggml.tokens", "elem_type", struct.pack("<I", 9)),  # array of arrays
    ("tokenizer.ggml.tokens", "elem_type", struct.pack("<I", 77)),
    ("tokenizer.ggml.merges", "count", struct.pack("<Q", 2**63 + 1)),
    ("tokenizer.ggml.token_type", "elem_type", struct.pack("<I", 12)),  # int32 items read as f64
], ids=lambda v: v.hex() if isinstance(v, bytes) else str(v))
def test_corrupt_metadata_encoding(worker, files, good_bytes, key, part, value):
    off, b = _kv_edit(good_bytes, key, part, value)
    p = patched(files, good_bytes, f"kv_{key}_{part}_{b.hex()}", [(off, b)])
    assert_no_crash(worker.load(p, probe=True), what=f"{key} {part} <- {b.hex()}")
    if part in ("key_len", "len", "count") or key == "general.architecture":
        assert_engine_error(worker.load(p), what=f"{key} {part} <- {b.hex()}")


TI_CASES = [
    ("blk.0.attn_q.weight", "n_dims", struct.pack("<I", 0)),
    ("blk.0.attn_q.weight", "n_dims", struct.pack("<I", 5)),
    ("blk.0.attn_q.weight", "n_dims", struct.pack("<I", 0xFFFFFFFF)),
    ("blk.0.attn_q.weight", "dim0", struct.pack("<Q", 0)),
    ("blk.0.attn_q.weight", "dim0", struct.pack("<Q", 2**63)),
    ("blk.0.attn_q.weight", "dim1", struct.pack("<Q", 2**62 + 64)),  # product overflows
    ("blk.0.attn_q.weight", "dim0", struct.pack("<Q", 48)),          # not a multiple of the block
    ("token_embd.weight", "dim1", struct.pack("<Q", 2**40)),
    ("blk.0.ffn_down.weight", "type", struct.pack("<I", 99)),
    ("blk.0.ffn_down.weight", "type", struct.pack("<I", 2**31)),
    ("blk.0.ffn_down.weight", "type", struct.pack("<I", 6)),         # Q5_0: same data too short
    ("blk.0.ffn_down.weight", "type", struct.pack("<I", 0)),         # F32: data far too short
    ("output_norm.weight", "offset", struct.pack("<Q", 2**64 - 32)),
    ("output_norm.weight", "offset", struct.pack("<Q", 2**63)),
    ("blk.0.attn_v.weight", "offset", struct.pack("<Q", 1)),         # misaligned
    ("blk.0.ffn_up.weight", "offset", struct.pack("<Q", 10**7)),     # past the end of the file
    ("blk.0.attn_k.weight", "name_len", struct.pack("<Q", 2**63)),
    ("blk.0.attn_k.weight", "name_len", struct.pack("<Q", 0)),
]


@pytest.mark.parametrize("tensor,part,value", TI_CASES, ids=lambda v: v.hex() if isinstance(v, bytes) else str(v))
def test_corrupt_tensor_info(worker, files, good_bytes, tensor, part, value):
    f = walk_gguf(good_bytes)["tensors"][tensor]
    if part == "name_len":
        off = f["n_dims"] - 8 - len(tensor)
    elif part.startswith("dim"):
        off = f["dims"] + 8 * int(part[3:])
    else:
        off = f[part]
    p = patched(files, good_bytes, f"ti_{tensor}_{part}_{value.hex()}", [(off, value)])
    assert_engine_error(worker.load(p), what=f"{tensor} {part} <- {value.hex()}")


def test_overlapping_tensor_data(worker, files, good_bytes):
    t = walk_gguf(good_bytes)["tensors"]
    src = good_bytes[t["blk.0.attn_q.weight"]["offset"]:t["blk.0.attn_q.weight"]["offset"] + 8]
    p = patched(files, good_bytes, "overlap", [(t["blk.0.attn_k.weight"]["offset"], src)])
    # two tensors sharing bytes is not memory-unsafe; either answer is fine, a crash is not
    assert_no_crash(worker.load(p, probe=True), what="attn_k offset = attn_q offset")


# ---------------------------------------------------------------------------------------------
# well-formed files that are not a model we support
# ---------------------------------------------------------------------------------------------
def test_unsupported_architecture(worker, files):
    p = variant(files, "arch_gpt2", arch="gpt2")
    assert_engine_error(worker.load(p), "gpt2", "architecture", what="general.architecture gpt2")


@pytest.mark.parametrize("qtype", ["Q5_0", "Q5_1", "BF16"])
def test_unsupported_tensor_type(worker, files, qtype):
    p = variant(files, f"type_{qtype}", tensor_types={"blk.0.ffn_gate.weight": qtype})
    assert_engine_error(worker.load(p), qtype, "type", what=f"ffn_gate as {qtype}")


@pytest.mark.parametrize("name", ["token_embd.weight", "output_norm.weight", "blk.0.attn_norm.weight",
                                  "blk.0.attn_q.weight", "blk.0.attn_v.weight", "blk.1.ffn_down.weight",
                                  "blk.1.ffn_norm.weight"])
def test_missing_required_tensor(worker, files, name):
    p = write_llama_gguf(files / f"missing_{name}.gguf", n_layers=2, skip_tensors=[name])
    assert_engine_error(worker.load(p), name, what=f"without {name}")


@pytest.mark.parametrize("name,shape", [
    ("blk.0.attn_q.weight", (64, 96)),    # row length != dim
    ("blk.0.attn_q.weight", (96, 64)),    # too many rows
    ("blk.0.attn_k.weight", (64, 64)),    # n_kv_heads * head_dim is 32
    ("blk.0.ffn_down.weight", (64, 64)),  # row length != ffn (96)
    ("blk.0.ffn_up.weight", (64, 64)),
    ("token_embd.weight", (299, 64)),     # != vocab
    ("output_norm.weight", (96,)),
    ("blk.0.attn_norm.weight", (32, 64)),  # a matrix where a vector belongs
], ids=str)
def test_wrong_tensor_shape(worker, files, name, shape):
    types = {name: "F32"} if len(shape) == 1 or shape[-1] % 32 else {}
    p = variant(files, f"shape_{name}_{'x'.join(map(str, shape))}", tensor_shapes={name: shape}, tensor_types=types)
    assert_engine_error(worker.load(p), name, "shape", what=f"{name} {shape}")


@pytest.mark.parametrize("kv,keywords", [
    ({"llama.block_count": None}, ("block_count",)),
    ({"llama.embedding_length": None}, ("embedding_length",)),
    ({"llama.attention.head_count": None}, ("head_count",)),
    ({"llama.attention.head_count": 5}, ("head",)),            # 64 % 5 != 0
    ({"llama.attention.head_count_kv": 3}, ("head",)),         # 4 % 3 != 0
    ({"llama.attention.head_count_kv": 0}, ("head",)),
    ({"llama.attention.head_count": 0}, ("head",)),
    ({"llama.block_count": 2}, ("blk.1",)),                    # tensors of layer 1 absent
    ({"llama.block_count": 0}, ("block",)),
    ({"llama.block_count": 2**31}, ("block",)),
    ({"llama.embedding_length": 96}, ()),
    ({"llama.feed_forward_length": 64}, ()),
    ({"llama.context_length": 0}, ("context",)),
    ({"llama.rope.dimension_count": 17}, ("rope", "dimension")),
    ({"llama.rope.dimension_count": 64}, ("rope", "dimension")),  # > head_dim 16
    ({"llama.vocab_size": 301}, ("vocab",)),
    ({"llama.block_count": "one"}, ("block_count",)),          # wrong value type
    ({"general.architecture": None}, ("architecture",)),
    ({"general.alignment": 0}, ("alignment",)),                # must not divide by zero
    ({"general.alignment": 3}, ("alignment",)),                # not a power of two
    ({"tokenizer.ggml.tokens": None}, ("token",)),
    ({"tokenizer.ggml.bos_token_id": 1000}, ("token", "bos")),
], ids=lambda v: ",".join(f"{k}={v}" for k, v in v.items()) if isinstance(v, dict) else "")
def test_bad_hyperparameters(worker, files, kv, keywords):
    name = "kv_" + "_".join(f"{k}-{v}" for k, v in kv.items())
    p = variant(files, name.replace("/", ""), extra_kv=kv)
    assert_engine_error(worker.load(p, probe=True), *keywords, what=str(kv))


def test_token_list_shorter_than_vocab(worker, files):
    from hil.synth_gguf import build_vocab

    tokens, types, _, _ = build_vocab(300)
    p = variant(files, "short_tokens", extra_kv={"tokenizer.ggml.tokens": tokens[:299],
                                                 "tokenizer.ggml.token_type": types[:299]})
    assert_engine_error(worker.load(p), "vocab", "token", what="299 tokens for 300 embedding rows")


@pytest.mark.parametrize("kv", [
    {"tokenizer.ggml.merges": ["Ġt", "h e"]},            # a merge that is not two tokens
    {"tokenizer.ggml.merges": ["Ġ zzqx"]},              # a merge of a token not in the vocabulary
    {"tokenizer.ggml.merges": ["Ġ t", "Ġt he"],         # (found by fuzzing: a flipped bit in a
     "tokenizer.ggml.tokens": None},                    #  token string breaks the BPE build)
    {"tokenizer.ggml.model": "sentencepiece-xyz"},
    {"tokenizer.ggml.token_type": [1] * 10},
], ids=lambda kv: ",".join(kv))
def test_bad_tokenizer_metadata(worker, files, kv):
    if "tokenizer.ggml.tokens" in kv:  # keep the tokens list, minus "Ġt"
        from hil.synth_gguf import build_vocab

        tokens = build_vocab(300)[0]
        tokens[tokens.index("Ġt")] = "Ġt-corrupted"
        kv = {**kv, "tokenizer.ggml.tokens": tokens}
    name = f"tok_{zlib.crc32(repr(sorted(kv.items())).encode()):08x}"
    p = variant(files, name, extra_kv=kv)
    assert_engine_error(worker.load(p), "token", "merge", what=str(kv)[:120])


# ---------------------------------------------------------------------------------------------
# load parameters
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,keywords", [
    (dict(threads=0), ("thread",)),
    (dict(threads=-1), ("thread",)),
    (dict(threads=10000), ("thread",)),
    (dict(threads=2.5), ("thread",)),
    (dict(threads="2"), ("thread",)),
    (dict(n_ctx=0), ("context", "n_ctx")),
    (dict(n_ctx=-5), ("context", "n_ctx")),
    (dict(n_ctx=129), ("context", "n_ctx")),  # the model's context is 128
    (dict(n_ctx=2**40), ("context", "n_ctx")),
    (dict(n_batch=0), ("batch",)),
    (dict(n_batch=-1), ("batch",)),
    (dict(n_batch=10**6), ("batch",)),
    (dict(n_batch=2**40), ("batch",)),
    (dict(simd="avx512-turbo"), ("simd",)),
], ids=str)
def test_out_of_range_parameters(worker, good, kwargs, keywords):
    args = dict(threads=2, n_ctx=128, n_batch=1)
    args.update(kwargs)
    assert_engine_error(worker.load(good, **args), *keywords, what=str(kwargs))


@pytest.mark.parametrize("kwargs", [dict(threads=1), dict(threads=64), dict(n_ctx=1), dict(n_ctx=128),
                                    dict(n_batch=16)], ids=str)
def test_in_range_parameters_load(worker, good, kwargs):
    args = dict(threads=2, n_ctx=128, n_batch=1)
    args.update(kwargs)
    res = worker.load(good, probe=args["n_ctx"] >= 3, **args)
    assert res["outcome"] == "loaded" and res.get("probe", "ok") == "ok", res


# ---------------------------------------------------------------------------------------------
# the CLI
# ---------------------------------------------------------------------------------------------
try:
    CLI_AVAILABLE = importlib.util.find_spec("flight.cli") is not None
except ImportError:
    CLI_AVAILABLE = False


@pytest.mark.skipif(not CLI_AVAILABLE, reason="flight.cli not written yet")
@pytest.mark.parametrize("bad", ["missing", "empty", "directory", "truncated", "gpt2", "text"])
def test_cli_bad_model_is_one_line_error(files, good_bytes, bad):
    if bad == "missing":
        path = files / "no_such_model.gguf"
    elif bad == "directory":
        path = files
    elif bad == "gpt2":
        path = variant(files, "cli_gpt2", arch="gpt2")
    else:
        path = files / f"cli_{bad}.gguf"
        path.write_bytes({"empty": b"", "truncated": good_bytes[:1000],
                          "text": b"#!/bin/sh\necho not a model\n"}[bad])
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from flight.cli import main; sys.exit(main())",
         "generate", "--model", str(path), "--prompt", "hi"],
        capture_output=True, text=True, timeout=120, cwd=str(ROOT), env=env)
    err = proc.stderr.strip()
    assert proc.returncode not in (0, None) and proc.returncode > 0, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert err and len(err.splitlines()) == 1, f"stderr is not one line: {proc.stderr!r}"
