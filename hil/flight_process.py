"""`flight run` as the rig runs it: a child process on the rig's ptys, its stderr appended to a
log, killed -9 and restarted as a watchdog would (same arguments, same data directory)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

READY_LINE = "node running"  # what flight run logs once it serves the link
FLIGHT = str(Path(sys.executable).with_name("flight"))


class FlightStartError(RuntimeError):
    """flight run exited or did not become ready; the message is one line with the log's tail."""


class FlightProcess:
    def __init__(self, args: list[str], log: Path):
        self.args = [FLIGHT, "run", *args]
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._log_at = 0

    def start(self, ready_timeout: float = 60.0) -> None:
        """Start it and wait for its ready line (FlightStartError if it exits or stays silent)."""
        self._log_at = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        self.starts += 1
        end = time.monotonic() + ready_timeout
        while READY_LINE not in self._this_start():
            if self.proc.poll() is not None:
                tail = " | ".join(self._this_start().strip().splitlines()[-3:])
                raise FlightStartError(f"flight run exited {self.proc.returncode}: {tail}")
            if time.monotonic() > end:
                raise FlightStartError(f"flight run not ready within {ready_timeout:g} s")
            time.sleep(0.05)

    def _this_start(self) -> str:
        with open(self.log, "rb") as handle:
            handle.seek(self._log_at)
            return handle.read().decode(errors="replace")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        """SIGKILL, as a crash or a power cut would end it; its engine child dies with it."""
        if self.running:
            assert self.proc is not None
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL if it does not end in time; its exit code (None if never started)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode
