"""The flight-side link service: the one object the executive talks to about the ground.

Uplink: bytes -> Deframer -> authenticate (SDLS MAC) -> anti-replay (persisted) -> decode ->
ACK and queue for the handler registered for the command, or NACK with a reason. The handler
runs on the command thread and its outcome becomes the completion report. DL_SACK packets go to
the result downlink instead.

Downlink: the executive feeds housekeeping (set_channel, add_channel_source), events
(emit_event), token streams (send_tokens) and results (publish_result); the TM writer sends them
by priority, result segments filling the idle line while the ground is in contact.
"""
from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import msgpack

from flight.link.codec import AuthenticTc, LinkError, PacketCodec
from flight.link.dictionary import CommandDef, Dictionary, load_dictionary
from flight.link.event_reporter import EventReporter
from flight.link.framing import Deframer
from flight.link.keys import KeyRing
from flight.link.result_downlink import ResultDownlink
from flight.link.serial_port import SerialPort
from flight.link.telemetry import Telemetry
from flight.link.tm_writer import TmWriter
from flight.store.anti_replay import AntiReplayCounter
from flight.store.onboard_db import OnboardDb
from flight.store.result_store import ResultStore

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], "dict[str, Any] | None"]
ChannelSource = Callable[[], "dict[str, Any]"]

_AUTH_REASONS = frozenset({"BAD_SECURITY", "UNKNOWN_KEY", "BAD_MAC"})
_DEFRAMER_CHANNELS = {
    "FRAMES_OK": "LINK_FRAMES_RECEIVED",
    "DISCARDED_OCTETS": "LINK_BYTES_DISCARDED",
    "BAD_CRC": "LINK_CRC_ERRORS",
    "BAD_FRAME": "LINK_FRAME_ERRORS",
    "BAD_HEADER": "LINK_FRAME_ERRORS",
    "OVERSIZE": "LINK_OVERSIZE_FRAMES",
}
_CLEARABLE = [
    "CMD_ACCEPTED", "CMD_REJECTED", "CMD_EXECUTED", "CMD_FAILED", "LINK_CRC_ERRORS", "LINK_FRAME_ERRORS",
    "LINK_OVERSIZE_FRAMES", "LINK_AUTH_FAILURES", "LINK_REPLAYS_REJECTED", "LINK_BYTES_DISCARDED",
    "LINK_EVENTS_SUPPRESSED", "LINK_PACKETS_DROPPED",
]
_COUNTERS = _CLEARABLE + [
    "LINK_FRAMES_RECEIVED", "LINK_PACKETS_SENT", "DL_SEGMENTS_SENT", "DL_SEGMENTS_RETRANSMITTED",
    "DL_RESULTS_DELIVERED", "DL_SACKS_RECEIVED",
]
_MAX_DETAIL = 200


