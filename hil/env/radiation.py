"""Radiation: single-event upsets in the model's weights, flipped into the engine's memory.

Model: upsets are a Poisson process over the weights' bits, at a rate per bit per day (nominal
LEO on the order of 1e-6 for commercial DRAM, a storm or the South Atlantic Anomaly orders of
magnitude more). Over a step of dt seconds the number of upsets is Poisson with mean
rate · bits · dt / 86400; each lands at a uniform time in the step, a uniform octet of the
weights file and a uniform bit of it. The RNG is seeded, so a scenario replays exactly.

Delivery is as radiation does it: without the flight software's cooperation. flip_in_process
writes the flipped octet through /proc/PID/mem into the engine process's private mapping of
the model file (the kernel copies the page on write, so flash stays good and the scrubber can
repair from it). The runner (hil/run.py) records each upset it delivers, so the report can pair
it with the flight's detection and repair events.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SECONDS_PER_DAY = 86400.0


@dataclass(frozen=True)
class Upset:
    """One upset: simulated time (Unix s), octet offset in the weights file, bit 0..7."""

    t: float
    offset: int
    bit: int


class SeuSource:
    """Draws upsets over a weights file of `octets` octets at `rate_per_bit_day`."""

    def __init__(self, rate_per_bit_day: float, octets: int, seed: int = 0):
        if octets < 0:
            raise ValueError(f"weights octets {octets} must be >= 0")
        self.octets = int(octets)
        self.rate_per_bit_day = 0.0
        self.set_rate(rate_per_bit_day)
        self._rng = np.random.default_rng(seed)

    def set_rate(self, rate_per_bit_day: float) -> None:
        """Change the rate from now on (a storm starting or ending)."""
        if not (rate_per_bit_day >= 0.0 and math.isfinite(rate_per_bit_day)):
            raise ValueError(f"SEU rate {rate_per_bit_day} per bit per day must be finite and >= 0")
        self.rate_per_bit_day = float(rate_per_bit_day)

    @property
    def rate_per_s(self) -> float:
        """Expected upsets per second over the whole weights."""
        return self.rate_per_bit_day * self.octets * 8 / SECONDS_PER_DAY

    def draw(self, t0: float, dt_s: float) -> list[Upset]:
        """The upsets in [t0, t0 + dt_s), in time order."""
        mean = self.rate_per_s * dt_s
        if mean <= 0.0 or self.octets == 0:
            return []
        n = int(self._rng.poisson(mean))
        if n == 0:
            return []
        times = np.sort(t0 + self._rng.random(n) * dt_s)
        offsets = self._rng.integers(0, self.octets, n)
        bits = self._rng.integers(0, 8, n)
        return [Upset(float(t), int(o), int(b)) for t, o, b in zip(times, offsets, bits)]


def _mappings(pid: int, path: Path) -> list[tuple[int, int, int]]:
    """(start, end, file offset) of every mapping of path in the process."""
    out = []
    target = str(path)
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5] == target:
            start, end = (int(x, 16) for x in fields[0].split("-"))
            out.append((start, end, int(fields[2], 16)))
    return out


def flip_in_process(pid: int, model_path: str | os.PathLike[str], offset: int, bit: int) -> tuple[int, int]:
    """Flip `bit` of the octet at file `offset` of model_path as mapped by process pid.

    Returns (octet before, octet after). Needs ptrace access to pid (same user and a parent, or
    CAP_SYS_PTRACE). OSError when the file is not mapped there at that offset or the write fails.
    """
    if not (0 <= bit <= 7):
        raise ValueError(f"bit {bit} is not in 0..7")
    path = Path(model_path).resolve()
    for start, end, file_off in _mappings(pid, path):
        if file_off <= offset < file_off + (end - start):
            address = start + (offset - file_off)
            break
    else:
        raise OSError(f"{path} offset {offset} is not mapped in process {pid}")
    with open(f"/proc/{pid}/mem", "r+b", buffering=0) as mem:
        mem.seek(address)
        before = mem.read(1)
        if len(before) != 1:
            raise OSError(f"cannot read process {pid} at {address:#x}")
        after = before[0] ^ (1 << bit)
        mem.seek(address)
        mem.write(bytes([after]))
    return before[0], after
