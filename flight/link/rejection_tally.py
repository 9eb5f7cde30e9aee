"""Rejected uplink input, tallied for the LINK_REJECTIONS_SUMMARY event: however many frames a
flood brings, the ground hears of them in one event per period."""
from __future__ import annotations

import threading
import time

class RejectionTally:
    """Rejected uplink input since the last LINK_REJECTIONS_SUMMARY (at most one per period)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = 0
        self._reason = "NONE"
        self._since = time.monotonic()
        self._suppressed_before = 0

    def add(self, reason: str) -> None:
        with self._lock:
            self._count += 1
            self._reason = reason

    def take_if_due(self, now: float, period_s: float, suppressed_total: int) -> tuple[int, int, str] | None:
        """(count, reports suppressed, last reason) once a period has passed with rejections."""
        with self._lock:
            if now - self._since < period_s or not self._count:
                return None
            # LINK_REJECTIONS_SUPPRESSED only grows, except when CMD_CLEAR_COUNTERS zeroes it.
            before = self._suppressed_before if suppressed_total >= self._suppressed_before else 0
            summary = (self._count, suppressed_total - before, self._reason)
            self._count, self._since, self._suppressed_before = 0, now, suppressed_total
            return summary
