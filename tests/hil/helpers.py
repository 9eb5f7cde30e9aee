"""Both ends of a relayed line, as the flight and ground software use them: open a path, write
as fast as the line lets you, read as fast as you can and note when bytes came."""
from __future__ import annotations

import os
import select
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

QUIET_S = 10.0  # a receiver waiting this long for a byte has lost the stream


@contextmanager
def line(path: str) -> Iterator[int]:
    """A side's end of the link, as the flight or ground software opens it."""
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    try:
        yield fd
    finally:
        os.close(fd)


class Sender(threading.Thread):
    """Writes all of data as fast as the line lets it, in blocking writes of the given sizes."""

    def __init__(self, fd: int, data: bytes, chunks: list[int] | None = None, pause_s: float = 0.0):
        super().__init__(daemon=True)
        self.fd, self.data, self.chunks, self.pause_s = fd, data, chunks or [len(data)], pause_s
        self.started = self.elapsed = 0.0

    def run(self) -> None:
        self.started = start = time.monotonic()
        sent, sizes = 0, iter(self.chunks)
        while sent < len(self.data):
            end = min(len(self.data), sent + next(sizes, len(self.data)))
            while sent < end:
                sent += os.write(self.fd, self.data[sent:end])
            if self.pause_s:
                time.sleep(self.pause_s)
        self.elapsed = time.monotonic() - start


class Receiver(threading.Thread):
    """Reads as fast as it can until it has `expected` bytes (or the stream stops: quiet_s without a
    byte), timing arrivals."""

    def __init__(self, fd: int, expected: int | None = None, until: threading.Event | None = None,
                 quiet_s: float = QUIET_S):
        super().__init__(daemon=True)
        self.fd, self.expected, self.until, self.quiet_s = fd, expected, until, quiet_s
        self.data = bytearray()
        self.arrivals: list[tuple[float, int]] = []  # (time read, bytes received by then)
        self.first_at = self.last_at = 0.0
        self.first_len = 0

    def run(self) -> None:
        while self.expected is None or len(self.data) < self.expected:
            if self.until is not None and self.until.is_set():
                return
            if not select.select([self.fd], [], [], self.quiet_s)[0]:
                return
            chunk = os.read(self.fd, 65536)
            self.last_at = time.monotonic()
            if not self.data:
                self.first_at, self.first_len = self.last_at, len(chunk)
            self.data += chunk
            self.arrivals.append((self.last_at, len(self.data)))

    def rate(self) -> float:
        """Bytes per second from the first arrival to the last (the first read's bytes came at its start)."""
        return (len(self.data) - self.first_len) / (self.last_at - self.first_at)
