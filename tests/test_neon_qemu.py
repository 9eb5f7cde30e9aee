"""The NEON path (the Jetson's) gives the same bits as the scalar path, checked under qemu.

csrc/tk_run.c is built twice: natively (x86-64) and with the aarch64 cross compiler, statically
so qemu-aarch64 needs no sysroot. Each model is then run three ways -- native --simd scalar,
aarch64 --simd scalar and aarch64 --simd neon -- and the last prompt position's logits (printed
as exact hex floats) and the greedy ids must agree exactly. The design promise is that every
SIMD path does the AVX2 arithmetic in the AVX2 order, so "close" is a failure here.

Needs `aarch64-linux-gnu-gcc` and `qemu-aarch64` (apt: gcc-aarch64-linux-gnu
libc6-dev-arm64-cross qemu-user); without them the tests skip and say so.
"""
from __future__ import annotations

import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from hil.synth_gguf import write_llama_gguf

ROOT = Path(__file__).resolve().parents[1]
CSRC = ROOT / "csrc"
CFLAGS = ["-O2", "-std=c11", "-ffp-contract=off", "-pthread"]
CROSS_CC = "aarch64-linux-gnu-gcc"
QEMU = "qemu-aarch64"
SYSROOT = "/usr/aarch64-linux-gnu"  # for a dynamically linked cross build


def _missing_tools() -> list[str]:
    return [t for t in ("cc", CROSS_CC, QEMU) if shutil.which(t) is None]


pytestmark = [pytest.mark.debian, pytest.mark.skipif(
    bool(_missing_tools()),
    reason=f"NEON-under-qemu check needs {', '.join(_missing_tools()) or 'nothing'} on PATH "
    "(apt install gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user)",
)]


# ------------------------------------------------------------------------------------------
# building and running tk_run


@dataclass(frozen=True)
class Binary:
    path: Path
    prefix: tuple[str, ...]  # () natively, ("qemu-aarch64", ...) for the cross build

    def run(self, model: Path, ids: list[int], simd: str, *, generate: int = 0, threads: int = 1,
            timeout: float = 300) -> tuple[list[str], list[int]]:
        """(logits as %a strings, generated ids) of one run; a failed run fails the test."""
        cmd = [*self.prefix, str(self.path), str(model), "--ids", ",".join(map(str, ids)),
               "--simd", simd, "--threads", str(threads), "--logits"]
        if generate:
            cmd += ["--generate", str(generate)]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if p.returncode != 0:
            pytest.fail(f"{' '.join(cmd)} exited {p.returncode}: {p.stderr.strip()}")
        lines = p.stdout.splitlines()
        gen = [int(t) for t in lines.pop().split()] if generate else []
        return lines, gen


def _build(sources_dir: Path, out: Path, cross: bool) -> Binary:
    sources = sorted(str(p) for p in sources_dir.glob("*.c"))
    assert any(s.endswith("tk_run.c") for s in sources), f"no tk_run.c in {sources_dir}"
    cc = CROSS_CC if cross else "cc"
    base = [cc, *CFLAGS, f"-I{sources_dir}", *sources, "-lm", "-o", str(out)]
    attempts = [(base[:1] + ["-static"] + base[1:], (QEMU,)), (base, (QEMU, "-L", SYSROOT))] if cross \
        else [(base, ())]
    errors = []
    for cmd, prefix in attempts:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if p.returncode == 0:
            return Binary(out, prefix)
        errors.append(f"$ {' '.join(cmd)}\n{p.stderr.strip()}")
    pytest.fail("building tk_run failed:\n" + "\n".join(errors))


@pytest.fixture(scope="module")
def binaries(tmp_path_factory) -> dict[str, Binary]:
    d = tmp_path_factory.mktemp("tk_run")
    with ThreadPoolExecutor(2) as ex:
        native = ex.submit(_build, CSRC, d / "tk_run_native", False)
        arm = ex.submit(_build, CSRC, d / "tk_run_aarch64", True)
        return {"native": native.result(), "aarch64": arm.result()}


def _first_differences(a: list[str], b: list[str], n: int = 5) -> str:
    if len(a) != len(b):
        return f"{len(a)} vs {len(b)} logits"
    diff = [i for i, (x, y) in enumerate(zip(a, b)) if x != y]
    shown = ", ".join(f"[{i}] {a[i]} vs {b[i]}" for i in diff[:n])
    return f"{len(diff)} of {len(a)} logits differ, first: {shown}"


def _three_way(binaries: dict[str, Binary], model: Path, ids: list[int], generate: int,
               neon_threads: int = 1, timeout: float = 300) -> None:
    """native scalar == aarch64 scalar == aarch64 neon, logits and greedy ids; runs in parallel."""
    runs = {
        "native scalar": (binaries["native"], "scalar", 1),
        "aarch64 scalar": (binaries["aarch64"], "scalar", 1),
        "aarch64 neon": (binaries["aarch64"], "neon", neon_threads),
    }
    with ThreadPoolExecutor(len(runs)) as ex:
        futs = {k: ex.submit(b.run, model, ids, simd, generate=generate, threads=t, timeout=timeout)
                for k, (b, simd, t) in runs.items()}
        out = {k: f.result() for k, f in futs.items()}
    ref_logits, ref_ids = out["native scalar"]
    assert ref_logits and all(s.startswith(("0x", "-0x")) for s in ref_logits[:3]), ref_logits[:3]
    for name in ("aarch64 scalar", "aarch64 neon"):
        logits, gen = out[name]
        assert logits == ref_logits, f"{name} vs native scalar: {_first_differences(logits, ref_logits)}"
        assert gen == ref_ids, f"{name} generated {gen}, native scalar {ref_ids}"
    assert len(ref_ids) == generate


