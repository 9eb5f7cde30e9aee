"""The weight manifest (flight/engine/manifest.py): round trip, flipped bits found in the right
block, and every kind of bad manifest refused with a one-line ManifestError."""
from __future__ import annotations

import json
import random
from pathlib import Path

import crc32c as ref
import pytest

from flight.engine.manifest import (
    FORMAT,
    Manifest,
    ManifestError,
    check_model,
    load_manifest,
    make_manifest,
    manifest_path,
    verify,
)

BLOCK = 4096  # small blocks keep the files small; the default (64 KiB) is tested once below


@pytest.fixture
def model(tmp_path: Path) -> Path:
    p = tmp_path / "tiny.gguf"
    p.write_bytes(random.Random(5).randbytes(10 * BLOCK + 123))  # 11 blocks, the last one short
    return p


def _flip(path: Path, offset: int, bit: int = 0) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([b ^ (1 << bit)]))


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert msg and "\n" not in msg, repr(msg)
    return msg


def test_round_trip(model: Path) -> None:
    m = make_manifest(model, block_octets=BLOCK)
    path = manifest_path(model)
    assert path.name == "tiny.gguf.manifest.json" and path.parent == model.parent
    assert not [p for p in model.parent.iterdir() if p.name.endswith(".tmp")]  # no temp left
    assert load_manifest(path) == m
    assert m.model == "tiny.gguf" and m.size == model.stat().st_size and m.n_blocks == 11
    data = model.read_bytes()
    assert list(m.crc32c) == [ref.crc32c(data[i:i + BLOCK]) for i in range(0, len(data), BLOCK)]
    doc = json.loads(path.read_text())
    assert doc["format"] == FORMAT and doc["block_octets"] == BLOCK
    others = {k: v for k, v in doc.items() if k != "checksum"}
    assert doc["checksum"] == ref.crc32c(json.dumps(others, sort_keys=True, separators=(",", ":")).encode())
    assert verify(model, m) == []
    assert check_model(model) == m


def test_default_block_size_and_empty_model(tmp_path: Path) -> None:
    p = tmp_path / "m.bin"
    p.write_bytes(bytes(3 * 65536 + 1))
    m = make_manifest(p)
    assert m.block_octets == 65536 and m.n_blocks == 4 and verify(p, m) == []
    e = tmp_path / "empty.bin"
    e.write_bytes(b"")
    m = make_manifest(e)
    assert m.n_blocks == 0 and load_manifest(manifest_path(e)) == m and verify(e, m) == []


def test_block_of(model: Path) -> None:
    m = make_manifest(model, block_octets=BLOCK)
    assert [m.block_of(o) for o in (0, BLOCK - 1, BLOCK, m.size - 1)] == [0, 0, 1, 10]
    assert m.block_span(10) == (10 * BLOCK, 123)
    with pytest.raises(ValueError):
        m.block_of(m.size)
    with pytest.raises(ValueError):
        m.block_of(-1)


@pytest.mark.parametrize("where", ["first", "middle", "last", "block-edge"])
def test_a_flipped_bit_is_found_in_its_block(model: Path, where: str) -> None:
    m = make_manifest(model, block_octets=BLOCK)
    offset = {"first": 0, "middle": 5 * BLOCK + 1000, "last": m.size - 1, "block-edge": 3 * BLOCK - 1}[where]
    _flip(model, offset, bit=offset % 8)
    assert verify(model, m) == [m.block_of(offset)]
    with pytest.raises(ManifestError) as e:
        check_model(model)
    assert f"block {m.block_of(offset)} at octet" in _one_line(e)


def test_several_bad_blocks(model: Path) -> None:
    m = make_manifest(model, block_octets=BLOCK)
    for off in (BLOCK + 5, 7 * BLOCK + 9, 7 * BLOCK + 10):
        _flip(model, off)
    assert verify(model, m) == [1, 7]


def test_a_model_of_another_size_is_refused(model: Path) -> None:
    m = make_manifest(model, block_octets=BLOCK)
    with open(model, "ab") as f:
        f.write(b"x")
    with pytest.raises(ManifestError) as e:
        verify(model, m)
    assert "octets" in _one_line(e)


