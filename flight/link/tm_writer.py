"""The downlink writer: one thread that encodes and writes telemetry in priority order.

Command responses go first, then events, housekeeping and token streams; reports about rejected
uplink input come after those, and bulk data fills the line only when nothing else waits, pulled
from a bulk source at the moment it can be sent (so a retransmission is never queued behind stale
copies). The link's bulk is result segments, then recorder playback with a guaranteed share
(SharedBulk). Packets are encoded when written, so each APID's sequence count follows
the order on the wire. A full queue drops its oldest packet and counts it in
LINK_PACKETS_DROPPED; the writer never blocks its callers.

Rejection reports (CMD_REJECTION packets and events marked as rejection reports) answer input
nobody authenticated, so they have a queue of their own that can never displace a response to
an authenticated command, and they share one token bucket of downlink octets: whatever a
flood of hostile frames provokes, it costs the downlink at most that budget. Reports beyond it
are counted in LINK_REJECTIONS_SUPPRESSED and summarised by the link service.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any, Protocol

import serial

from flight.link.codec import PacketCodec, Seal
from flight.link.framing import frame
from flight.link.serial_port import SerialPort
from flight.link.spacepacket import SequenceCounters
from flight.link.telemetry import Telemetry
from flight.link.token_bucket import TokenBucket

log = logging.getLogger(__name__)

PRIORITY = ("CMD_RESPONSE", "EVENT", "HK", "JOB_TOKENS")
REJECTIONS = "rejections"
MAX_IDLE_S = 1.0
REJECTION_QUEUE_LIMIT = 8  # a few reports waiting is plenty: they describe a flood, not each frame

_Item = tuple[str, dict[str, Any], Seal | None]


class BulkSource(Protocol):
    def poll(self, now: float) -> tuple[tuple[str, dict[str, Any]] | None, float | None]:
        """(packet kind and fields to send now, or None; seconds until one may be due, or None)."""


class SharedBulk:
    """Two bulk sources in one: the first has the line, but while both have something to send the
    second gets at least one packet in every `every`, so it is never starved for good."""

    def __init__(self, first: BulkSource, second: BulkSource, every: int):
        if every < 2:
            raise ValueError("every must be at least 2: the second source's turn comes after the first's")
        self._sources = (first, second)
        self._every = every
        self._run = 0  # packets of the first source since the second last sent one

    def poll(self, now: float) -> tuple[tuple[str, dict[str, Any]] | None, float | None]:
        first, second = self._sources
        order = (second, first) if self._run >= self._every - 1 else (first, second)
        waits = []
        for source in order:
            item, wait = source.poll(now)
            if item is not None:
                self._run = self._run + 1 if source is first else 0
                return item, wait
            waits.append(wait)
        due = [wait for wait in waits if wait is not None]
        return None, min(due) if due else None


class TmWriter:
    def __init__(self, port: SerialPort, codec: PacketCodec, telemetry: Telemetry, bulk: BulkSource,
                 rejection_budget: TokenBucket, queue_limit: int = 256, error_backoff_s: float = 0.5):
        self._port = port
        self._codec = codec
        self._telemetry = telemetry
        self._bulk = bulk
        self._rejection_budget = rejection_budget
        self._error_backoff_s = error_backoff_s
        self._queues: dict[str, deque[_Item]] = {kind: deque() for kind in (*PRIORITY, REJECTIONS)}
        self._limits = {**dict.fromkeys(PRIORITY, queue_limit), REJECTIONS: REJECTION_QUEUE_LIMIT}
        self._sequence = SequenceCounters()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="tm writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout=2.0)

    def submit(self, kind: str, fields: dict[str, Any], *, seal: Seal | None = None, rejection: bool = False) -> None:
        """Queue a packet; seal it if its kind is secured; rejection reports go on the budgeted queue."""
        queue_name = REJECTIONS if rejection else kind
        with self._cond:
            queue = self._queues[queue_name]
            if len(queue) >= self._limits[queue_name]:
                queue.popleft()
                self._telemetry.add("LINK_REJECTIONS_SUPPRESSED" if rejection else "LINK_PACKETS_DROPPED")
            queue.append((kind, fields, seal))
            self._cond.notify()

    def wake(self) -> None:
        """Tell the writer the bulk source may have something new."""
        with self._cond:
            self._cond.notify()

    def _next(self) -> tuple[_Item, bool] | None:
        """The next packet to send and whether it is a rejection report; None when stopping."""
        with self._cond:
            while not self._stopping:
                for name in (*PRIORITY, REJECTIONS):
                    if self._queues[name]:
                        return self._queues[name].popleft(), name == REJECTIONS
                item, wait = self._bulk.poll(time.monotonic())
                if item is not None:
                    return (*item, None), False
                self._cond.wait(timeout=MAX_IDLE_S if wait is None else min(wait, MAX_IDLE_S))
            return None

    def _run(self) -> None:
        while (next_item := self._next()) is not None:
            (kind, fields, seal), rejection = next_item
            apid = self._codec.dictionary.packet(kind).apid
            try:
                # peek, not take: a packet that is never written must leave no gap in its APID's
                # count, or the ground would count a loss that did not happen
                packet = self._codec.encode_tm(kind, fields, self._sequence.peek(apid), seal=seal)
            except (ValueError, KeyError) as exc:
                log.error("dropping %s that cannot be encoded: %s", kind, exc)
                self._telemetry.add("LINK_PACKETS_DROPPED")
                continue
            wire = frame(packet)
            if rejection:
                if not self._rejection_budget.take(len(wire)):
                    self._telemetry.add("LINK_REJECTIONS_SUPPRESSED")
                    continue
                self._telemetry.add("LINK_REJECTION_OCTETS", len(wire))
            self._sequence.take(apid)
            try:
                self._port.write(wire)
            except (serial.SerialException, OSError) as exc:
                log.warning("downlink write failed: %s", exc)
                self._telemetry.add("LINK_PACKETS_DROPPED")
                with self._cond:
                    self._cond.wait(timeout=self._error_backoff_s)
                continue
            self._telemetry.add("LINK_PACKETS_SENT")
