"""The downlink writer: one thread that encodes and writes telemetry in priority order.

Command responses go first, then events, housekeeping and token streams; result segments fill
the line only when nothing else waits, pulled from a bulk source at the moment they can be sent
(so a retransmission is never queued behind stale copies). Packets are encoded when written, so
each APID's sequence count follows the order on the wire. A full queue drops its oldest packet
and counts it in LINK_PACKETS_DROPPED; the writer never blocks its callers.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any, Protocol

import serial

from flight.link.codec import PacketCodec
from flight.link.framing import frame
from flight.link.serial_port import SerialPort
from flight.link.spacepacket import SequenceCounters
from flight.link.telemetry import Telemetry

log = logging.getLogger(__name__)

PRIORITY = ("CMD_RESPONSE", "EVENT", "HK", "JOB_TOKENS")
MAX_IDLE_S = 1.0


class BulkSource(Protocol):
    def poll(self, now: float) -> tuple[tuple[str, dict[str, Any]] | None, float | None]:
        """(packet kind and fields to send now, or None; seconds until one may be due, or None)."""


class TmWriter:
    def __init__(self, port: SerialPort, codec: PacketCodec, telemetry: Telemetry, bulk: BulkSource,
                 queue_limit: int = 256, error_backoff_s: float = 0.5):
        self._port = port
        self._codec = codec
        self._telemetry = telemetry
        self._bulk = bulk
        self._error_backoff_s = error_backoff_s
        self._queues: dict[str, deque[dict[str, Any]]] = {kind: deque() for kind in PRIORITY}
        self._queue_limit = queue_limit
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

    def submit(self, kind: str, fields: dict[str, Any]) -> None:
        with self._cond:
            queue = self._queues[kind]
            if len(queue) >= self._queue_limit:
                queue.popleft()
                self._telemetry.add("LINK_PACKETS_DROPPED")
            queue.append(fields)
            self._cond.notify()

    def wake(self) -> None:
        """Tell the writer the bulk source may have something new."""
        with self._cond:
            self._cond.notify()

    def _next(self) -> tuple[str, dict[str, Any]] | None:
        with self._cond:
            while not self._stopping:
                for kind in PRIORITY:
                    if self._queues[kind]:
                        return kind, self._queues[kind].popleft()
                item, wait = self._bulk.poll(time.monotonic())
                if item is not None:
                    return item
                self._cond.wait(timeout=MAX_IDLE_S if wait is None else min(wait, MAX_IDLE_S))
            return None

    def _run(self) -> None:
        while (item := self._next()) is not None:
            kind, fields = item
            apid = self._codec.dictionary.packet(kind).apid
            try:
                packet = self._codec.encode_tm(kind, fields, self._sequence.take(apid))
            except (ValueError, KeyError) as exc:
                log.error("dropping %s that cannot be encoded: %s", kind, exc)
                self._telemetry.add("LINK_PACKETS_DROPPED")
                continue
            try:
                self._port.write(frame(packet))
            except (serial.SerialException, OSError) as exc:
                log.warning("downlink write failed: %s", exc)
                self._telemetry.add("LINK_PACKETS_DROPPED")
                with self._cond:
                    self._cond.wait(timeout=self._error_backoff_s)
                continue
            self._telemetry.add("LINK_PACKETS_SENT")
