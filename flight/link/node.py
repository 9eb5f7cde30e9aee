"""A minimal flight link node: the link service, the onboard store and the placeholder job runner in
one process, until the executive takes over composing them.

    python -m flight.link.node --port /dev/ttyTHS1 --db onboard.sqlite --keys link-keys.json

Runs until SIGTERM or SIGINT.
"""
from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import sys
import threading
from typing import Any

from flight.link.cli_support import (
    EXIT_FAILURE, LinkStartError, OneLineParser, add_link_options, configure_logging, link_config, open_flight_link,
)
from flight.link.placeholder_job_runner import PlaceholderJobRunner
from flight.link.dictionary import load_dictionary
from flight.link.service import CommandOrigin, LinkService
from flight.store.anti_replay import AntiReplayCounter
from flight.store.job_store import JobStore
from flight.store.result_store import ResultStore

PROG = "python -m flight.link.node"


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog=PROG, description=__doc__.splitlines()[0])
    add_link_options(parser)
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    try:
        link = open_flight_link(args.port, args.baud, args.db, args.keys)
    except LinkStartError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    service = LinkService(link.port, link.keys, ResultStore(link.db, load_dictionary().segment_octets),
                          AntiReplayCounter(link.db), link_config(args))
    runner = PlaceholderJobRunner(service, JobStore(link.db))
    store_dir = os.path.dirname(os.path.abspath(args.db))

    def purge(args: dict[str, Any], origin: CommandOrigin) -> dict[str, Any]:
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
        service.start(link.db.increment_boot_count())
    except sqlite3.Error as exc:  # the boot count is the first write: a read-only or full disk shows here
        print(f"{PROG}: onboard database {args.db}: {exc}", file=sys.stderr)
        runner.stop()
        link.close()
        return EXIT_FAILURE
    stop.wait()
    service.stop()
    runner.stop()
    link.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
