"""Weight scrubbing (issue 8): flips in the engine's live weights are detected against the
manifest and repaired from flash, tokens after the repair equal those before, a block that is
bad on flash too is FLASH_CORRUPT without a retry loop, and a model or manifest corrupted on
flash is refused at load with one line.

In process (flight.engine.scrubber.Scrubber over an Engine) for the block-level cases; through
the engine child (EngineSupervisor) for the load gate, for a flip written into the child's
memory from outside through /proc/PID/mem as the HIL rig's radiation model will, and for
FLASH_CORRUPT taking the engine out of service.
"""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import gguf
import pytest

from flight.engine import Engine, EngineError
from flight.engine.manifest import Manifest, make_manifest, manifest_path
from flight.engine.scrubber import SCAN_SHARE, Scrubber
from flight.executive.engine_supervisor import EngineSupervisor
from hil.synth_gguf import write_llama_gguf

BLOCK = 4096  # small blocks, so a ~430 kB synthetic model has ~100 of them
N_CTX = 128
PROMPT = [5, 17, 42, 99, 7]


def _model(directory: Path) -> tuple[Path, Manifest]:
    path = write_llama_gguf(directory / "m.gguf", dim=128, n_layers=4, ffn=256, vocab=512, n_ctx=N_CTX)
    return path, make_manifest(path, BLOCK)


@pytest.fixture
def model(tmp_path: Path) -> tuple[Path, Manifest]:
    return _model(tmp_path)


class Reports:
    """The scrubber's report stream, as the engine child would send it."""

    def __init__(self) -> None:
        self.items: list[tuple[str, dict]] = []
        self.cond = threading.Condition()

    def __call__(self, kind: str, **fields: object) -> None:
        with self.cond:
            self.items.append((kind, fields))
            self.cond.notify_all()

    def kinds(self, kind: str) -> list[dict]:
        with self.cond:
            return [f for k, f in self.items if k == kind]

    def wait(self, kind: str, timeout: float) -> dict:
        with self.cond:
            assert self.cond.wait_for(lambda: any(k == kind for k, _ in self.items), timeout), self.items
            return next(f for k, f in self.items if k == kind)


def _scrubber(engine: Engine, manifest: Manifest, period_s: float = 60.0) -> tuple[Scrubber, Reports]:
    reports = Reports()
    return Scrubber(engine.scrub(manifest.crc32c, manifest.block_octets), manifest, period_s, reports), reports


def _tensor_offset(path: Path, name: str) -> int:
    """Octet of the model file where a tensor's data starts (read with the gguf package)."""
    return int(next(t for t in gguf.GGUFReader(path).tensors if t.name == name).data_offset)


