"""`ground`: the ground station's command line.

    ground keygen --out link-keys.json
    ground send LINK_PING token=7 --port /dev/ttyUSB0 --keys link-keys.json
    ground monitor --duration 30
    ground submit --prompt "Why orbit?" --max-tokens 64
    ground collect --duration 600        # stay in contact, acknowledge and archive results
    ground results
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from flight.link.dictionary import CommandDef, ValueCheckError, load_dictionary
from flight.link.keys import KeyFileError, write_new_key_file
from ground.archive import GroundArchive
from ground.client import CommandError, GroundClient


def _connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", default="/dev/ttyUSB0", help="serial device or pyserial URL (loop://, socket://...)")
    parser.add_argument("--baud", type=int, default=115200)
    parser.add_argument("--keys", required=True, help="key file made by `ground keygen` (mode 0600)")
    parser.add_argument("--spi", type=int, help="key to use (default: the first in the key file)")
    parser.add_argument("--archive", default="ground-archive.sqlite", help="ground SQLite archive")
    parser.add_argument("--sack-interval", type=float, default=1.0, help="seconds between acknowledgements")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ground", description="tokensat ground station")
    sub = parser.add_subparsers(dest="action", required=True)
    keygen = sub.add_parser("keygen", help="create a new key file (mode 0600)")
    keygen.add_argument("--out", required=True)
    keygen.add_argument("--spi", type=int, default=1)
    send = sub.add_parser("send", help="send one command and wait for its completion")
    send.add_argument("command")
    send.add_argument("args", nargs="*", metavar="NAME=VALUE")
    send.add_argument("--timeout", type=float, default=10.0)
    send.add_argument("--confirm-hazardous", action="store_true")
    monitor = sub.add_parser("monitor", help="print housekeeping and events")
    monitor.add_argument("--duration", type=float, default=float("inf"))
    submit = sub.add_parser("submit", help="submit a job and wait for its result")
    submit.add_argument("--prompt", required=True)
    submit.add_argument("--max-tokens", type=int, default=64)
    submit.add_argument("--timeout", type=float, default=120.0)
    collect = sub.add_parser("collect", help="stay in contact and archive results as they arrive")
    collect.add_argument("--duration", type=float, default=float("inf"))
    results = sub.add_parser("results", help="print the results in the archive")
    results.add_argument("--archive", default="ground-archive.sqlite")
    for name in ("send", "monitor", "submit", "collect"):
        _connection_options(sub.choices[name])
    return parser


def _parse_arg(command: CommandDef, text: str) -> tuple[str, Any]:
    name, sep, value = text.partition("=")
    arg = next((a for a in command.args if a.name == name), None)
    if not sep or arg is None:
        raise ValueError(f"{text!r}: expected NAME=VALUE with NAME one of {[a.name for a in command.args]}")
    if arg.type == "str":
        return name, value
    if arg.type == "bool":
        if value.lower() not in ("true", "false"):
            raise ValueError(f"{name}: expected true or false")
        return name, value.lower() == "true"
    return name, int(value, 0)


def _client(args: argparse.Namespace) -> GroundClient:
    return GroundClient(args.port, keys=args.keys, archive=args.archive, baud=args.baud, spi=args.spi,
                        sack_interval_s=args.sack_interval)


def _send(args: argparse.Namespace) -> int:
    command = load_dictionary().command_by_name.get(args.command)
    if command is None:
        raise ValueError(f"unknown command {args.command}; see docs/ICD.md")
    named = dict(_parse_arg(command, text) for text in args.args)
    with _client(args) as client:
        response = client.send_and_await_completion(args.command, timeout=args.timeout,
                                                    confirm_hazardous=args.confirm_hazardous, **named)
    print(f"{args.command} COMPLETED {response.data if response.data is not None else ''}".rstrip())
    return 0


def _monitor(args: argparse.Namespace) -> int:
    end = time.monotonic() + args.duration
    with _client(args) as client:
        index = client.history_index()
        while time.monotonic() < end:
            try:
                item = client.await_packet(lambda p: p.name in ("HK", "EVENT"), timeout=min(1.0, end - time.monotonic()),
                                           since=index)
            except TimeoutError:
                continue
            index = item.index + 1
            if item.packet.name == "EVENT":
                record = client.event_record(item.packet)
                print(f"EVENT {record.severity} {record.name}: {record.message}", flush=True)
            else:
                for channel_id, value in sorted(item.packet.fields["channels"].items()):
                    channel = client.dictionary.channel_by_id[channel_id]
                    state = channel.limit_state(value)
                    print(f"HK {channel.name} = {value} {channel.unit}{'' if state == 'nominal' else ' ' + state.upper()}")
                print(flush=True)
    return 0


def _submit(args: argparse.Namespace) -> int:
    with _client(args) as client:
        job_id = client.submit_job(args.prompt, args.max_tokens)
        print(f"job {job_id} stored onboard", file=sys.stderr, flush=True)
        print(client.await_result(job_id, timeout=args.timeout).decode("utf-8", "replace"))
    return 0


def _collect(args: argparse.Namespace) -> int:
    end = time.monotonic() + args.duration
    with _client(args) as client:
        seen = set(client.results())
        while time.monotonic() < end:
            time.sleep(min(0.2, max(0.0, end - time.monotonic())))
            for job_id in sorted(set(client.results()) - seen):
                print(f"result {job_id} archived", flush=True)
                seen.add(job_id)
    return 0


def _results(args: argparse.Namespace) -> int:
    archive = GroundArchive(args.archive)
    for job_id, data in archive.results().items():
        print(f"--- job {job_id} ({len(data)} octets)\n{data.decode('utf-8', 'replace')}")
    archive.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    actions = {"send": _send, "monitor": _monitor, "submit": _submit, "collect": _collect, "results": _results}
    try:
        if args.action == "keygen":
            write_new_key_file(args.out, args.spi)
            print(f"wrote {args.out} (mode 0600); copy it to the flight computer over a trusted path")
            return 0
        return actions[args.action](args)
    except (KeyFileError, ValueError, ValueCheckError, CommandError, TimeoutError) as exc:
        print(f"ground: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader went away (e.g. `ground monitor | head`): stop quietly, as Unix tools do;
        # point stdout at devnull so the interpreter's final flush does not fail again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
