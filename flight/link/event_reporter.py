"""Event reports: checked against the dictionary, throttled, logged and handed to the downlink.

An event whose definition has a throttle is sent at most that many times per second (a token
bucket); the rest are counted in LINK_EVENTS_SUPPRESSED, so a noisy line cannot flood the
downlink with reports about itself.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from flight.link.dictionary import Dictionary
from flight.link.telemetry import Telemetry

log = logging.getLogger("flight.events")
_LOG_LEVEL = {"FATAL": logging.CRITICAL, "WARNING_HI": logging.WARNING, "WARNING_LO": logging.WARNING}


class EventReporter:
    def __init__(self, dictionary: Dictionary, telemetry: Telemetry, send: Callable[[dict[str, Any]], None]):
        self._dictionary = dictionary
        self._telemetry = telemetry
        self._send = send
        self._buckets: dict[str, tuple[float, float]] = {}  # name -> (tokens, monotonic time)
        self._lock = threading.Lock()

    def emit(self, name: str, **args: Any) -> bool:
        """Report an event; False if its throttle suppressed it. Raises on a bad name or argument."""
        event = self._dictionary.event_by_name[name]
        values = [args[arg.name] for arg in event.args]
        for arg, value in zip(event.args, values):
            arg.check(value)
        if event.throttle is not None and not self._take_token(name, event.throttle):
            self._telemetry.add("LINK_EVENTS_SUPPRESSED")
            return False
        log.log(_LOG_LEVEL.get(event.severity, logging.INFO), "%s %s: %s", event.severity, name,
                self._dictionary.format_event(event, values))
        self._send({"event_id": event.id, "args": values})
        return True

    def _take_token(self, name: str, rate: int) -> bool:
        now = time.monotonic()
        with self._lock:
            tokens, then = self._buckets.get(name, (float(rate), now))
            tokens = min(float(rate), tokens + (now - then) * rate)
            allowed = tokens >= 1.0
            self._buckets[name] = (tokens - 1.0 if allowed else tokens, now)
            return allowed
