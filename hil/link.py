"""The HIL rig's link emulator: a paced relay between the flight and the ground serial lines.

    flight ── LinkRelay ── ground        uplink: ground to flight, downlink: flight to ground

Each side is a serial device (opened with pyserial: baud, 8N1, raw) or a pty pair the relay opens
itself; the flight or ground software then opens the pty's path (flight_path, ground_path) as its
serial port. The relay keeps that path's slave end open too, so either side may close and reopen it.

Pacing. Each direction delivers bytes at the line's byte rate, baud/10 for 8N1, however fast the
two sides could go (a pty moves megabytes a second). The pacer keeps a virtual clock, the time the
line is next free: every byte advances it by one byte time, and a byte is delivered once its slot
is over. Sleeping until then and writing every byte then due keeps the long-run rate exact however
late each wake-up comes (counting bytes per wake-up would lose the lateness each time), without
busy-waiting, in chunks of about TICK_S of line time. Time the line stood idle is no credit: when
bytes come after a pause the clock is set to lag now by MAX_BURST_S at most, so a side never sees
more than a few ms worth of them at once. Only while the line is busy does the pacer make up for
waking late (up to MAX_CATCHUP_S), as a UART keeps shifting out its FIFO however late its host is:
a loaded machine slows the relay's threads, not the emulated line.

Back-pressure, not loss. A UART cannot send faster than its baud: a program writing more blocks in
write() once the driver's buffer is full, and nothing is lost. So does the relay: a direction queues
at most QUEUE_BOUND bytes from its sending side (a UART FIFO plus driver buffer) and stops reading
that side while full, so the side's own buffer (for a pty, the kernel's: about 20 KiB on Linux 6)
fills and its writes block. On the receiving side a device is waited for: it is the physical line,
draining at its own baud. A pty is not: a process that does not read loses what its pty cannot hold
(bytes_dropped), as at a UART nobody services, and the sender is not stalled by it.

Each direction is a Direction object; its Radio (hil/radio.py) is the radio's part: the contact
gate, latency, bit errors, burst errors and dropouts, each off unless configured
(LinkRelay(impairments=Impairments(...)), relay.set_contact(up)). Impairments act on the paced line,
after the tamper hook and the extra sources, so an attacker's frames meet the same radio.

Rate multiplier. LinkRelay(accel=K) runs the line at K x baud/10 bytes per second, so that a pass
of simulated time (1/K of it in wall time) carries the flight's byte count, and the radio's times
(latency, dropouts, bursts) are simulated seconds, K times shorter in wall time. The line rate is
capped at MAX_LINE_RATE (MAX_BAUD/10, about what a pty and the relay's threads carry on a 2-core
bench machine); past it a pass carries fewer bytes than in flight, and Direction.rate says so.
The queue bounds stay in bytes, as a UART's FIFO does.

Hooks for in-process tests:

- tamper (LinkRelay(uplink_tamper=..., downlink_tamper=...)): called with each whole frame the
  sending side transmits, its 0x00 delimiter included; returns the frames to send instead ([] drops
  it). Without it the relay assumes no framing and passes the bytes as they come. A spoofer:

      def spoof(frame: bytes) -> list[bytes]:
          return [forge(frame), frame]

- extra sources: relay.uplink.add_source() is a second transmitter on the uplink channel. Its
  frames share the paced line with the ground's, taken in turn frame by frame and only between the
  ground's frames, never inside one (frames end with 0x00: this link's framing is COBS). offer()
  blocks while the source's queue is full (QUEUE_BOUND bytes), so a thread that keeps offering
  transmits at line rate, sharing it with the ground, and no faster:

      attacker = relay.uplink.add_source()
      def flood() -> None:
          while attacker.offer(hostile_frame):  # False once the relay has stopped
              pass
      threading.Thread(target=flood, daemon=True).start()

  relay.uplink.inject(frames) sends a few frames once, the same way.

- counters: relay.uplink.bytes_passed and relay.downlink.bytes_passed (bytes delivered), and
  bytes_dropped (bytes a pty receiver had no room for); relay.counters() has them with the radio's
  (hil/radio.py COUNTERS) for both directions.
"""
from __future__ import annotations

import logging
import os
import select
import threading
import time
import tty
from collections import deque
from collections.abc import Callable

import serial

