"""CRC32C throughput per path over the real model file (a 64 MiB random buffer when the model is
not installed), and the manifest check of the whole model file (read + checksum): what the
weight scrubber will cost.

GB/s (10^9 octets per second, median over the timed rounds, from our own perf_counter timings
so it is filled with benchmarks disabled too) goes into benchmark.extra_info. Each body also
checks what it measures: every path gives the crc32c package's value.
"""
from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import crc32c as ref
import pytest

from flight.engine._crc32c import available_paths, crc32c
from flight.engine.manifest import make_manifest, verify
from flight.engine.model_path import ModelNotFound, default_model_path

ROUNDS = 5


@pytest.fixture(scope="module")
def weights() -> tuple[str, bytes]:
    """(what it is, the bytes) -- read into memory once, so the CRC is timed, not the disk."""
    try:
        p = default_model_path()
        return p.name, p.read_bytes()
    except ModelNotFound:
        return "random-64MiB", os.urandom(64 << 20)


@pytest.fixture(scope="module")
def expected(weights: tuple[str, bytes]) -> int:
    return ref.crc32c(weights[1])


@pytest.mark.parametrize("path", [p for p in available_paths() if p != "auto"])
def test_crc32c_throughput(benchmark, weights: tuple[str, bytes], expected: int, path: str) -> None:
    name, data = weights
    times: list[float] = []

    def run() -> int:
        t = time.perf_counter()
        c = crc32c(data, path=path)
        times.append(time.perf_counter() - t)
        return c

    assert benchmark.pedantic(run, rounds=ROUNDS, warmup_rounds=1, iterations=1) == expected
    gbs = len(data) / statistics.median(times[-ROUNDS:]) / 1e9
    benchmark.extra_info.update(path=path, gb_s=round(gbs, 2), octets=len(data), data=name)


def test_manifest_verify_throughput(benchmark, tmp_path: Path, weights: tuple[str, bytes]) -> None:
    """verify() of the whole file in 64 KiB blocks: page-cache reads plus the auto-path CRC."""
    name, data = weights
    model = tmp_path / "model.bin"
    model.write_bytes(data)
    manifest = make_manifest(model)
    times: list[float] = []

    def run() -> list[int]:
        t = time.perf_counter()
        bad = verify(model, manifest)
        times.append(time.perf_counter() - t)
        return bad

    assert benchmark.pedantic(run, rounds=ROUNDS, warmup_rounds=1, iterations=1) == []
    s = statistics.median(times[-ROUNDS:])
    benchmark.extra_info.update(gb_s=round(len(data) / s / 1e9, 2), whole_file_ms=round(s * 1e3, 1),
                                blocks=manifest.n_blocks, data=name)
