"""A token bucket: at most `rate` units per second on average, in bursts of at most `burst`."""
from __future__ import annotations

import threading
import time


class TokenBucket:
    def __init__(self, rate: float, burst: float):
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._then = time.monotonic()
        self._lock = threading.Lock()

    def take(self, amount: float = 1.0) -> bool:
        """Spend amount if the bucket holds it; False (nothing spent) if not."""
        now = time.monotonic()
        with self._lock:
            self._tokens = min(self.burst, self._tokens + (now - self._then) * self.rate)
            self._then = now
            if self._tokens < amount:
                return False
            self._tokens -= amount
            return True
