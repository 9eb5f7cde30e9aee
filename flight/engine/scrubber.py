"""The weight scrubber of the engine process: re-checks every block of the live weights against
the install-time manifest (flight/engine/manifest.py) at a configured period, reports the blocks
that disagree, and repairs them from flash when told to (issue 8, weight scrubbing).

Why these parts live where they do:
  - the checksum, the repair and the bit flip are C (csrc/tk_scrub.c, hardware CRC32C): the
    scan must cost well under 1% of a core, and a repair writes into the engine's own mapping;
  - pacing and bookkeeping are here, in one background thread of the engine process, which only
    takes the GIL between slices (the C check releases it);
  - the decision to repair is the executive's FDIR rule (WEIGHT_UPSET -> SCRUB_REPAIR), so that
    it is one row of the rules table like every other response: a detection is reported once,
    the block stays pending until repair() is called.

Pacing: a pass checks the blocks in slices of SLICE_BLOCKS, spread evenly over SCAN_SHARE of
the period, and the next pass starts SCAN_SHARE x period after this one did (at once if it ran
late). So every block is checked at least once every SCAN_SHARE x period, and a flip is
detected within that; the rest of the period is the budget of the FDIR round trip and the
repair, so an upset is detected and repaired within one period.
"""
from __future__ import annotations

import os
import random
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from flight.engine import EngineError
from flight.engine._engine import CScrub
from flight.engine.manifest import Manifest

SLICE_BLOCKS = 16  # 1 MiB at the default block: short enough that one slice is ~0.1 ms of C
SCAN_SHARE = 0.8  # a pass's share of the period; the rest is the repair's budget
MIN_PERIOD_S = 0.5

Report = Callable[..., None]  # report(kind, **fields): the engine process's reply stream


@dataclass
class _Upset:
    block: int
    detected_at: float  # monotonic


class Scrubber:
    """Owned by the engine process. report(kind, **fields) sends, per kind:
        upset          {block, offset}            a block disagrees (once, until repaired)
        repaired       {block, offset, pending_s} rewritten from flash and whole again
        flash_corrupt  {block, offset}            flash disagrees too: nothing written
        scrub_pass     {passes, seconds, cpu_s, blocks}
    """

    def __init__(self, c: CScrub, manifest: Manifest, period_s: float, report: Report) -> None:
        if not period_s >= MIN_PERIOD_S:
            raise EngineError(f"scrub period {period_s!r} s is below {MIN_PERIOD_S} s")
        self._c = c
        self.manifest = manifest
        self.period_s = float(period_s)
        self._report = report
        self._lock = threading.Lock()  # the pending table and the counters
        # a check and a repair never overlap: a check that read a block half rewritten would
        # report an upset that is not there
        self._scan_lock = threading.Lock()
        self._pending: dict[int, _Upset] = {}
        self._rng = random.SystemRandom()
        self.passes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def n_blocks(self) -> int:
        return self._c.n_blocks

    @property
    def direct_io(self) -> bool:
        """Repairs read the flash with O_DIRECT (False: the file system has none, e.g. tmpfs)."""
        return self._c.direct_io

    def verify(self) -> list[int]:
        """Every block now, not reported: the load-time gate's list of bad blocks."""
        return self._c.check(0, self._c.n_blocks)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="engine-scrubber", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        try:
            self._scan()
        except Exception as exc:  # an engine whose weights go unchecked must not keep serving
            print(f"engine worker: scrubber failed: {exc}", file=sys.stderr)
            sys.stderr.flush()
            os._exit(4)  # the supervisor sees the child die and respawns it: a new scrubber

    def _scan(self) -> None:
        n = self._c.n_blocks
        n_slices = -(-n // SLICE_BLOCKS)
        pass_s = SCAN_SHARE * self.period_s
        start = time.monotonic()
        while not self._stop.is_set():
            cpu0 = time.thread_time()
            for k in range(n_slices):
                due = start + k * pass_s / n_slices
                if self._stop.wait(max(due - time.monotonic(), 0.0)):
                    return
                with self._scan_lock:
                    self._note(self._c.check(k * SLICE_BLOCKS, SLICE_BLOCKS))
            now = time.monotonic()
            with self._lock:
                self.passes += 1
                passes = self.passes
            self._report("scrub_pass", passes=passes, seconds=now - start, cpu_s=time.thread_time() - cpu0,
                         blocks=n)
            start = max(start + pass_s, now)

    def _note(self, bad: list[int]) -> list[int]:
        """Record newly bad blocks as pending and report each once; returns the new ones."""
        now = time.monotonic()
        with self._lock:
            new = [b for b in bad if b not in self._pending]
            for b in new:
                self._pending[b] = _Upset(b, now)
        for b in new:
            self._report("upset", block=b, offset=b * self.manifest.block_octets)
        return new

    def scrub_now(self) -> dict[str, Any]:
        """A whole pass now (SCRUB_NOW), outside the paced loop; new upsets are reported."""
        t0 = time.monotonic()
        with self._scan_lock:
            bad = self._c.check(0, self._c.n_blocks)
            self._note(bad)
        return {"blocks": self._c.n_blocks, "bad": bad, "seconds": time.monotonic() - t0}

    def repair(self) -> None:
        """Rewrite every pending block from flash and report each outcome. A block found whole
        again (a transient in the check) counts as repaired. Stops at the first flash_corrupt:
        the engine is about to be taken out of service."""
        with self._lock:
            pending = sorted(self._pending.values(), key=lambda u: u.block)
        for upset in pending:
            offset = upset.block * self.manifest.block_octets
            with self._scan_lock:
                whole = self._c.repair(upset.block)
                if whole:
                    with self._lock:
                        self._pending.pop(upset.block, None)
            if not whole:
                self._report("flash_corrupt", block=upset.block, offset=offset)
                return
            self._report("repaired", block=upset.block, offset=offset,
                         pending_s=time.monotonic() - upset.detected_at)

    def inject(self, offset: int | None, bit: int | None) -> dict[str, int]:
        """Flip one bit of the live weights (TEST_INJECT_SEU); None picks it at random."""
        if offset is None:
            offset = self._rng.randrange(self._c.size)
        if bit is None:
            bit = self._rng.randrange(8)
        self._c.flip(offset, bit)
        return {"offset": offset, "bit": bit, "block": offset // self.manifest.block_octets}