from flight.link.cli_support import MAX_BAUD
from hil.radio import Impairments, Radio

log = logging.getLogger(__name__)

QUEUE_BOUND = 4096  # bytes a direction holds before it stops reading its sender, as a UART FIFO plus driver buffer
LOW_WATER = QUEUE_BOUND // 2  # a full queue is read into again once drained to here, not one byte at a time
TICK_S = 0.002  # shortest sleep of the pacer: writes carry at least this much line time, wake-ups stay few
MAX_BURST_S = 0.005  # after the line stood idle, at most this much line time goes out at once
MAX_CATCHUP_S = 0.05  # while busy, the pacer makes up for waking this much late, no more
DELIMITER = b"\x00"
MAX_LINE_RATE = MAX_BAUD / 10  # bytes per second: the fastest line the relay paces, whatever accel asks
MAX_ACCEL = 1e6  # a simulated year in about half a minute: larger is a typing error

Tamper = Callable[[bytes], list[bytes]]


def open_pty() -> tuple[int, int, str]:
    """A raw pty pair: (master fd, slave fd, slave path).

    While the slave fd stays open, the program on the path may close and reopen it and the master
    sees neither hang-up nor EOF."""
    master, slave = os.openpty()
    tty.setraw(slave)  # no echo or line editing before the program on the path sets up the port
    return master, slave, os.ttyname(slave)


class OpenError(OSError):
    """A side's device could not be opened; the message is one line for an operator."""

    def __init__(self, path: str, exc: Exception):
        # pyserial repeats the path and errno in its text; the errno alone says it once
        errno = getattr(exc, "errno", None)
        super().__init__(f"cannot open {path}: {os.strerror(errno) if errno else exc}")


class _Endpoint:
    """One side's line as the relay sees it: a non-blocking fd carrying what the side transmits and
    receives, read and written through poll() together with the relay's stop pipe."""

    def __init__(self, path: str, fd: int, stop_fd: int, *, is_pty: bool, release: Callable[[], None]):
        self.path = path
        self._fd = fd
        self._stop_fd = stop_fd
        self._is_pty = is_pty
        self._release = release
        self._readable = select.poll()
        self._writable = select.poll()
        for poller, event in ((self._readable, select.POLLIN), (self._writable, select.POLLOUT)):
            poller.register(fd, event)
            poller.register(stop_fd, select.POLLIN)

    @classmethod
    def pty(cls, stop_fd: int) -> _Endpoint:
        master, slave, path = open_pty()
        os.set_blocking(master, False)

        def release() -> None:
            os.close(master)
            os.close(slave)

        return cls(path, master, stop_fd, is_pty=True, release=release)

    @classmethod
    def device(cls, path: str, baud: int, stop_fd: int) -> _Endpoint:
        try:
            port = serial.serial_for_url(path, baudrate=baud, timeout=0)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise OpenError(path, exc) from exc
        try:
            # pyserial has set the line up (baud, 8N1, raw) and left the fd non-blocking; the relay
            # drives the fd itself so that reads, writes and stopping share one poll() each.
            fd = port.fileno()
        except (OSError, ValueError) as exc:  # a URL handler (loop://, socket://) has no tty fd
            port.close()
            raise OpenError(path, ValueError("not a serial device")) from exc
        return cls(path, fd, stop_fd, is_pty=False, release=port.close)

    def read(self, limit: int) -> bytes | None:
        """What the side has transmitted, at most limit bytes; waits for it. None once stopping."""
        while True:
            if any(fd == self._stop_fd for fd, _ in self._readable.poll()):
                return None
            try:
                data = os.read(self._fd, limit)
            except BlockingIOError:
                continue
            except OSError as exc:
                raise self._failure(exc) from exc
            if not data:
                raise OSError(f"{self.path}: hung up")
            return data

    def write(self, data: bytes) -> int:
        """Deliver data to the side; returns how much it received (all of it, unless it is a pty
        with no room left or the relay is stopping)."""
        written = 0
        while written < len(data):
            try:
                written += os.write(self._fd, data[written:])
            except BlockingIOError:
                if self._is_pty or any(fd == self._stop_fd for fd, _ in self._writable.poll()):
                    break
            except OSError as exc:
                raise self._failure(exc) from exc
        return written

    def _failure(self, exc: OSError) -> OSError:
        return OSError(f"{self.path}: {exc.strerror or exc}")

    def close(self) -> None:
        self._release()


