"""Onboard time as a CCSDS Unsegmented Time Code (CUC, CCSDS 301.0-B-4), 4+2 octets.

The P-field is implicit (not sent): 4 octets of coarse time in seconds and 2 octets of fine time
in units of 2^-16 s, counted from EPOCH (1970-01-01T00:00:00Z, the Unix
epoch, so the flight computer's clock needs no conversion). Leap seconds are not counted.
"""
from __future__ import annotations

import struct
import time
from typing import NamedTuple

EPOCH = "1970-01-01T00:00:00Z"
CUC = struct.Struct(">IH")
FINE_PER_SECOND = 1 << 16


class CucTime(NamedTuple):
    coarse: int
    fine: int

    @classmethod
    def from_unix(cls, seconds: float) -> CucTime:
        coarse = int(seconds)
        fine = min(int((seconds - coarse) * FINE_PER_SECOND), FINE_PER_SECOND - 1)
        return cls(coarse & 0xFFFFFFFF, fine)

    @classmethod
    def now(cls) -> CucTime:
        return cls.from_unix(time.time())

    def to_unix(self) -> float:
        return self.coarse + self.fine / FINE_PER_SECOND
