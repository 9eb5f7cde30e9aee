"""One end of the serial line: a device (/dev/ttyTHS1, /dev/ttyUSB0, a pty) or a pyserial URL
(loop://, socket://host:port, spy://...), full duplex.

A receive thread blocks in read() with a timeout (select() underneath, no busy-waiting) and
hands whatever arrived to a callback; writes come from any thread under a lock. When the device
fails (unplugged adapter, closed pty), the receive thread closes it and reopens it after a delay,
so the link comes back by itself.
"""
from __future__ import annotations

import logging
import threading
from typing import Callable

import serial

log = logging.getLogger(__name__)


class SerialPort:
    def __init__(self, port: str, baud: int = 115200, *, read_timeout: float = 0.2, reopen_delay: float = 0.5):
        self.port = port
        self.baud = baud
        self.read_timeout = read_timeout
        self.reopen_delay = reopen_delay
        self.errors = 0
        self._serial: serial.SerialBase | None = None
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def open(self) -> None:
        """Open the device, unless it is open (the receive thread and reset() may race to)."""
        with self._write_lock:
            if self._serial is None:
                self._open_device()

    def _open_device(self) -> None:
        """Under the write lock."""
        self._serial = serial.serial_for_url(self.port, baudrate=self.baud, timeout=self.read_timeout)
        # A lone delimiter ends whatever half frame the far end holds from before we (re)started.
        self._serial.write(b"\x00")

    def start(self, on_bytes: Callable[[bytes], None]) -> None:
        """Open the port, unless open() already did, and start the receive thread."""
        if self._serial is None:
            self.open()
        self._thread = threading.Thread(target=self._receive, args=(on_bytes,), name=f"rx {self.port}", daemon=True)
        self._thread.start()

    def write(self, data: bytes) -> None:
        """Write all of data; raises serial.SerialException or OSError if the port is down."""
        with self._write_lock:
            port = self._serial
            if port is None:
                raise serial.SerialException(f"{self.port} is not open")
            port.write(data)

    def reset(self, baud: int) -> None:
        """Reopen the device at baud with default settings (FDIR's command-loss recovery). The
        old port is closed and the new one opened under the write lock, so no write meets the
        port closed: the report of the reset goes down on the new one. A device that will not
        reopen now is retried by the receive thread, as after any failure."""
        with self._write_lock:
            old, self._serial = self._serial, None
            self.baud = baud
            if old is not None:
                if hasattr(old, "cancel_read"):
                    old.cancel_read()
                try:
                    old.close()
                except (serial.SerialException, OSError):
                    pass
            try:
                self._open_device()
            except (serial.SerialException, ValueError, OSError) as exc:
                log.warning("%s: not reopened at %d baud (%s); retrying", self.port, baud, exc)

    def close(self) -> None:
        self._stop.set()
        port = self._serial
        if port is not None and hasattr(port, "cancel_read"):
            port.cancel_read()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        self._close_device()

    def _receive(self, on_bytes: Callable[[bytes], None]) -> None:
        while not self._stop.is_set():
            try:
                port = self._serial
                if port is None:
                    self.open()
                    continue
                data = port.read(1)
                if data and port.in_waiting:
                    data += port.read(port.in_waiting)
            except (serial.SerialException, OSError, TypeError, AttributeError) as exc:
                # TypeError/AttributeError: pyserial's reaction to a port closed under its feet.
                if self._stop.is_set():
                    return
                if port is not None and port is not self._serial:  # reset() replaced it: not a failure
                    continue
                self.errors += 1
                log.warning("%s: %s; reopening in %.1f s", self.port, exc, self.reopen_delay)
                self._close_device(port)
                self._stop.wait(self.reopen_delay)
                continue
            if data:
                on_bytes(data)

    def _close_device(self, failed: serial.SerialBase | None = None) -> None:
        """Close the device; given the port that failed, only if it is still the open one."""
        with self._write_lock:
            if failed is not None and self._serial is not failed:
                return
            port, self._serial = self._serial, None
        if port is not None:
            try:
                port.close()
            except (serial.SerialException, OSError):
                pass  # already broken; nothing more to release
