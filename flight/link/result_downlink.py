"""Reliable downlink of job results, in the spirit of CFDP class 2 sized for our packets.

Every stored result that the ground has not fully acknowledged is tracked here. While the link
is up, each unacknowledged segment is sent, and sent again whenever rto_s passes without the
ground's selective acknowledgement (DL_SACK) covering it. Acknowledgements are persisted in the
result store, so after a restart only what the ground does not hold is sent again; the ground
deduplicates what it receives twice.

A DL_SACK entry states everything the ground holds of a result, so it replaces what was
acknowledged before. Each segment carries the MAC of the whole result (sdls.result_mac), which
the ground checks after reassembly; a ground that had to discard a result (bad CRC-32 or MAC)
says so by listing what it holds of it now, often nothing, and every segment it no longer holds
is sent again at once. (Were acknowledgements only ever added, a discarded result whose segments
had been acknowledged would never be sent again.)
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from flight.link.event_reporter import EventReporter
from flight.link.sack import from_ranges
from flight.link.telemetry import Telemetry
from flight.store.result_store import PendingResult, ResultStore


@dataclass
class _Tracked:
    result: PendingResult
    acked: set[int]
    sent_at: dict[int, float] = field(default_factory=dict)


class ResultDownlink:
    def __init__(self, store: ResultStore, telemetry: Telemetry, events: EventReporter, rto_s: float,
                 link_up: Callable[[], bool]):
        self._store = store
        self._telemetry = telemetry
        self._events = events
        self._rto_s = rto_s
        self._link_up = link_up
        self._tracked: dict[int, _Tracked] = {}
        self._lock = threading.Lock()
        for result in store.pending_results():
            self._track(result)
        self._telemetry.set("DL_RESULTS_PENDING", len(self._tracked))

    def add(self, job_id: int) -> None:
        """Start sending a result just stored."""
        result = self._store.pending_result(job_id)
        if result is not None:
            with self._lock:
                self._track(result)

    def _track(self, result: PendingResult) -> None:
        self._tracked.setdefault(result.job_id, _Tracked(result, set(result.acked)))
        self._telemetry.set("DL_RESULTS_PENDING", len(self._tracked))

    def poll(self, now: float) -> tuple[tuple[str, dict[str, Any]] | None, float | None]:
        if not self._link_up():
            return None, None
        soonest: float | None = None
        with self._lock:
            for tracked in self._tracked.values():
                for index in range(tracked.result.segment_count):
                    if index in tracked.acked:
                        continue
                    sent = tracked.sent_at.get(index)
                    if sent is None or now - sent >= self._rto_s:
                        tracked.sent_at[index] = now
                        self._telemetry.add("DL_SEGMENTS_SENT")
                        if sent is not None:
                            self._telemetry.add("DL_SEGMENTS_RETRANSMITTED")
                        return ("JOB_RESULT_SEGMENT", self._segment_fields(tracked.result, index)), 0.0
                    due = sent + self._rto_s - now
                    soonest = due if soonest is None else min(soonest, due)
        return None, soonest

    def _segment_fields(self, result: PendingResult, index: int) -> dict[str, Any]:
        return {
            "job_id": result.job_id,
            "segment": index,
            "segment_count": result.segment_count,
            "result_octets": result.result_octets,
            "result_crc32": result.crc32,
            "spi": result.spi,
            "result_mac": result.mac,
            "data": self._store.segment(result.job_id, index),
        }

    def on_sack(self, entries: list[list[Any]]) -> None:
        for job_id, ranges in entries:
            with self._lock:
                tracked = self._tracked.get(job_id)
            if tracked is None:
                continue  # already delivered, or never ours: nothing to do
            indices = from_ranges(ranges, tracked.result.segment_count)
            if indices == tracked.acked:
                continue
            acked, delivered = self._store.acknowledge(job_id, indices)
            with self._lock:
                withdrawn = tracked.acked - acked
                for index in withdrawn:
                    tracked.sent_at.pop(index, None)  # the ground lost it: send it now, not after a timeout
                tracked.acked = set(acked)
                if delivered:
                    del self._tracked[job_id]
                self._telemetry.set("DL_RESULTS_PENDING", len(self._tracked))
            if withdrawn:
                self._telemetry.add("DL_RESULTS_REREQUESTED")
                self._events.emit("DL_RESULT_REREQUESTED", job_id=job_id)
            if delivered:
                self._telemetry.add("DL_RESULTS_DELIVERED")
                self._events.emit("DL_RESULT_DELIVERED", job_id=job_id, segment_count=tracked.result.segment_count)
