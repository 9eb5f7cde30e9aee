"""`ground`: the ground station's command line.

    ground keygen --out link-keys.json
    ground send LINK_PING token=7 --port /dev/ttyUSB0 --keys link-keys.json
    ground monitor --duration 30
    ground submit --prompt "Why orbit?" --max-tokens 64 --stream   # wait, print the text, then a summary
    ground submit --prompt "Why orbit?" --chat --priority 5 --deadline 3600 --no-wait --json
    ground cancel 1700000123
    ground collect --duration 600        # stay in contact, acknowledge and archive results
    ground results --json                # one JSON object per archived result
    ground recover --keys recovery-keys.json --target-spi 1   # resynchronise an anti-replay counter
    ground playback --from 2026-11-25T10:00Z --to 2026-11-25T12:00Z   # the node's recorder, archived
    ground tle-upload iss.tle            # the orbit for onboard eclipse prediction (2 lines, or 3 with a name)
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sqlite3
import sys
import time
from datetime import datetime, timezone
from typing import Any

import serial

from flight.link.cli_support import (
    EXIT_FAILURE, MAX_LINK_TIMER_S, OneLineParser, baud_rate, seconds, serial_error,
)
from flight.link.dictionary import CommandDef, ValueCheckError, load_dictionary
from flight.link.job_result import ResultDecodeError, decode_result
from flight.link.keys import OPERATIONS, ROLES, KeyFileError, write_new_key_file
from flight.orbit.tle import TleError, parse_tle
from ground.archive import JOB_OPTIONS, ArchiveError, GroundArchive
from ground.client import CommandError, GroundClient, PlaybackRecord

# Longest wait for a command's completion or a job's result, and longest monitor or collect run
# (without --duration they run until interrupted): larger values are typing errors.
MAX_TIMEOUT_S = 24 * 3600.0
MAX_DURATION_S = 366 * 24 * 3600.0
# How long `submit --deadline` waits for a first TM packet to learn the onboard clock before it
# takes the local clock instead (three of the node's default housekeeping periods).
ONBOARD_CLOCK_WAIT_S = 3.0
# A TLE file with a name line is under 200 octets; a larger one is not one element set.
MAX_TLE_FILE_OCTETS = 4096


def _connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", default="/dev/ttyUSB0", help="serial device or pyserial URL (loop://, socket://...)")
    parser.add_argument("--baud", type=baud_rate, default=115200)
    parser.add_argument("--keys", required=True, help="key file made by `ground keygen` (mode 0600)")
    parser.add_argument("--spi", type=int, help="key to use (default: the first in the key file)")
    parser.add_argument("--archive", default="ground-archive.sqlite", help="ground SQLite archive")
    parser.add_argument("--sack-interval", type=seconds(MAX_LINK_TIMER_S), default=1.0,
                        help="seconds between acknowledgements")


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="ground", description="tokensat ground station")
    sub = parser.add_subparsers(dest="action", required=True, parser_class=OneLineParser)
    keygen = sub.add_parser("keygen", help="create a new key file (mode 0600)")
    keygen.add_argument("--out", required=True)
    keygen.add_argument("--spi", type=int, default=1)
    keygen.add_argument("--role", choices=ROLES, default=OPERATIONS,
                        help="recovery: a key kept offline, for recovery commands only")
    send = sub.add_parser("send", help="send one command and wait for its completion")
    send.add_argument("command")
    send.add_argument("args", nargs="*", metavar="NAME=VALUE")
    send.add_argument("--timeout", type=seconds(MAX_TIMEOUT_S), default=10.0)
    send.add_argument("--confirm-hazardous", action="store_true")
    monitor = sub.add_parser("monitor", help="print housekeeping and events")
    monitor.add_argument("--duration", type=seconds(MAX_DURATION_S), default=math.inf,
                         help="seconds (default: until interrupted)")
    submit = sub.add_parser("submit", help="submit a job and wait for its result")
    submit.add_argument("--prompt", required=True)
    submit.add_argument("--max-tokens", type=int, default=64)
    submit.add_argument("--chat", action="store_true", help="apply the model's chat template (a user turn)")
    submit.add_argument("--stream", action="store_true",
                        help="have the node stream tokens (JOB_TOKENS) and print them as they arrive")
    submit.add_argument("--temperature", type=float, help="sampling temperature, 0..5 (node default 0: greedy)")
    submit.add_argument("--top-k", type=int, help="keep the k most likely tokens (node default 0: off)")
    submit.add_argument("--top-p", type=float, help="nucleus sampling mass, 0.0001..1 (node default 1: off)")
    submit.add_argument("--seed", type=int, help="sampler seed (node default 0)")
    submit.add_argument("--token-ids", action="store_true",
                        help="also return the token ids in the result (costs 1-2 octets a token of downlink)")
    submit.add_argument("--priority", type=int, help="-100..100, higher runs first (node default 0)")
    submit.add_argument("--deadline", type=seconds(MAX_DURATION_S), metavar="SECONDS",
                        help="due this many seconds from now, on the node's clock (default: no deadline)")
    submit.add_argument("--no-wait", action="store_true", help="print the job id once the node has stored the job")
    submit.add_argument("--json", action="store_true", help="print one JSON object and nothing else on stdout")
    submit.add_argument("--timeout", type=seconds(MAX_TIMEOUT_S), default=120.0,
                        help="seconds to wait for the result")
    cancel = sub.add_parser("cancel", help="cancel a queued or running job (its result still comes)")
    cancel.add_argument("job_id", type=int, metavar="JOB_ID")
    cancel.add_argument("--json", action="store_true", help="print one JSON object")
    cancel.add_argument("--timeout", type=seconds(MAX_TIMEOUT_S), default=10.0)
    collect = sub.add_parser("collect", help="stay in contact and archive results as they arrive")
    collect.add_argument("--duration", type=seconds(MAX_DURATION_S), default=math.inf,
                         help="seconds (default: until interrupted)")
    results = sub.add_parser("results", help="print the results in the archive")
    results.add_argument("--archive", default="ground-archive.sqlite")
    results.add_argument("--json", action="store_true", help="one JSON object per line per result")
    recover = sub.add_parser("recover", help="resynchronise the node's anti-replay counter of an operations key, "
                                             "with the offline recovery key (--keys)")
    recover.add_argument("--target-spi", type=int, required=True, help="the operations key whose counter to set")
    recover.add_argument("--arsn", type=int, help="the counter's new value (default: the last ARSN this archive "
                                                  "used for --target-spi)")
    recover.add_argument("--allow-lower", action="store_true",
                         help="let the counter move down: packets sent with the ARSNs in between can be replayed")
    recover.add_argument("--timeout", type=seconds(MAX_TIMEOUT_S), default=10.0)
    tle_upload = sub.add_parser("tle-upload", help="upload a TLE for the node's onboard eclipse prediction")
    tle_upload.add_argument("file", metavar="FILE", help="one element set: 2 lines, or 3 with the name first")
    tle_upload.add_argument("--timeout", type=seconds(MAX_TIMEOUT_S), default=10.0)
    playback = sub.add_parser("playback", help="have the node play back its recorder's records of a time range, and "
                                               "archive them")
    playback.add_argument("--from", dest="start", type=onboard_time, required=True, metavar="TIME",
                          help="ISO 8601 (UTC unless it gives an offset) or seconds since 1970, on the node's clock")
    playback.add_argument("--to", dest="end", type=onboard_time, metavar="TIME",
                          help="as --from (default: now on the node's clock)")
    playback.add_argument("--kinds", choices=tuple(PLAYBACK_KINDS), default="all")
    playback.add_argument("--json", action="store_true", help="one JSON object per record")
    playback.add_argument("--timeout", type=seconds(MAX_TIMEOUT_S), default=600.0,
                          help="seconds to wait for the records (a day of housekeeping takes minutes of line)")
    for name in ("send", "monitor", "submit", "cancel", "collect", "recover", "tle-upload", "playback"):
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
    try:
        if arg.type.startswith("f"):
            return name, float(value)  # range and finiteness: the dictionary's check, as for every argument
        return name, int(value, 0)  # base 0: 0x1F and 0b101 too
    except ValueError:
        kind = "a number" if arg.type.startswith("f") else "an integer"
        raise ValueError(f"{name}: expected {kind} ({arg.type}), got {value!r}") from None


def _client(args: argparse.Namespace) -> GroundClient:
    return GroundClient(args.port, keys=args.keys, archive=args.archive, baud=args.baud, spi=args.spi,
                        sack_interval_s=args.sack_interval)


def _send(args: argparse.Namespace) -> int:
    command = load_dictionary().command_by_name.get(args.command)
    if command is None:
        raise ValueError(f"unknown command {args.command}; see docs/ICD.md")
    named = dict(_parse_arg(command, text) for text in args.args)
    # Refused here, before the port or the archive is touched, and in the CLI's own terms.
    if command.hazardous and not args.confirm_hazardous:
        raise ValueError(f"{args.command} is hazardous; add --confirm-hazardous to send it")
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
                item = client.await_packet(lambda p: p.name in ("HK", "EVENT", "REC_PLAYBACK"),
                                           timeout=min(1.0, end - time.monotonic()), since=index)
            except TimeoutError:
                continue
            index = item.index + 1
            if item.packet.name == "EVENT":
                record = client.event_record(item.packet)
                print(f"EVENT {record.severity} {record.name}: {record.message}", flush=True)
            elif item.packet.name == "REC_PLAYBACK":
                for played in client.playback_records(item.packet):
                    print(f"PLAYBACK {_playback_line(played)}", flush=True)
            else:
                for channel_id, value in sorted(item.packet.fields["channels"].items()):
                    channel = client.dictionary.channel_by_id[channel_id]
                    state = channel.limit_state(value)
                    print(f"HK {channel.name} = {value} {channel.unit}{'' if state == 'nominal' else ' ' + state.upper()}")
                print(flush=True)
    return 0


# JOB_SUBMIT's optional arguments as `ground submit` options (None: not given, the node's default);
# the deadline is given relative and converted once the onboard clock is known.
_SUBMIT_OPTIONS = tuple(name for name in JOB_OPTIONS if name != "deadline")


def _submit(args: argparse.Namespace) -> int:
    options = {name: getattr(args, name) for name in _SUBMIT_OPTIONS
               if getattr(args, name) is not None and getattr(args, name) is not False}
    # Checked here, before the port or the archive is touched (the deadline is checked once known).
    load_dictionary().command_by_name["JOB_SUBMIT"].order_args(
        {"job_id": 1, "max_tokens": args.max_tokens, "prompt": args.prompt, **options})
    with _client(args) as client:
        if args.deadline is not None:
            now = client.onboard_time(wait=min(ONBOARD_CLOCK_WAIT_S, args.timeout))
            if not client.onboard_clock_known:
                print("ground: no packet from the node yet; the deadline is counted on the local clock",
                      file=sys.stderr, flush=True)
            options["deadline"] = now + args.deadline
        since = client.history_index()
        job_id = client.submit_job(args.prompt, args.max_tokens, **options)
        if args.no_wait:
            print(json.dumps({"job_id": job_id}) if args.json else job_id, flush=True)
            return 0
        streaming = args.stream and not args.json
        if not args.json:
            print(f"job {job_id} stored onboard", file=sys.stderr, flush=True)
        streamed: list[str] = []

        def show(text: str) -> None:
            streamed.append(text)
            print(text, end="", flush=True)

        try:
            data = client.await_result(job_id, timeout=args.timeout, on_tokens=show if streaming else None,
                                       since=since)
        except TimeoutError as exc:
            if streaming:
                print(flush=True)
            raise TimeoutError(f"{exc}; the job is stored onboard: `ground collect` archives its result "
                               "when it comes") from None
    if streaming:
        print(flush=True)
    try:
        result = _decoded(job_id, data)
    except ResultDecodeError as exc:
        raise ValueError(f"job {job_id}: the result is archived as it came but {exc}") from None
    if args.json:
        print(json.dumps(result))
        return 0
    if streaming:
        if "".join(streamed) != result["text"]:
            print(f"ground: the stream of job {job_id} arrived incomplete or out of order; the result's text is "
                  "in `ground results`", file=sys.stderr)
    else:
        print(result["text"])
    print(_summary(result), file=sys.stderr)
    return 0


def _decoded(job_id: int, data: bytes) -> dict[str, Any]:
    """The result's fields; ResultDecodeError if data is not this job's result."""
    fields = decode_result(data)
    if fields["job_id"] != job_id:
        raise ResultDecodeError(f"result names job {fields['job_id']}")
    return fields


def _summary(result: dict[str, Any]) -> str:
    return (f"job {result['job_id']}: {result['tokens']} tokens, stop {result['stop_reason']}, "
            f"{result['tokens_per_s']:.3g} tok/s, {result['joules_per_token']:.3g} J/token, "
            f"${result['usd_per_token']:.3g}/token ({result['joules']:.3g} J, ${result['cost_usd']:.3g})")


def _cancel(args: argparse.Namespace) -> int:
    load_dictionary().command_by_name["JOB_CANCEL"].order_args({"job_id": args.job_id})
    with _client(args) as client:
        response = client.cancel_job(args.job_id, timeout=args.timeout)
    data = response.data if isinstance(response.data, dict) else {}
    if args.json:
        print(json.dumps({"job_id": args.job_id, "status": response.status, **data}, default=str))
    else:
        done = f" after {data['tokens_done']} tokens" if isinstance(data.get("tokens_done"), int) else ""
        print(f"job {args.job_id} cancelled{done}; its result follows as any other")
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


def _recover(args: argparse.Namespace) -> int:
    if args.arsn is not None and not 0 <= args.arsn < 1 << 64:
        raise ValueError(f"--arsn must be 0..2^64-1, got {args.arsn}")
    client = GroundClient(args.port, keys=args.keys, archive=args.archive, baud=args.baud, spi=args.spi,
                          sack_interval_s=None)  # a recovery key may send nothing but recovery commands
    with client:
        data = client.recover_arsn(args.target_spi, last_arsn=args.arsn, allow_lower=args.allow_lower,
                                   timeout=args.timeout)
    print(f"SPI {data['spi']}: anti-replay counter {data['previous']} -> {data['last_arsn']}; "
          f"archive {args.archive} continues from it")
    return 0


def _tle_upload(args: argparse.Namespace) -> int:
    # Checked here with the node's own parser, before the port or the archive is touched.
    try:
        with open(args.file, "rb") as handle:
            data = handle.read(MAX_TLE_FILE_OCTETS + 1)
    except OSError as exc:
        raise ValueError(f"cannot read {args.file}: {exc.strerror}") from None
    if len(data) > MAX_TLE_FILE_OCTETS:
        raise ValueError(f"{args.file}: over {MAX_TLE_FILE_OCTETS} octets, not one TLE")
    try:
        tle = parse_tle(data)
    except TleError as exc:
        raise ValueError(f"{args.file}: {exc}") from None
    named = {"line1": tle.line1, "line2": tle.line2, **({"satellite": tle.name} if tle.name else {})}
    with _client(args) as client:
        client.send_and_await_completion("TLE_UPLOAD", timeout=args.timeout, **named)
    name = f" ({tle.name})" if tle.name else ""
    print(f"TLE of {tle.catalog_number}{name} loaded onboard: epoch {tle.epoch.isoformat(timespec='seconds')}")
    return 0


# `ground playback --kinds`: REC_KIND values, summed into RECORDER_PLAYBACK's kinds.
_REC_KIND = load_dictionary().enums["REC_KIND"].values
PLAYBACK_KINDS = {"events": _REC_KIND["EVENT"], "hk": _REC_KIND["HK"], "all": _REC_KIND["EVENT"] | _REC_KIND["HK"]}


def onboard_time(text: str) -> float:
    """An argparse type: an ISO 8601 date and time (UTC unless it gives an offset) or seconds since 1970."""
    try:
        value = float(text)
    except ValueError:
        try:  # Python 3.10's fromisoformat does not take a Z
            parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an ISO 8601 time or seconds since 1970, got {text!r}") from None
        value = (parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)).timestamp()
    if not 0 <= value < 2**32:  # the onboard clock's range (CUC coarse time); also refuses NaN
        raise argparse.ArgumentTypeError(f"expected a time from 1970 to 2106, got {text!r}")
    return value


def _iso(onboard: float) -> str:
    return datetime.fromtimestamp(onboard, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _playback_line(record: PlaybackRecord) -> str:
    if record.event is not None:
        return f"{_iso(record.onboard_time)} #{record.seq} EVENT {record.event.severity} {record.event.name}: " \
               f"{record.event.message}"
    return f"{_iso(record.onboard_time)} #{record.seq} HK {len(record.channels or {})} channels"


def _playback_json(record: PlaybackRecord) -> str:
    body: dict[str, Any] = ({"event": record.event.name, "severity": record.event.severity,
                             "message": record.event.message, "args": record.event.args}
                            if record.event is not None else {"channels": record.channels})
    return json.dumps({"seq": record.seq, "kind": record.kind, "onboard_time": record.onboard_time,
                       "in_contact": record.in_contact, **body}, default=str)


def _playback(args: argparse.Namespace) -> int:
    kinds = PLAYBACK_KINDS[args.kinds]
    if args.end is not None and args.end < args.start:
        raise ValueError("--to is before --from")
    with _client(args) as client:
        since = client.history_index()
        end = args.end if args.end is not None else client.onboard_time(wait=min(ONBOARD_CLOCK_WAIT_S, args.timeout))
        if end < args.start:
            raise ValueError(f"--from {_iso(args.start)} is after the node's clock ({_iso(end)})")
        deadline = time.monotonic() + args.timeout
        data = client.send_and_await_completion("RECORDER_PLAYBACK", timeout=min(args.timeout, 10.0),
                                                start=args.start, end=end, kinds=kinds).data
        received: set[int] = set()
        while len(received) < data["records"] and time.monotonic() < deadline:
            try:
                item = client.await_packet(lambda p: p.name == "REC_PLAYBACK", since=since,
                                           timeout=max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                break
            since = item.index + 1
            for record in client.playback_records(item.packet):
                # an automatic pass may bring some of them too, or records out of the range
                if (record.seq not in received and args.start <= record.onboard_time <= end
                        and _REC_KIND[record.kind] & kinds):
                    received.add(record.seq)
                    print(_playback_json(record) if args.json else _playback_line(record), flush=True)
    span = f"seq {data['first_seq']}..{data['last_seq']}" if data["records"] else "none recorded in the range"
    if len(received) < data["records"]:
        raise TimeoutError(f"only {len(received)} of {data['records']} records ({span}) arrived within "
                           f"{args.timeout:g} s; run ground playback again for the rest")
    print(f"{len(received)} records played back ({span}), archived in {args.archive}", file=sys.stderr)
    return 0


def _results(args: argparse.Namespace) -> int:
    archive = GroundArchive(args.archive, create=False)  # a reader: a wrong path must not leave a new archive
    try:
        results = archive.results()
    finally:
        archive.close()
    for job_id, data in results.items():
        try:
            result = _decoded(job_id, data)
        except ResultDecodeError as exc:
            # archived before results were encoded so, or broken: shown as well as it can be
            text = data.decode("utf-8", "replace")
            if args.json:
                print(json.dumps({"job_id": job_id, "error": str(exc), "text": text}), flush=True)
            else:
                print(f"--- job {job_id} ({len(data)} octets, not a decodable result: {exc})\n{text}", flush=True)
            continue
        if args.json:
            print(json.dumps(result), flush=True)
        else:
            print(f"--- {_summary(result)}\n{result['text']}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    actions = {"send": _send, "monitor": _monitor, "submit": _submit, "cancel": _cancel, "collect": _collect,
               "results": _results, "recover": _recover, "tle-upload": _tle_upload,
               "playback": _playback}
    try:
        if args.action == "keygen":
            write_new_key_file(args.out, args.spi, args.role)
            print(f"wrote {args.out} (mode 0600); copy it to the flight computer over a trusted path")
            return 0
        return actions[args.action](args)
    except BrokenPipeError:
        # the reader went away (e.g. `ground monitor | head`): stop quietly, as Unix tools do;
        # point stdout at devnull so the interpreter's final flush does not fail again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except serial.SerialException as exc:
        print(f"ground: {serial_error(args.port, exc)}", file=sys.stderr)
        return EXIT_FAILURE
    except sqlite3.Error as exc:
        print(f"ground: archive {args.archive}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    # OverflowError: a number too large for a C call below (a wait, termios) that the option
    # types let through; OSError includes TimeoutError and a device failing under pyserial.
    except (KeyFileError, ValueError, ValueCheckError, CommandError, ArchiveError, OverflowError, OSError) as exc:
        print(f"ground: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
