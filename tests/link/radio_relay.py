"""A simulated radio between two real serial ports, for two-ended link tests.

Each end gets the slave side of its own pty pair (a path like /dev/pts/7 that pyserial opens as
a serial device); the relay holds both masters and copies frames between them. Because the relay
also keeps the slave fds open, either end may be killed and restarted on the same path.
Writes into a pty whose reader is gone would block; after a short wait the relay drops them,
as a radio would.

Impairments act on whole frames (split at 0x00), per direction, from a seeded RNG: drop,
duplicate, hold back one frame past the next (reorder), and a full outage switch.
"""
from __future__ import annotations

import os
import random
import select
import selectors
import threading
from dataclasses import dataclass, field

from hil.link import open_pty

WRITE_PATIENCE_S = 0.05  # a live reader drains a pty far faster; a dead one never does


@dataclass
class Impairment:
    drop: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    dropped_frames: list[bytes] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=lambda: dict.fromkeys(("frames", "dropped", "duplicated", "reordered", "overflow"), 0))


class _Direction:
    def __init__(self, source: int, target: int, impairment: Impairment, rng: random.Random):
        self.source = source
        self.target = target
        self.impairment = impairment
        self.rng = rng
        self.partial = bytearray()
        self.held: bytes | None = None

    def frames(self, data: bytes, outage: bool) -> list[bytes]:
        self.partial += data
        *complete, rest = bytes(self.partial).split(b"\x00")
        self.partial = bytearray(rest)
        out: list[bytes] = []
        imp, stats = self.impairment, self.impairment.stats
        for body in complete:
            if not body:
                continue
            chunk = body + b"\x00"
            stats["frames"] += 1
            if outage or self.rng.random() < imp.drop:
                stats["dropped"] += 1
                imp.dropped_frames.append(chunk)
                continue
            copies = [chunk, chunk] if self.rng.random() < imp.duplicate else [chunk]
            stats["duplicated"] += len(copies) - 1
            if self.held is None and self.rng.random() < imp.reorder:
                stats["reordered"] += 1
                self.held = chunk
                copies = copies[1:]
                if not copies:
                    continue
            out.extend(copies)
            if self.held is not None and chunk is not self.held:
                out.append(self.held)
                self.held = None
        return out


class RadioRelay:
    def __init__(self, seed: int = 0, up: Impairment | None = None, down: Impairment | None = None):
        self._fds: list[int] = []
        flight_master, self.flight_path = self._pty()
        ground_master, self.ground_path = self._pty()
        self._masters = {True: flight_master, False: ground_master}
        rng = random.Random(seed)
        self.up = up or Impairment()  # ground -> flight
        self.down = down or Impairment()  # flight -> ground
        self._directions = {
            flight_master: _Direction(flight_master, ground_master, self.down, rng),
            ground_master: _Direction(ground_master, flight_master, self.up, rng),
        }
        self.outage = False
        self._wake_r, self._wake_w = os.pipe()
        self._fds += [self._wake_r, self._wake_w]
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="radio relay", daemon=True)
        self._thread.start()

    def _pty(self) -> tuple[int, str]:
        master, slave, path = open_pty()
        os.set_blocking(master, False)
        self._fds += [master, slave]
        return master, path

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        for fd in self._directions:
            selector.register(fd, selectors.EVENT_READ)
        selector.register(self._wake_r, selectors.EVENT_READ)
        while not self._stopping:
            for key, _ in selector.select():
                if key.fd == self._wake_r:
                    continue
                try:
                    data = os.read(key.fd, 65536)
                except (BlockingIOError, OSError):
                    continue
                direction = self._directions[key.fd]
                for chunk in direction.frames(data, self.outage):
                    if not self._write(direction.target, chunk):
                        direction.impairment.stats["overflow"] += 1
        selector.close()

    @staticmethod
    def _write(fd: int, data: bytes) -> bool:
        """Write all of data, waiting briefly for a slow reader; False if it had to give up."""
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(fd, view):]
            except BlockingIOError:
                if not select.select([], [fd], [], WRITE_PATIENCE_S)[1]:
                    return False
            except OSError:
                return False
        return True

    def inject(self, to_flight: bool, data: bytes) -> None:
        """Write raw bytes towards one end, bypassing the impairments (line noise, hostile frames)."""
        os.write(self._masters[to_flight], data)

    def close(self) -> None:
        self._stopping = True
        os.write(self._wake_w, b"x")
        self._thread.join(timeout=2.0)
        for fd in self._fds:
            os.close(fd)

    def __enter__(self) -> RadioRelay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