def _rewrite(path: Path, change) -> None:
    """Edit a manifest's fields and re-sign it, so only the field check can catch it."""
    doc = json.loads(path.read_text())
    doc.pop("checksum")
    change(doc)
    doc["checksum"] = ref.crc32c(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode())
    path.write_text(json.dumps(doc))


BAD = {
    "missing": (lambda p: p.unlink(), "No such file"),
    "not-json": (lambda p: p.write_bytes(b"\x00\xffgarbage{"), "not JSON"),
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[:len(p.read_bytes()) // 2]), "not JSON"),
    "empty": (lambda p: p.write_bytes(b""), "not JSON"),
    "a-list": (lambda p: p.write_text("[1, 2]"), "checksum"),
    "wrong-checksum": (lambda p: _bump_checksum(p), "fails its checksum"),
    "checksum-as-string": (lambda p: _edit_unsigned(p, lambda d: d.__setitem__("checksum", str(d["checksum"]))),
                           "fails its checksum"),
    "a-block-crc-changed": (lambda p: _edit_unsigned(p, lambda d: d["crc32c"].__setitem__(3, d["crc32c"][3] ^ 1)),
                            "fails its checksum"),
    "block-size-changed": (lambda p: _edit_unsigned(p, lambda d: d.__setitem__("block_octets", 8192)),
                           "fails its checksum"),
    "block-size-not-power-of-two": (lambda p: _rewrite(p, lambda d: d.__setitem__("block_octets", 5000)),
                                    "block size"),
    "block-size-inconsistent": (lambda p: _rewrite(p, lambda d: d.__setitem__("block_octets", 8192)),
                                "block CRCs for"),
    "block-size-float": (lambda p: _rewrite(p, lambda d: d.__setitem__("block_octets", 4096.0)), "block size"),
    "too-few-crcs": (lambda p: _rewrite(p, lambda d: d["crc32c"].pop()), "block CRCs for"),
    "crc-out-of-range": (lambda p: _rewrite(p, lambda d: d["crc32c"].__setitem__(0, 1 << 32)), "32-bit"),
    "other-format": (lambda p: _rewrite(p, lambda d: d.__setitem__("format", "x/2")), "format"),
    "extra-field": (lambda p: _rewrite(p, lambda d: d.__setitem__("extra", 1)), "fields"),
    "negative-size": (lambda p: _rewrite(p, lambda d: d.__setitem__("size", -1)), "size"),
}


def _bump_checksum(p: Path) -> None:
    doc = json.loads(p.read_text())
    doc["checksum"] = (doc["checksum"] + 1) % (1 << 32)
    p.write_text(json.dumps(doc))


def _edit_unsigned(p: Path, change) -> None:
    """Edit a field and keep the old checksum: corruption of the manifest itself."""
    doc = json.loads(p.read_text())
    change(doc)
    p.write_text(json.dumps(doc))


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_manifest_is_refused_with_one_line(model: Path, case: str) -> None:
    make_manifest(model, block_octets=BLOCK)
    damage, words = BAD[case]
    damage(manifest_path(model))
    with pytest.raises(ManifestError) as e:
        load_manifest(manifest_path(model))
    assert words in _one_line(e)
    with pytest.raises(ManifestError):
        check_model(model)  # the load gate refuses it too


def test_bad_block_size_to_make(model: Path) -> None:
    for b in (0, 1000, 4095, 1 << 27):
        with pytest.raises(ManifestError) as e:
            make_manifest(model, block_octets=b)
        _one_line(e)


def test_missing_model(tmp_path: Path) -> None:
    with pytest.raises(ManifestError) as e:
        make_manifest(tmp_path / "nope.gguf")
    assert "cannot read model" in _one_line(e)
    m = Manifest("nope.gguf", 0, BLOCK, (), 0)
    with pytest.raises(ManifestError):
        verify(tmp_path / "nope.gguf", m)