class CommandFailure(Exception):
    """Raised by a command handler: the command ran and failed for a REASON-named cause."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass
class LinkConfig:
    hk_period_s: float = 1.0
    contact_timeout_s: float = 10.0  # no valid uplink for this long: contact lost
    rto_s: float = 3.0  # result segment retransmission timeout
    command_queue_depth: int = 32


def _one_line(text: str) -> str:
    return (text.splitlines() or [""])[0][:_MAX_DETAIL]


class LinkService:
    def __init__(self, port: SerialPort, keys: KeyRing, db: OnboardDb, config: LinkConfig | None = None,
                 dictionary: Dictionary | None = None):
        self.dictionary = dictionary or load_dictionary()
        self.config = config or LinkConfig()
        self.codec = PacketCodec(self.dictionary)
        self.telemetry = Telemetry(self.dictionary)
        self.results = ResultStore(db, self.dictionary.segment_octets)
        self._db = db
        self._port = port
        self._keys = keys
        self._replay = AntiReplayCounter(db)
        self._events = EventReporter(self.dictionary, self.telemetry, lambda fields: self._writer.submit("EVENT", fields))
        self.downlink = ResultDownlink(self.results, self.telemetry, self._events, self.config.rto_s, self.link_up)
        self._writer = TmWriter(port, self.codec, self.telemetry, self.downlink)
        self.deframer = Deframer(self.dictionary.max_packet_octets, on_reject=self._frame_rejected)
        self._deframer_seen = dict(self.deframer.counters)
        self._handlers: dict[str, Handler] = {
            "CMD_NOOP": self._noop,
            "CMD_CLEAR_COUNTERS": self._clear_counters,
            "LINK_PING": self._ping,
            "LINK_SET_HK_PERIOD": self._set_hk_period,
        }
        self._channel_sources: list[ChannelSource] = []
        self._commands: queue.Queue[tuple[CommandDef, dict[str, Any], AuthenticTc] | None] = queue.Queue(
            self.config.command_queue_depth)
        self._hk_period_s = self.config.hk_period_s
        self._hk_wake = threading.Event()
        self._stop = threading.Event()
        self._last_contact: float | None = None
        self._contact = False
        self._contact_lock = threading.Lock()
        self._started = time.monotonic()
        self.telemetry.zero(_COUNTERS)
        self._threads = [
            threading.Thread(target=self._run_commands, name="commands", daemon=True),
            threading.Thread(target=self._run_housekeeping, name="housekeeping", daemon=True),
        ]

    # --- the executive's interface -----------------------------------------------------------
    def register_handler(self, command: str, handler: Handler) -> None:
        """Run handler(args by name) for each accepted `command`; return completion data or None,
        raise CommandFailure for a reasoned failure."""
        if command not in self.dictionary.command_by_name:
            raise KeyError(f"{command} is not in the dictionary")
        self._handlers[command] = handler

    def add_channel_source(self, source: ChannelSource) -> None:
        """source() -> {channel name: value}, called before each housekeeping packet."""
        self._channel_sources.append(source)

    def set_channel(self, name: str, value: Any) -> None:
        self.telemetry.set(name, value)

    def emit_event(self, name: str, **args: Any) -> bool:
        return self._events.emit(name, **args)

    def send_tokens(self, job_id: int, first_index: int, token_ids: list[int], text: str) -> None:
        self._writer.submit("JOB_TOKENS", {"job_id": job_id, "first_index": first_index,
                                           "token_ids": token_ids, "text": text})

    def publish_result(self, job_id: int, data: bytes) -> bool:
        """Persist a job result and queue it for reliable downlink; False if the job had one already."""
        stored = self.results.store_result(job_id, data)
        self.downlink.add(job_id)
        self._writer.wake()
        return stored

    def link_up(self) -> bool:
        last = self._last_contact
        return last is not None and time.monotonic() - last <= self.config.contact_timeout_s

    def start(self) -> None:
        """Open the port (raises serial.SerialException if it cannot) and start serving."""
        self._port.start(self._on_bytes)
        boot_count = self._db.increment_boot_count()
        self.telemetry.set("LINK_BOOT_COUNT", boot_count)
        self.telemetry.set("LINK_LAST_ARSN", self._replay.highest())
        self.telemetry.set("LINK_CONTACT", False)
        self._writer.start()
        for thread in self._threads:
            thread.start()
        self._events.emit("LINK_STARTED", boot_count=boot_count, dictionary_version=self.dictionary.version)

    def stop(self) -> None:
        self._port.close()
        self._stop.set()
        self._hk_wake.set()
        self._commands.put(None)
        for thread in self._threads:
            thread.join(timeout=2.0)
        self._writer.stop()

    # --- uplink ------------------------------------------------------------------------------
    def _on_bytes(self, data: bytes) -> None:
        try:
            packets = self.deframer.feed(data)
            self._sync_deframer_counters()
            for packet in packets:
                self._handle_uplink(packet)
        except Exception:  # a bug here must cost one packet, not the receive thread
            log.exception("uplink handling fault")

    def _sync_deframer_counters(self) -> None:
        for key, value in self.deframer.counters.items():
            delta = value - self._deframer_seen[key]
            if delta:
                self.telemetry.add(_DEFRAMER_CHANNELS[key], delta)
        self._deframer_seen = dict(self.deframer.counters)

    def _frame_rejected(self, reason: str, octets: int) -> None:
        self._events.emit("LINK_FRAME_REJECTED", reason=self.dictionary.enum_value("REASON", reason),
                          octets=min(octets, 0xFFFFFFFF))

    def _handle_uplink(self, packet: bytes) -> None:
        try:
            tc = self.codec.authenticate_tc(packet, self._keys)
            try:
                fresh = self._replay.accept(tc.spi, tc.arsn)
            except sqlite3.Error as exc:
                raise LinkError("STORE_ERROR", f"anti-replay counter not saved: {exc}", arsn=tc.arsn,
                                seq_count=tc.seq_count) from None
            if not fresh:
                raise LinkError("REPLAY", f"ARSN {tc.arsn} is not above {self._replay.last(tc.spi)} for SPI {tc.spi}",
                                arsn=tc.arsn, seq_count=tc.seq_count)
            self.telemetry.set("LINK_LAST_ARSN", max(tc.arsn, self.telemetry.get("LINK_LAST_ARSN") or 0))
            self._note_contact()
            fields = self.codec.decode_tc_fields(tc)
            if tc.kind.name == "DL_SACK":
                self.telemetry.add("DL_SACKS_RECEIVED")
                self.downlink.on_sack(fields["entries"])
                self._writer.wake()
            else:
                self._accept_command(tc, fields)
        except LinkError as exc:
            self._reject(exc)

    def _accept_command(self, tc: AuthenticTc, fields: dict[str, Any]) -> None:
        command, args = self.codec.command_of(tc, fields)
        context = {"arsn": tc.arsn, "seq_count": tc.seq_count, "opcode": command.opcode}
        if command.name not in self._handlers:
            raise LinkError("NOT_AVAILABLE", f"nothing onboard executes {command.name} now", **context)
        if self._commands.full():  # only this thread puts, so the check holds until the put
            raise LinkError("BUSY", f"{self.config.command_queue_depth} commands already queued", **context)
        self.telemetry.add("CMD_ACCEPTED")
        self._respond(tc.arsn, tc.seq_count, command.opcode, "ACCEPTED", "NONE", None)
        self._commands.put_nowait((command, args, tc))

    def _reject(self, exc: LinkError) -> None:
        self.telemetry.add("CMD_REJECTED")
        if exc.reason in _AUTH_REASONS:
            self.telemetry.add("LINK_AUTH_FAILURES")
        elif exc.reason == "REPLAY":
            self.telemetry.add("LINK_REPLAYS_REJECTED")
        self._respond(exc.arsn, exc.seq_count, exc.opcode, "REJECTED", exc.reason, _one_line(exc.detail))
        self._events.emit("CMD_REJECTED", reason=self.dictionary.enum_value("REASON", exc.reason),
                          opcode=exc.opcode, arsn=exc.arsn)

    def _respond(self, arsn: int | None, seq_count: int | None, opcode: int | None, status: str, reason: str,
                 data: Any) -> None:
        self._writer.submit("CMD_RESPONSE", {
            "arsn": arsn, "seq_count": seq_count, "opcode": opcode,
            "status": self.dictionary.enum_value("CMD_STATUS", status),
            "reason": self.dictionary.enum_value("REASON", reason), "data": data,
        })

    def _note_contact(self) -> None:
        self._last_contact = time.monotonic()
        with self._contact_lock:
            acquired, self._contact = not self._contact, True
        if acquired:
            self.telemetry.set("LINK_CONTACT", True)
            self._events.emit("LINK_CONTACT_ACQUIRED")
            self._writer.wake()

    # --- command execution -------------------------------------------------------------------
    def _run_commands(self) -> None:
        while (item := self._commands.get()) is not None:
            command, args, tc = item
            try:
                data = self._handlers[command.name](args)
                msgpack.packb(data, use_bin_type=True)  # fail here, not silently in the writer
            except CommandFailure as exc:
                self._complete_failed(command, tc, exc.reason, _one_line(exc.detail))
            except Exception as exc:  # a handler bug fails its command, not the command thread
                log.exception("%s handler fault", command.name)
                self._complete_failed(command, tc, "EXECUTION_ERROR", _one_line(f"{type(exc).__name__}: {exc}"))
            else:
                self.telemetry.add("CMD_EXECUTED")
                self._respond(tc.arsn, tc.seq_count, command.opcode, "COMPLETED", "NONE", data)
                self._events.emit("CMD_COMPLETED", command=command.name)

    def _complete_failed(self, command: CommandDef, tc: AuthenticTc, reason: str, detail: str) -> None:
        self.telemetry.add("CMD_FAILED")
        self._respond(tc.arsn, tc.seq_count, command.opcode, "FAILED", reason, detail)
        self._events.emit("CMD_FAILED", command=command.name,
                          reason=self.dictionary.enum_value("REASON", reason), detail=detail)

    def _noop(self, args: dict[str, Any]) -> None:
        self._events.emit("CMD_NOOP_RECEIVED", dictionary_version=self.dictionary.version)

    def _clear_counters(self, args: dict[str, Any]) -> None:
        self.telemetry.zero(_CLEARABLE)
        self._events.emit("CMD_COUNTERS_CLEARED")

    def _ping(self, args: dict[str, Any]) -> dict[str, Any]:
        self._events.emit("LINK_PING_ANSWERED", token=args["token"])
        return {"token": args["token"]}

    def _set_hk_period(self, args: dict[str, Any]) -> None:
        self._hk_period_s = args["period_ms"] / 1000.0
        self._hk_wake.set()
        self._events.emit("LINK_HK_PERIOD_SET", period_ms=args["period_ms"])

    # --- housekeeping ------------------------------------------------------------------------
    def _run_housekeeping(self) -> None:
        while not self._stop.is_set():
            self._publish_housekeeping()
            self._hk_wake.wait(self._hk_period_s)
            self._hk_wake.clear()

    def _publish_housekeeping(self) -> None:
        now = time.monotonic()
        self.telemetry.set("LINK_UPTIME", int(now - self._started))
        with self._contact_lock:
            lost = self._contact and not self.link_up()
            if lost:
                self._contact = False
        if lost:
            self.telemetry.set("LINK_CONTACT", False)
            self._events.emit("LINK_CONTACT_LOST", timeout_ms=int(self.config.contact_timeout_s * 1000))
        for source in self._channel_sources:
            try:
                for name, value in source().items():
                    self.telemetry.set(name, value)
            except Exception:  # one bad sensor must not silence housekeeping
                log.exception("channel source fault")
        self._writer.submit("HK", {"channels": self.telemetry.snapshot()})
