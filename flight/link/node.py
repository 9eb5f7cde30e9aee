"""A minimal flight link node: the link service, the onboard store and the placeholder job
runner in one process, until the executive takes over composing them.

    python -m flight.link.node --port /dev/ttyTHS1 --db onboard.sqlite --keys link-keys.json

Runs until SIGTERM or SIGINT.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
import threading
from typing import Any

import serial

from flight.link.keys import KeyFileError, KeyRing
from flight.link.placeholder_job_runner import PlaceholderJobRunner
from flight.link.serial_port import SerialPort
from flight.link.service import LinkConfig, LinkService
from flight.store.onboard_db import OnboardDb


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m flight.link.node", description=__doc__.splitlines()[0])
    parser.add_argument("--port", default="/dev/ttyTHS1", help="serial device or pyserial URL")
    parser.add_argument("--baud", type=int, default=115200)
    parser.add_argument("--db", required=True, help="onboard SQLite file")
    parser.add_argument("--keys", required=True, help="key file (mode 0600)")
    parser.add_argument("--hk-period", type=float, default=1.0, help="seconds between housekeeping packets")
    parser.add_argument("--contact-timeout", type=float, default=10.0, help="seconds of uplink silence before contact is lost")
    parser.add_argument("--rto", type=float, default=3.0, help="result segment retransmission timeout, seconds")
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        keys = KeyRing.load(args.keys)
    except KeyFileError as exc:
        print(f"flight link node: {exc}", file=sys.stderr)
        return 2
    db = OnboardDb(args.db)
    service = LinkService(
        SerialPort(args.port, args.baud), keys, db,
        LinkConfig(hk_period_s=args.hk_period, contact_timeout_s=args.contact_timeout, rto_s=args.rto),
    )
    runner = PlaceholderJobRunner(service)
    store_dir = os.path.dirname(os.path.abspath(args.db))

    def purge(_: dict[str, Any]) -> dict[str, Any]:
        count = service.results.purge_delivered()
        service.emit_event("STORE_RESULTS_PURGED", count=count)
        return {"count": count}

    service.register_handler("STORE_PURGE_DELIVERED", purge)
    service.add_channel_source(lambda: {"STORE_DISK_FREE": shutil.disk_usage(store_dir).free})
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    runner.start()
    try:
        service.start()
    except serial.SerialException as exc:
        print(f"flight link node: cannot open {args.port}: {exc}", file=sys.stderr)
        runner.stop()
        db.close()
        return 2
    stop.wait()
    service.stop()
    runner.stop()
    db.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