@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_a_flip_in_any_block_is_detected_and_repaired_from_flash(model, where):
    path, manifest = model
    offset = {"first": 0, "middle": manifest.size // 2, "last": manifest.size - 1}[where]
    with Engine.load(path, threads=1, n_ctx=N_CTX) as engine:
        scrubber, reports = _scrubber(engine, manifest)
        assert scrubber.verify() == []
        flipped = scrubber.inject(offset, 5)
        assert flipped == {"offset": offset, "bit": 5, "block": offset // BLOCK}
        assert scrubber.scrub_now()["bad"] == [offset // BLOCK]
        assert reports.kinds("upset") == [{"block": offset // BLOCK, "offset": offset // BLOCK * BLOCK}]
        assert scrubber.scrub_now()["bad"] == [offset // BLOCK]
        assert len(reports.kinds("upset")) == 1  # reported once while pending
        scrubber.repair()
        assert [r["block"] for r in reports.kinds("repaired")] == [offset // BLOCK]
        assert scrubber.verify() == []


def test_tokens_after_repair_equal_those_before_a_flip_the_next_token_uses(model):
    path, manifest = model
    # the final norm's weights scale every logit of every token: a flipped exponent bit in one
    # of them changes what comes next
    norm = _tensor_offset(path, "output_norm.weight")
    with Engine.load(path, threads=1, n_ctx=N_CTX) as engine:
        scrubber, _ = _scrubber(engine, manifest)
        before = engine.generate(PROMPT, max_tokens=24).tokens
        scrubber.inject(norm + 3, 6)  # float32 little-endian: octet 3 holds the exponent's top bits
        engine.forget()
        corrupted = engine.generate(PROMPT, max_tokens=24).tokens
        assert corrupted != before  # the flip mattered
        assert scrubber.scrub_now()["bad"] == [(norm + 3) // BLOCK]
        scrubber.repair()
        engine.forget()
        assert engine.generate(PROMPT, max_tokens=24).tokens == before


def test_a_block_bad_on_flash_too_is_flash_corrupt_and_not_rewritten(model):
    path, manifest = model
    with Engine.load(path, threads=1, n_ctx=N_CTX) as engine:
        scrubber, reports = _scrubber(engine, manifest)
        with open(path, "r+b") as f:  # flash changes under the mapping (pages not yet copied see it)
            f.seek(5000)
            octet = f.read(1)
            f.seek(5000)
            f.write(bytes([octet[0] ^ 0x10]))
        assert scrubber.scrub_now()["bad"] == [1]
        scrubber.repair()
        assert reports.kinds("flash_corrupt") == [{"block": 1, "offset": BLOCK}]
        assert reports.kinds("repaired") == []
        assert scrubber.verify() == [1]  # left as it was: nothing good to write


def test_the_paced_scrubber_finds_a_flip_within_its_share_of_the_period(model):
    path, manifest = model
    period = 2.0
    with Engine.load(path, threads=1, n_ctx=N_CTX) as engine:
        scrubber, reports = _scrubber(engine, manifest, period)
        scrubber.start()
        try:
            reports.wait("scrub_pass", period)  # a whole pass, with the scan's CPU time
            t0 = time.monotonic()
            flipped = scrubber.inject(None, None)  # random octet and bit
            upset = reports.wait("upset", period)
            found_s = time.monotonic() - t0
            assert upset["block"] == flipped["block"]
            # every block is visited once per SCAN_SHARE of the period; one slice of slack
            assert found_s < SCAN_SHARE * period + 0.5, found_s
            scrubber.repair()
            assert reports.kinds("repaired")[0]["block"] == flipped["block"]
        finally:
            scrubber.stop()
        passes = reports.kinds("scrub_pass")
        assert passes[0]["blocks"] == manifest.n_blocks
        assert passes[0]["seconds"] == pytest.approx(SCAN_SHARE * period, abs=0.3)


# -- through the engine child --------------------------------------------------------------------

def _supervisor(path: Path, **kw: object) -> EngineSupervisor:
    return EngineSupervisor(path, threads=1, n_ctx=N_CTX, manifest=manifest_path(path), **kw)


def test_a_model_corrupted_on_flash_since_install_is_refused_at_load_with_one_line(model):
    path, _ = model
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) - 10)
        octet = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([octet[0] ^ 1]))
    with pytest.raises(EngineError) as refused:
        _supervisor(path).start()
    message = str(refused.value)
    assert "\n" not in message and "disagree with its manifest" in message and "m.gguf" in message


def test_a_corrupt_manifest_is_refused_at_load_with_one_line(model):
    path, _ = model
    doc = json.loads(manifest_path(path).read_text())
    doc["crc32c"][3] ^= 1
    manifest_path(path).write_text(json.dumps(doc))
    with pytest.raises(EngineError) as refused:
        _supervisor(path).start()
    assert "\n" not in str(refused.value) and "fails its checksum" in str(refused.value)


def _mapping_start(pid: int, path: Path) -> int:
    """Where the child mapped the model: the first line of /proc/PID/maps naming the file."""
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        fields = line.split()
        if fields[-1] == str(path) and fields[2] == "00000000":
            return int(fields[0].split("-")[0], 16)
    raise AssertionError(f"{path} is not mapped in {pid}")


def test_a_flip_written_from_outside_into_the_engine_process_is_repaired(model):
    """As radiation (and the HIL rig) does: no help from the flight software."""
    path, manifest = model
    scrubs = Reports()
    sup = _supervisor(path, scrub_period_s=1.0, on_scrub=lambda kind, fields: scrubs(kind, **fields))
    with sup:
        before = sup.generate(PROMPT, max_tokens=24).wait(30).tokens
        pid = sup.pid
        norm = _tensor_offset(path, "output_norm.weight")
        with open(f"/proc/{pid}/mem", "r+b", buffering=0) as mem:
            mem.seek(_mapping_start(pid, path) + norm + 3)
            octet = mem.read(1)
            mem.seek(-1, os.SEEK_CUR)
            mem.write(bytes([octet[0] ^ 0x40]))
        upset = scrubs.wait("upset", 2.0)
        assert upset["block"] == (norm + 3) // BLOCK and sup.scrub.pending == {upset["block"]}
        assert sup.generate(PROMPT, max_tokens=24).wait(30).tokens != before  # the flip mattered
        sup.repair()
        scrubs.wait("repaired", 5.0)
        assert sup.scrub.repaired == 1 and not sup.scrub.pending
        assert sup.generate(PROMPT, max_tokens=24).wait(30).tokens == before
        assert sup.scrub_now()["bad"] == []


def test_flash_corrupt_takes_the_engine_out_of_service_without_a_restart_loop(model):
    path, _ = model
    scrubs = Reports()
    sup = _supervisor(path, scrub_period_s=1.0, on_scrub=lambda kind, fields: scrubs(kind, **fields))
    sup.start()
    try:
        injected = sup.inject_seu(100, 0)
        assert injected == {"t": "injected", "req": injected["req"], "offset": 100, "bit": 0, "block": 0}
        with open(path, "r+b") as f:  # and flash goes bad in the block after it
            f.seek(BLOCK + 100)
            octet = f.read(1)
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([octet[0] ^ 1]))
        assert sorted(sup.scrub_now()["bad"]) == [0, 1]
        sup.repair()
        scrubs.wait("flash_corrupt", 5.0)
        deadline = time.monotonic() + 5
        while sup.state != "failed":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert "FLASH_CORRUPT" in sup.failed and sup.restarts == 0
        time.sleep(1.0)
        assert sup.restarts == 0 and sup.pid is None  # nothing respawned it
        assert [f["block"] for f in scrubs.kinds("repaired")] == [0]  # repaired in order up to the bad one
        with pytest.raises(EngineError, match="disagree with its manifest"):
            sup.restart()  # a revive finds the model refused at load: it stays out of service
        assert sup.state == "failed"
    finally:
        sup.stop()


@pytest.mark.full
def test_at_the_default_period_a_flip_in_the_real_model_is_found_and_repaired_within_it(real_model_path):
    """The issue's target at the shipped setting: 60 s, the real model (1 501 blocks of 64 KiB)."""
    from flight.config import SCHEMA
    from flight.engine.manifest import load_manifest

    period = SCHEMA["engine"]["scrub_period_s"][0]
    manifest = load_manifest(manifest_path(real_model_path))
    with Engine.load(real_model_path, threads=1, n_ctx=256) as engine:
        before = engine.generate(PROMPT, max_tokens=16).tokens
        scrubber, reports = _scrubber(engine, manifest, period)
        scrubber.start()
        try:
            t0 = time.monotonic()
            flipped = scrubber.inject(None, None)
            upset = reports.wait("upset", period)
            scrubber.repair()
            reports.wait("repaired", 5.0)
            took = time.monotonic() - t0
        finally:
            scrubber.stop()
        assert upset["block"] == flipped["block"] and took < period
        engine.forget()
        assert engine.generate(PROMPT, max_tokens=16).tokens == before
