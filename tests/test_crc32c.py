"""CRC32C (csrc/tk_crc32c.c through flight.engine._crc32c): known values, every path equal to
every other and to the `crc32c` PyPI package, chaining, and the Armv8 path under qemu.

The qemu check builds a small C driver with tk_crc32c.c natively and with the aarch64 cross
compiler (statically, so qemu-aarch64 needs no sysroot); it prints the CRC of fixed buffers on
each path, and the aarch64 scalar and armv8 lines must equal the native ones. Needs
`aarch64-linux-gnu-gcc` and `qemu-aarch64` (apt: gcc-aarch64-linux-gnu libc6-dev-arm64-cross
qemu-user); without them that test skips and says so.
"""
from __future__ import annotations

import array
import mmap
import random
import shutil
import subprocess
from pathlib import Path

import crc32c as ref  # the PyPI package: an independent implementation
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flight.engine._crc32c import auto_path, available_paths, crc32c

ROOT = Path(__file__).resolve().parents[1]
CSRC = ROOT / "csrc"
PATHS = available_paths()  # "auto" first, then what this machine has

# RFC 3720 B.4 and the usual check value
VECTORS = [
    (b"", 0x00000000),
    (b"123456789", 0xE3069283),
    (bytes(32), 0x8A9136AA),
    (b"\xff" * 32, 0x62A8AB43),
    (bytes(range(32)), 0x46DD794E),
    (bytes(range(31, -1, -1)), 0x113FDB5C),
]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("data,expected", VECTORS, ids=["empty", "check", "zeros32", "ones32", "inc32", "dec32"])
def test_known_values(path: str, data: bytes, expected: int) -> None:
    assert crc32c(data, path=path) == expected
    assert ref.crc32c(data) == expected  # the vectors themselves, against the reference package


def test_paths() -> None:
    assert PATHS[:2] == ["auto", "scalar"]
    assert auto_path() in PATHS and auto_path() != "auto"
    if auto_path() == "scalar":
        pytest.skip("no hardware CRC32C path on this machine")  # everything else is checked above


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown CRC32C path"):
        crc32c(b"x", path="avx512")
    missing = next(p for p in ("sse42", "armv8") if p not in PATHS)
    with pytest.raises(ValueError, match="not available"):
        crc32c(b"x", path=missing)
    with pytest.raises(ValueError):
        crc32c(b"x", crc=1 << 32)
    with pytest.raises(TypeError):
        crc32c("text")  # str has no buffer: the caller chooses an encoding
    with pytest.raises((TypeError, BufferError, ValueError)):
        crc32c(memoryview(bytes(16))[::2])  # strided: not one contiguous run of bytes


