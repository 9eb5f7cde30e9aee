"""Radiation: the Poisson draw of upsets, and flips written into another process's private
mapping of the weights through /proc/PID/mem, as radiation would, without its cooperation: into
a small child that maps a file, and into the real engine child, whose scrubber then reports it."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flight.engine.manifest import make_manifest, manifest_path
from flight.executive.engine_supervisor import EngineSupervisor
from hil.env.radiation import SeuSource, flip_in_process
from hil.synth_gguf import write_llama_gguf


@settings(max_examples=50, deadline=None)
@given(rate=st.floats(1e-7, 1e-2), octets=st.integers(1, 10**9), dt=st.floats(0.0, 100.0), seed=st.integers(0, 2**32))
def test_upsets_fall_in_the_step_over_the_weights_and_replay_by_seed(rate, octets, dt, seed):
    a, b = SeuSource(rate, octets, seed), SeuSource(rate, octets, seed)
    ups = a.draw(1000.0, dt)
    assert ups == b.draw(1000.0, dt)
    assert all(1000.0 <= u.t <= 1000.0 + dt and 0 <= u.offset < octets and 0 <= u.bit <= 7 for u in ups)


def test_the_count_is_poisson_at_the_rate_per_bit_per_day():
    src = SeuSource(1e-6, 98_362_432, seed=1)  # nominal rate over the packaged model: ~9.1 per 1000 s
    counts = [len(src.draw(0.0, 1000.0)) for _ in range(400)]
    mean = sum(counts) / len(counts)
    expected = 1e-6 * 98_362_432 * 8 * 1000.0 / 86400.0
    var = sum((c - mean) ** 2 for c in counts) / (len(counts) - 1)
    assert mean == pytest.approx(expected, abs=5 * (expected / len(counts)) ** 0.5)
    assert var == pytest.approx(expected, rel=0.3)  # Poisson: variance = mean
    with pytest.raises(ValueError):
        SeuSource(-1.0, 10)


CHILD = textwrap.dedent("""
    import mmap, sys
    f = open(sys.argv[1], "rb")
    m = mmap.mmap(f.fileno(), 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ)
    print("ready", flush=True)
    for line in sys.stdin:
        print(m[int(line)], flush=True)
""")


def test_a_flip_lands_in_the_childs_private_mapping_and_not_on_flash(tmp_path: Path):
    weights = tmp_path / "w.bin"
    weights.write_bytes(bytes(range(256)) * 64)  # 16 KiB: four pages
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(weights)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        assert flip_in_process(child.pid, weights, 9000, 3) == (9000 % 256, (9000 % 256) ^ 0b1000)
        child.stdin.write("9000\n8999\n")
        child.stdin.flush()
        assert int(child.stdout.readline()) == (9000 % 256) ^ 0b1000
        assert int(child.stdout.readline()) == 8999 % 256
        assert weights.read_bytes()[9000] == 9000 % 256  # the private copy changed, flash did not
        assert flip_in_process(child.pid, weights, 0, 7) == (0, 128)
        # outside the mapping: an OSError naming it (the runner counts such an upset as void)
        with pytest.raises(OSError, match="not mapped"):
            flip_in_process(child.pid, weights, 20000, 0)
        with pytest.raises(OSError):
            flip_in_process(child.pid, tmp_path / "other.bin", 0, 0)
    finally:
        child.kill()
        child.wait()


def test_a_flip_in_the_engine_process_is_reported_by_its_scrubber(tmp_path: Path):
    model = write_llama_gguf(tmp_path / "m.gguf", dim=128, n_layers=4, ffn=256, vocab=512, n_ctx=128)
    manifest = make_manifest(model, 4096)
    upsets: list[dict] = []
    seen = threading.Event()

    def on_scrub(kind: str, fields: dict) -> None:
        if kind == "upset":
            upsets.append(fields)
            seen.set()

    sup = EngineSupervisor(model, threads=1, n_ctx=128, manifest=manifest_path(model), scrub_period_s=1.0,
                           on_scrub=on_scrub)
    with sup:
        offset = manifest.size - 100  # in the tensor data, in the last block
        before, after = flip_in_process(sup.pid, model, offset, 2)
        assert after == before ^ 0b100
        assert seen.wait(3.0), "the scrubber did not report the upset"
        assert upsets[0]["block"] == offset // 4096
