"""Event reports: checked against the dictionary, throttled, logged and handed to the downlink.

An event whose definition has a throttle is sent at most that many times per second (a token
bucket); the rest are counted in LINK_EVENTS_SUPPRESSED, so a noisy line cannot flood the
downlink with reports about itself. The downlink also learns whether an event reports rejected
uplink input, which it sends only within the rejection budget.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable

from flight.link.dictionary import Dictionary, EventDef
from flight.link.telemetry import Telemetry
from flight.link.token_bucket import TokenBucket

log = logging.getLogger("flight.events")
_LOG_LEVEL = {"FATAL": logging.CRITICAL, "WARNING_HI": logging.WARNING, "WARNING_LO": logging.WARNING}


class EventReporter:
    def __init__(self, dictionary: Dictionary, telemetry: Telemetry,
                 send: Callable[[EventDef, dict[str, Any]], None]):
        self._dictionary = dictionary
        self._telemetry = telemetry
        self._send = send
        self._buckets: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()

    def emit(self, name: str, **args: Any) -> bool:
        """Report an event; False if its throttle suppressed it. Raises on a bad name or argument."""
        event = self._dictionary.event_by_name[name]
        values = [args[arg.name] for arg in event.args]
        for arg, value in zip(event.args, values):
            arg.check(value)
        if event.throttle is not None and not self._bucket(event).take():
            self._telemetry.add("LINK_EVENTS_SUPPRESSED")
            return False
        log.log(_LOG_LEVEL.get(event.severity, logging.INFO), "%s %s: %s", event.severity, name,
                self._dictionary.format_event(event, values))
        self._send(event, {"event_id": event.id, "args": values})
        return True

    def _bucket(self, event: EventDef) -> TokenBucket:
        with self._lock:
            bucket = self._buckets.get(event.name)
            if bucket is None:
                bucket = self._buckets[event.name] = TokenBucket(event.throttle, event.throttle)
            return bucket