def test_any_buffer_without_copy(tmp_path: Path) -> None:
    data = bytes(random.Random(1).randbytes(100_000))
    want = ref.crc32c(data)
    assert crc32c(bytearray(data)) == want
    assert crc32c(memoryview(data)[1000:]) == ref.crc32c(data[1000:])
    assert crc32c(array.array("I", data[:40000])) == ref.crc32c(data[:40000])  # not a byte format
    f = tmp_path / "blob"
    f.write_bytes(data)
    with open(f, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as m:
        assert crc32c(m) == want


@settings(max_examples=300, deadline=None)
@given(data=st.binary(min_size=0, max_size=600), offset=st.integers(0, 15), seed=st.integers(0, 2**32 - 1))
def test_paths_agree_on_any_buffer(data: bytes, offset: int, seed: int) -> None:
    # offset shifts the start against 8-byte alignment: the head/body/tail loops all get exercised
    buf = bytearray(16) + bytearray(data)
    view = memoryview(buf)[offset:offset + len(data)]
    view[:] = data
    crc = seed if seed % 3 else 0  # continued from an arbitrary CRC, or started
    want = ref.crc32c(data, crc)
    assert {p: crc32c(view, crc, path=p) for p in PATHS} == {p: want for p in PATHS}


def test_paths_agree_on_large_buffers() -> None:
    rng = random.Random(7)
    big = rng.randbytes(3 << 20)
    for n in (65535, 65536, 65537, 1 << 20, 3 << 20):  # around the GIL-release threshold, and big
        for off in (0, 1, 7):
            chunk = memoryview(big)[off:off + n - off]
            want = ref.crc32c(chunk)
            assert all(crc32c(chunk, path=p) == want for p in PATHS), (n, off)


@settings(max_examples=200, deadline=None)
@given(a=st.binary(max_size=300), b=st.binary(max_size=300), path=st.sampled_from(PATHS))
def test_chaining(a: bytes, b: bytes, path: str) -> None:
    assert crc32c(b, crc32c(a, path=path), path=path) == crc32c(a + b, path=path)


def test_a_flipped_bit_changes_the_crc() -> None:
    data = bytearray(random.Random(3).randbytes(4096))
    base = crc32c(data)
    for bit in (0, 7, 8 * 2048 + 3, 8 * 4096 - 1):
        data[bit // 8] ^= 1 << (bit % 8)
        assert crc32c(data) != base, bit
        data[bit // 8] ^= 1 << (bit % 8)


# ------------------------------------------------------------------------------------------
# the Armv8 path under qemu

CROSS_CC = "aarch64-linux-gnu-gcc"
QEMU = "qemu-aarch64"
SYSROOT = "/usr/aarch64-linux-gnu"
CFLAGS = ["-O2", "-std=c11", "-Wall", "-Wextra", "-pthread"]

# Prints "<path> <length> <offset> <crc hex>" for buffers of an LCG's bytes: every length 0..80
# (all head/tail shapes) at offsets 0..8, then a few large ones; then "auto <name>".
DRIVER = r"""
#include <stdio.h>
#include <stdint.h>
#include "tk_crc32c.h"

static uint8_t buf[(1 << 20) + 64]; /* the bytes every line checksums a slice of */

int main(int argc, char **argv) {
    uint32_t x = 12345; /* LCG state: the same bytes on every machine */
    for (size_t i = 0; i < sizeof buf; i++) {
        x = x * 1103515245u + 12345u;
        buf[i] = (uint8_t)(x >> 16);
    }
    static const size_t big[] = {1000, 4096, 65536, 65537, 1 << 20};
    for (int a = 1; a < argc; a++) {
        int path = argv[a][0] - '0';
        if (!tk_crc_available(path)) { printf("%s unavailable\n", tk_crc_name(path)); continue; }
        for (size_t n = 0; n <= 80; n++)
            for (size_t off = 0; off <= 8; off++)
                printf("%s %zu %zu %08x\n", tk_crc_name(path), n, off, tk_crc32c(0, buf + off, n, path));
        for (size_t i = 0; i < sizeof big / sizeof big[0]; i++)
            for (size_t off = 0; off <= 3; off++)
                printf("%s %zu %zu %08x\n", tk_crc_name(path), big[i], off, tk_crc32c(0, buf + off, big[i], path));
    }
    printf("auto %s\n", tk_crc_name(tk_crc_auto_path()));
    return 0;
}
"""


def _missing_tools() -> list[str]:
    return [t for t in ("cc", CROSS_CC, QEMU) if shutil.which(t) is None]


def _build(out: Path, src: Path, cross: bool) -> list[str]:
    """Command prefix to run the built driver; a failed build fails the test."""
    cc = CROSS_CC if cross else "cc"
    base = [cc, *CFLAGS, f"-I{CSRC}", str(src), str(CSRC / "tk_crc32c.c"), "-o", str(out)]
    attempts = [([cc, "-static", *base[1:]], [QEMU]), (base, [QEMU, "-L", SYSROOT])] if cross else [(base, [])]
    errors = []
    for cmd, prefix in attempts:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if p.returncode == 0:
            assert "warning" not in p.stderr, p.stderr
            return [*prefix, str(out)]
        errors.append(f"$ {' '.join(cmd)}\n{p.stderr.strip()}")
    pytest.fail("building the CRC32C driver failed:\n" + "\n".join(errors))


def _run(cmd: list[str], *paths: int) -> list[str]:
    p = subprocess.run([*cmd, *map(str, paths)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return p.stdout.splitlines()


@pytest.mark.debian
@pytest.mark.skipif(bool(_missing_tools()), reason=(
    f"Armv8-CRC-under-qemu check needs {', '.join(_missing_tools()) or 'nothing'} on PATH "
    "(apt install gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user)"))
def test_armv8_path_under_qemu_matches_x86(tmp_path: Path) -> None:
    src = tmp_path / "crc_driver.c"
    src.write_text(DRIVER)
    native = _build(tmp_path / "crc_native", src, cross=False)
    arm = _build(tmp_path / "crc_aarch64", src, cross=True)
    x86 = _run(native, 1, 2)  # scalar, sse42
    a64 = _run(arm, 1, 3)  # scalar, armv8
    assert a64[-1] == "auto armv8", f"qemu's CPU should have the CRC32 extension: {a64[-1]}"
    assert "armv8 unavailable" not in a64

    def table(lines: list[str], name: str) -> dict[tuple[str, str], str]:
        return {(f[1], f[2]): f[3] for f in (ln.split() for ln in lines) if f[0] == name and len(f) == 4}

    x86_scalar = table(x86, "scalar")
    assert len(x86_scalar) == 81 * 9 + 5 * 4
    # and the values are CRC32C: the driver's buffers through the reference package
    buf = bytearray((1 << 20) + 64)
    x = 12345
    for i in range(len(buf)):
        x = (x * 1103515245 + 12345) & 0xFFFFFFFF
        buf[i] = (x >> 16) & 0xFF
    for (n, off), crc in list(x86_scalar.items())[::7]:
        assert int(crc, 16) == ref.crc32c(bytes(buf[int(off):int(off) + int(n)])), (n, off)
    if "sse42" in PATHS:
        assert table(x86, "sse42") == x86_scalar
    assert table(a64, "scalar") == x86_scalar
    assert table(a64, "armv8") == x86_scalar
