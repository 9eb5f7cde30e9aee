"""The node as operators run it: `hil link --pty`, `flight run` and `ground`, each a real process
on real ptys at the real byte rate."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from flight.link.keys import write_new_key_file

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
READY_LINE = "node running"
# Short link timers keep tests quick; they change no protocol logic.
FAST_LINK = "[link]\nhk_period_s = 0.2\ncontact_timeout_s = 2.0\nrto_s = 0.5\n"


def write_config(path: Path, extra: str = "") -> Path:
    path.write_text(FAST_LINK + extra)
    return path


def new_keys(directory: Path) -> Path:
    path = directory / "link-keys.json"
    write_new_key_file(path)
    return path


class HilLink:
    """`hil link --pty`: the paced radio line between the two sides; extra: more options (the radio's)."""

    def __init__(self, baud: int = 115200, *extra: str):
        self.proc = subprocess.Popen([str(BIN / "hil"), "link", "--pty", "--baud", str(baud), *extra], cwd=REPO,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        paths = {}
        while len(paths) < 2:
            line = self.proc.stdout.readline()  # type: ignore[union-attr]
            if not line:
                raise RuntimeError(f"hil link gave no ptys: {self.proc.stderr.read()}")  # type: ignore[union-attr]
            side, _, path = line.strip().partition(": ")
            paths[side] = path
        self.flight, self.ground = paths["flight"], paths["ground"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


class FlightRun:
    """`flight run` as a real process; its stderr goes to log."""

    def __init__(self, port: str, keys: Path, data_dir: Path, log: Path, *extra: str, env: dict[str, str] | None = None):
        self.args = [str(BIN / "flight"), "run", "--port", port, "--keys", str(keys), "--data-dir", str(data_dir),
                     "--log-level", "INFO", *extra]
        self.log = log
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_at = 0

    def start(self, ready_timeout: float = 60.0) -> None:
        self._log_at = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.args, cwd=REPO, stderr=log, env=self.env)
        end = time.monotonic() + ready_timeout
        while READY_LINE not in self.log_text():
            if self.proc.poll() is not None:
                raise RuntimeError(f"flight run exited {self.proc.returncode}: {self.log_text()[-2000:]}")
            if time.monotonic() > end:
                raise TimeoutError(f"flight run not ready in {ready_timeout} s")
            time.sleep(0.05)

    def log_text(self) -> str:
        """This start's part of the log."""
        with open(self.log, "rb") as handle:
            handle.seek(self._log_at)
            return handle.read().decode(errors="replace")

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def terminate(self, timeout: float = 10.0) -> tuple[int, float]:
        """SIGTERM; (exit code, seconds to exit)."""
        assert self.proc is not None
        start = time.monotonic()
        self.proc.terminate()
        code = self.proc.wait(timeout=timeout)
        return code, time.monotonic() - start

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def ground(port: str, keys: Path, archive: Path, *argv: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """One `ground` command against the node."""
    return subprocess.run([str(BIN / "ground"), *argv, "--port", port, "--keys", str(keys), "--archive", str(archive),
                           "--sack-interval", "0.2"], cwd=REPO, capture_output=True, text=True, timeout=timeout)


def flight_generate(prompt: str, max_tokens: int, *extra: str) -> dict:
    """`flight generate --json`, greedy unless extra gives --temperature (the last flag wins)."""
    out = subprocess.run([str(BIN / "flight"), "generate", "--prompt", prompt, "--max-tokens", str(max_tokens),
                          "--temperature", "0", "--json", *extra], cwd=REPO, capture_output=True, text=True,
                         timeout=120, check=True)
    return json.loads(out.stdout)