class _Queue:
    """One transmitter's bytes waiting for the line, as units the pacer sends whole, one after the
    other. A unit ends with the frame delimiter, except one still arriving or a raw stream's."""

    def __init__(self) -> None:
        self.units: deque[bytes] = deque()
        self.queued = 0  # bytes not yet delivered, the unit on the line included

    def add_stream(self, data: bytes) -> None:
        """Bytes as read: split after each delimiter, joined to an unfinished last unit."""
        self.queued += len(data)
        if self.units and not self.units[-1].endswith(DELIMITER):
            data = self.units.pop() + data
        start = 0
        while (end := data.find(DELIMITER, start)) != -1:
            self.units.append(data[start:end + 1])
            start = end + 1
        if start < len(data):
            self.units.append(data[start:])

    def add_unit(self, unit: bytes) -> None:
        self.queued += len(unit)
        self.units.append(unit)


class FrameSource:
    """A second transmitter on one direction's channel (made by Direction.add_source())."""

    def __init__(self, cond: threading.Condition, halted: threading.Event):
        self._cond = cond
        self._halted = halted
        self._queue = _Queue()

    def offer(self, frames: bytes, timeout: float | None = None) -> bool:
        """Queue frames (one or more, the last ending with 0x00) to go out whole, between the
        sending side's frames. If they would take this source past QUEUE_BOUND bytes, first waits
        up to timeout seconds (None: as long as it takes) for the line to drain it to half. False if
        it did not in time or the relay has stopped."""
        if not frames.endswith(DELIMITER):
            raise ValueError("frames must end with the 0x00 delimiter, or they would run into the next frame")
        queue = self._queue
        with self._cond:
            if queue.queued + len(frames) > QUEUE_BOUND and not self._cond.wait_for(
                    lambda: self._halted.is_set() or queue.queued <= LOW_WATER, timeout):
                return False
            if self._halted.is_set():
                return False
            queue.add_unit(frames)
            self._cond.notify_all()
        return True


class Direction:
    """One way of the link: reads its sending side into a queue, merges extra sources' frames at
    frame boundaries, paces the result through its radio and delivers it to its receiving side."""

    def __init__(self, name: str, source: _Endpoint, target: _Endpoint, rate: float, tamper: Tamper | None,
                 halted: threading.Event, radio: Radio, accel: float, epoch: float):
        self.name = name
        self.rate = rate  # bytes per second, wall time
        self.tamper = tamper
        self.radio = radio
        self.bytes_passed = 0
        self.bytes_dropped = 0
        # Simulated time of a line slot: wall seconds since epoch times accel (see the module docstring).
        self._accel = accel
        self._epoch = epoch
        self._latency = radio.impairments.latency_s / accel  # wall seconds
        self._delayed: deque[tuple[float, bytes]] = deque()  # (wall time due, bytes) in line order
        self._source = source
        self._target = target
        self._halted = halted
        self._cond = threading.Condition()  # guards the queues; signals data, room and halting
        self._own = _Queue()
        self._queues = [self._own]  # taken in turn: the sending side first, then the extra sources
        self._turn = 0
        self._mid_frame = False  # the line carries part of a frame of the side's: nothing else may start
        self._injector: FrameSource | None = None

    def add_source(self) -> FrameSource:
        source = FrameSource(self._cond, self._halted)
        with self._cond:
            self._queues.append(source._queue)
        return source

    def inject(self, frames: bytes) -> bool:
        """Send frames once, between the sending side's frames; see FrameSource.offer."""
        if self._injector is None:
            self._injector = self.add_source()
        return self._injector.offer(frames)

    def wake(self) -> None:
        """Let every waiter see the relay halting."""
        with self._cond:
            self._cond.notify_all()

    def receive(self) -> None:
        """Read the sending side into the queue until halted, pausing while the queue is full."""
        own = self._own
        partial = b""  # with a tamper hook: the frame still arriving
        while True:
            with self._cond:
                if own.queued >= QUEUE_BOUND:
                    self._cond.wait_for(lambda: self._halted.is_set() or own.queued <= LOW_WATER)
                if self._halted.is_set():
                    return
                room = QUEUE_BOUND - own.queued
            data = self._source.read(room)
            if data is None:
                return
            units: list[bytes] = []
            if self.tamper is not None:
                *frames, partial = (partial + data).split(DELIMITER)
                units = [unit for body in frames for unit in self.tamper(body + DELIMITER)]
                if len(partial) > QUEUE_BOUND:  # no delimiter in sight: not a frame, it goes as it is
                    units.append(partial)
                    partial = b""
            with self._cond:
                if self.tamper is None:
                    own.add_stream(data)
                for unit in units:
                    own.add_unit(unit)
                self._cond.notify_all()

    def _next_unit(self) -> tuple[_Queue, bytes] | None:
        """The queue whose turn it is and its next unit, or None if nothing may go yet (lock held)."""
        own = self._own
        if self._mid_frame or not any(q.units for q in self._queues[1:]):
            # alone on the channel, or finishing a frame already begun: the side's bytes as they come
            ready = [0] if own.units else []
        else:
            # taking turns: a frame of the side's only once it is whole (or its queue is full, for a
            # side that sends no delimiters), so that it goes out in one piece
            ready = [k for k, q in enumerate(self._queues)
                     if q.units and (k or q.units[0].endswith(DELIMITER) or q.queued >= QUEUE_BOUND)]
        if not ready:
            return None
        k = min(ready, key=lambda k: (k - self._turn) % len(self._queues))
        self._turn = k + 1
        queue = self._queues[k]
        unit = queue.units.popleft()
        self._mid_frame = queue is own and not unit.endswith(DELIMITER)
        return queue, unit

    def transmit(self) -> None:
        """Pace the queued units onto the receiving side until halted."""
        line_free = time.monotonic()  # the virtual clock: when the line has sent all it was given
        while True:
            with self._cond:
                idle = False
                while not self._halted.is_set() and (picked := self._next_unit()) is None:
                    idle = True
                    self._cond.wait()
                if self._halted.is_set():
                    return
            if idle:  # the line had nothing to send: that time is no credit
                line_free = max(line_free, time.monotonic() - MAX_BURST_S)
            queue, unit = picked
            sent = 0
            while sent < len(unit):
                now = time.monotonic()
                # A late wake-up is made up for, as a UART shifts its FIFO out however late its host
                # is; a stall of the whole relay (a stopped process, a paused VM) is not.
                line_free = max(line_free, now - MAX_CATCHUP_S)
                due = min(int((now - line_free) * self.rate), len(unit) - sent)
                if due < 1:
                    if self._halted.wait(max(TICK_S, line_free + 1 / self.rate - now)):
                        return
                    continue
                slot = (line_free - self._epoch) * self._accel
                received = self.radio.apply(unit[sent:sent + due], slot, self._accel / self.rate)
                line_free += due / self.rate
                sent += due
                if not self._latency:
                    self._deliver(received)
                with self._cond:
                    if self._latency:
                        self._delayed.append((line_free + self._latency, received))
                    before, queue.queued = queue.queued, queue.queued - due
                    if before > LOW_WATER >= queue.queued or self._latency:
                        self._cond.notify_all()  # room again for a sender held back, or bytes to delay

    def delay(self) -> None:
        """With latency: deliver what the line has sent, each chunk once its latency is over, until halted."""
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._halted.is_set() or self._delayed)
                if self._halted.is_set():
                    return
                due = self._delayed[0][0]
            wait = due - time.monotonic()
            if wait > 0 and self._halted.wait(wait):
                return
            with self._cond:  # the transmit thread only appends: the head is still the one waited for
                now = time.monotonic()
                ready = []
                while self._delayed and self._delayed[0][0] <= now:
                    ready.append(self._delayed.popleft()[1])
            self._deliver(b"".join(ready))  # one write for all that is due: fewer wake-ups of the receiver

    def _deliver(self, data: bytes) -> None:
        delivered = self._target.write(data)
        self.bytes_passed += delivered  # only this direction's delivering thread writes the counters
        self.bytes_dropped += len(data) - delivered

    def counters(self) -> dict[str, int]:
        return {"bytes_passed": self.bytes_passed, "bytes_dropped": self.bytes_dropped, **self.radio.counters()}