# ------------------------------------------------------------------------------------------
# synthetic models: every weight type, grouped and plain attention, lane tails


@dataclass(frozen=True)
class Case:
    id: str
    kwargs: dict
    n_prompt: int = 5
    neon_threads: int = 1


CASES = [
    Case("q4_0-gqa", dict(weight_type="Q4_0", dim=64, n_heads=4, n_kv_heads=2, ffn=96)),
    Case("q4_1-mha", dict(weight_type="Q4_1", dim=64, n_heads=4, n_kv_heads=4, ffn=96)),
    Case("q8_0-gqa", dict(weight_type="Q8_0", dim=64, n_heads=4, n_kv_heads=2, ffn=96)),
    # head_dim 12: the fp16 attention dot / axpy run one 8-vector and a 4-element tail
    Case("f16-mha-hd12", dict(weight_type="F16", dim=96, n_heads=8, n_kv_heads=8, ffn=96)),
    # dim 40: the f32 dot runs two 16-lane steps and an 8-element tail; head_dim 10
    Case("f32-gqa-tails", dict(weight_type="F32", dim=40, n_heads=4, n_kv_heads=2, ffn=56)),
    # mixed types, untied output, a prompt longer than one prefill chunk (64 rows: multi-column
    # matmuls), two worker threads on the NEON run
    Case("mixed-long-prompt", dict(weight_type="Q4_1", embd_type="Q8_0", output_type="Q4_0", tied=False,
                                   dim=128, n_heads=4, n_kv_heads=1, ffn=160, n_ctx=256, vocab=400, seed=3),
         n_prompt=70, neon_threads=2),
]


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("synth_gguf")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_neon_matches_scalar_bit_for_bit(binaries, synth_dir, case: Case) -> None:
    model = write_llama_gguf(synth_dir / f"{case.id}.gguf", **case.kwargs)
    vocab = case.kwargs.get("vocab", 300)
    ids = [(7 + 37 * i) % vocab for i in range(case.n_prompt)]
    _three_way(binaries, model, ids, generate=8, neon_threads=case.neon_threads, timeout=120)


# ------------------------------------------------------------------------------------------
# the real model (30 layers): a short prompt and 4 greedy tokens. Alone, the qemu runs take about
# 12 s (neon) and 18 s (scalar); the three runs in parallel take ~27 s on a 2-core x86 machine.
# It also catches what the small models miss: a change in the NEON activation quantization
# (rounding ties away from zero, or x / d for x * (1 / d)) alters these logits.

REAL_IDS = [504, 3575, 282, 4649, 314]  # "The capital of France is"


@pytest.mark.slow
def test_neon_matches_scalar_on_the_real_model(binaries, real_model_path) -> None:
    _three_way(binaries, real_model_path, REAL_IDS, generate=4, timeout=600)


# ------------------------------------------------------------------------------------------
# the check can fail: a NEON kernel with two lanes of its horizontal sum swapped must be caught
# (this also proves --simd neon really runs the NEON code, not a scalar fallback)

NEON_TREE = ("return (vgetq_lane_f32(s, 0) + vgetq_lane_f32(s, 2)) + "
             "(vgetq_lane_f32(s, 1) + vgetq_lane_f32(s, 3));")
NEON_TREE_BROKEN = ("return (vgetq_lane_f32(s, 0) + vgetq_lane_f32(s, 1)) + "
                    "(vgetq_lane_f32(s, 2) + vgetq_lane_f32(s, 3));")


def test_a_wrong_neon_lane_order_is_caught(binaries, synth_dir, tmp_path) -> None:
    src = tmp_path / "csrc"
    shutil.copytree(CSRC, src, ignore=shutil.ignore_patterns("*.o", "*.so"))
    kernels = src / "tk_kernels.c"
    text = kernels.read_text()
    if text.count(NEON_TREE) != 1:
        pytest.fail("the mutation target (neon_tree's lane order) is not in csrc/tk_kernels.c "
                    "exactly once any more: update NEON_TREE in this test")
    kernels.write_text(text.replace(NEON_TREE, NEON_TREE_BROKEN))
    broken = _build(src, tmp_path / "tk_run_aarch64_broken", True)

    model = write_llama_gguf(synth_dir / "mutation.gguf", weight_type="Q4_1", dim=64, n_heads=4,
                             n_kv_heads=2, ffn=96, seed=11)
    ids = [7, 44, 81, 118, 155]
    good, _ = binaries["aarch64"].run(model, ids, "neon", timeout=120)
    ref, _ = binaries["native"].run(model, ids, "scalar", timeout=120)
    bad, _ = broken.run(model, ids, "neon", timeout=120)
    assert good == ref, _first_differences(good, ref)
    assert bad != ref, "a NEON horizontal sum in the wrong lane order went unnoticed"