class LinkRelay:
    """Joins the flight and ground lines, pacing each direction at baud/10 x accel bytes per second
    (at most MAX_LINE_RATE) through the radio's impairments (none by default).

    flight_port / ground_port: a serial device path, or None to open a pty pair for that side (its
    path is then flight_path / ground_path). A device's UART runs at baud whatever accel says, so
    accel is for ptys. Threads start at once; close() (or leaving the with block) stops and joins
    them. A failing device or hook halts the relay: error then says why."""

    def __init__(self, flight_port: str | None = None, ground_port: str | None = None, *, baud: int = 115200,
                 uplink_tamper: Tamper | None = None, downlink_tamper: Tamper | None = None,
                 impairments: Impairments | None = None, accel: float = 1.0):
        if not 1 <= baud <= MAX_BAUD:
            raise ValueError(f"baud must be from 1 to {MAX_BAUD}, got {baud}")
        if not 0 < accel <= MAX_ACCEL:  # also refuses NaN
            raise ValueError(f"accel must be above 0 and at most {MAX_ACCEL:g}, got {accel!r}")
        self.baud = baud
        self.accel = accel
        impairments = impairments or Impairments()
        self.error: str | None = None
        self.halted = threading.Event()
        self._stop_r, self._stop_w = os.pipe()
        self._endpoints: list[_Endpoint] = []
        try:
            flight, ground = (self._open(port) for port in (flight_port, ground_port))
        except BaseException:
            self._release()
            raise
        self.flight_path, self.ground_path = flight.path, ground.path
        rate = min(baud / 10 * accel, MAX_LINE_RATE)
        epoch = time.monotonic()  # simulated time 0 of the radio's schedules
        self.uplink, self.downlink = (
            Direction(name, source, target, rate, tamper, self.halted, Radio(impairments, name), accel, epoch)
            for name, source, target, tamper in (("uplink", ground, flight, uplink_tamper),
                                                 ("downlink", flight, ground, downlink_tamper)))
        steps = [(d, step) for d in (self.uplink, self.downlink) for step in (d.receive, d.transmit)]
        if impairments.latency_s:
            steps += [(d, d.delay) for d in (self.uplink, self.downlink)]
        self._threads = [
            threading.Thread(target=self._guard, args=(step,), name=f"hil {d.name} {step.__name__}", daemon=True)
            for d, step in steps
        ]
        for thread in self._threads:
            thread.start()

    def set_contact(self, up: bool) -> None:
        """The radio in or out of contact, both ways; out of contact bytes are lost, not queued."""
        self.uplink.radio.contact = self.downlink.radio.contact = up

    def counters(self) -> dict[str, dict[str, int]]:
        """Per direction: bytes_passed, bytes_dropped and the radio's counters (hil/radio.py)."""
        return {d.name: d.counters() for d in (self.uplink, self.downlink)}

    def _open(self, port: str | None) -> _Endpoint:
        endpoint = _Endpoint.pty(self._stop_r) if port is None else _Endpoint.device(port, self.baud, self._stop_r)
        self._endpoints.append(endpoint)
        return endpoint

    def _guard(self, step: Callable[[], None]) -> None:
        """Run one thread's loop; if it fails, the whole link halts, visibly (error)."""
        try:
            step()
        except OSError as exc:  # a side's device failed: its message names it
            self._fail(str(exc))
        except Exception as exc:  # a bug or a raising hook: the traceback tells where
            log.exception("%s failed", threading.current_thread().name)
            self._fail(f"{threading.current_thread().name}: {exc!r}")

    def _fail(self, error: str) -> None:
        if self.error is None:
            self.error = error
        self.halt()

    def halt(self) -> None:
        """Stop relaying, from any thread; close() also waits for the threads and releases the ends."""
        if self.halted.is_set():
            return
        self.halted.set()
        os.write(self._stop_w, b"x")  # never read: every poll() on the stop pipe returns from now on
        for direction in (self.uplink, self.downlink):
            direction.wake()

    def close(self) -> None:
        self.halt()
        for thread in self._threads:
            thread.join()
        self._release()

    def _release(self) -> None:
        for endpoint in self._endpoints:
            endpoint.close()
        self._endpoints.clear()
        for fd in (self._stop_r, self._stop_w):
            if fd >= 0:  # a second close() finds them closed
                os.close(fd)
        self._stop_r = self._stop_w = -1

    def __enter__(self) -> LinkRelay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
