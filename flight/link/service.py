"""The flight-side link service: the one object the executive talks to about the ground.

Uplink: bytes -> Deframer -> authenticate (SDLS MAC) -> anti-replay (persisted, windowed) ->
decode -> ACK and queue for the handler registered for the command, or NACK with a reason. The
handler runs on the command thread and its outcome becomes the completion report. DL_SACK
packets go to the result downlink instead.

Two kinds of NACK. Input that never proved itself authentic and fresh (bad framing, unknown
key, bad MAC, replayed or out-of-window ARSN) costs an attacker nothing to send, so what it
provokes is an unauthenticated CMD_REJECTION, an event and counters, all within one small
rejection budget of downlink octets, summarised by LINK_REJECTIONS_SUMMARY. Everything that
answers an authentic fresh packet (ACK, NACK, completion) is a CMD_RESPONSE authenticated with
the command's key and bound to the command's MAC, on a queue rejections never touch.

Downlink: the executive feeds housekeeping (set_channel, add_channel_source), events
(emit_event), token streams (send_tokens) and results (publish_result); the TM writer sends them
by priority, result segments filling the idle line while the ground is in contact.

Given a recorder, events and decimated housekeeping are also recorded onboard, and what the ground
missed is played back at the next contact, or on command (RECORDER_PLAYBACK): see recording and
playback.
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

from flight.link.codec import AuthenticTc, LinkError, PacketCodec, Seal
from flight.link.dictionary import CommandDef, Dictionary, EventDef, load_dictionary
from flight.link.event_reporter import EventReporter
from flight.link.framing import Deframer
from flight.link.keys import KeyRing
from flight.link.playback import PLAYBACK_EVERY, PlaybackBusy, RecordStore
from flight.link.recording import Recording
from flight.link.rejection_tally import RejectionTally
from flight.link.result_downlink import ResultDownlink
from flight.link.sdls import result_mac
from flight.link.serial_port import SerialPort
from flight.link.telemetry import Telemetry
from flight.link.tm_writer import SharedBulk, TmWriter
from flight.link.token_stream import token_packets
from flight.link.token_bucket import TokenBucket
from flight.store.anti_replay import AntiReplayCounter
from flight.store.result_store import ResultStore

log = logging.getLogger(__name__)

ChannelSource = Callable[[], "dict[str, Any]"]

_AUTH_REASONS = frozenset({"BAD_SECURITY", "UNKNOWN_KEY", "BAD_MAC"})
_SECURITY = load_dictionary().security
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
    "LINK_EVENTS_SUPPRESSED", "LINK_PACKETS_DROPPED", "LINK_REJECTIONS_SUPPRESSED", "LINK_ARSN_OUT_OF_WINDOW",
]
_COUNTERS = _CLEARABLE + [
    "LINK_FRAMES_RECEIVED", "LINK_PACKETS_SENT", "LINK_REJECTION_OCTETS", "DL_SEGMENTS_SENT",
    "DL_SEGMENTS_RETRANSMITTED", "DL_RESULTS_DELIVERED", "DL_SACKS_RECEIVED", "DL_RESULTS_REREQUESTED",
]
_MAX_DETAIL = 200


class CommandFailure(Exception):
    """Raised by a command handler: the command ran and failed for a REASON-named cause."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class CommandOrigin:
    """Who sent an accepted command: its key and anti-replay sequence number."""

    spi: int
    arsn: int


Handler = Callable[[dict[str, Any], CommandOrigin], "dict[str, Any] | None"]


@dataclass
class LinkConfig:
    hk_period_s: float = 1.0
    contact_timeout_s: float = 10.0  # no valid uplink for this long: contact lost
    rto_s: float = 3.0  # result segment retransmission timeout
    command_queue_depth: int = 32
    arsn_window: int = _SECURITY.arsn_window
    rejection_budget_octets_per_s: float = _SECURITY.rejection_budget_octets_per_s
    rejection_burst_octets: float = _SECURITY.rejection_burst_octets
    rejection_summary_period_s: float = _SECURITY.rejection_summary_period_s
    record_hk_period_s: float = 10.0  # a housekeeping snapshot recorded onboard this often (with a recorder)


def _one_line(text: str) -> str:
    return (text.splitlines() or [""])[0][:_MAX_DETAIL]


class LinkService:
    """The link, given its port, keys and the stores it owns no more than it must: results for
    the reliable downlink, the anti-replay counter and, optionally, the onboard recorder (the node
    builds them; see flight/node.py)."""

    def __init__(self, port: SerialPort, keys: KeyRing, results: ResultStore, replay: AntiReplayCounter,
                 config: LinkConfig | None = None, dictionary: Dictionary | None = None,
                 recorder: RecordStore | None = None):
        self.dictionary = dictionary or load_dictionary()
        self.config = config or LinkConfig()
        self.codec = PacketCodec(self.dictionary)
        self.telemetry = Telemetry(self.dictionary)
        self.results = results
        self._port = port
        self._keys = keys
        self._sign_legacy_results()
        self._replay = replay
        self._events = EventReporter(self.dictionary, self.telemetry, self._send_event)
        self.downlink = ResultDownlink(self.results, self.telemetry, self._events, self.config.rto_s, self.link_up)
        self._recording = (None if recorder is None else Recording(
            recorder, self.codec, self._events, self.link_up, self.config.record_hk_period_s,
            self.config.contact_timeout_s))
        bulk = (self.downlink if self._recording is None
                else SharedBulk(self.downlink, self._recording.playback, PLAYBACK_EVERY))
        budget = TokenBucket(self.config.rejection_budget_octets_per_s, self.config.rejection_burst_octets)
        self._writer = TmWriter(port, self.codec, self.telemetry, bulk, budget)
        self.deframer = Deframer(self.dictionary.max_packet_octets, on_reject=self._frame_rejected)
        self._deframer_seen = dict(self.deframer.counters)
        self._handlers: dict[str, Handler] = {
            "CMD_NOOP": self._noop,
            "CMD_CLEAR_COUNTERS": self._clear_counters,
            "LINK_PING": self._ping,
            "LINK_SET_HK_PERIOD": self._set_hk_period,
            "LINK_SET_ARSN": self._set_arsn,
        }
        self._channel_sources: list[ChannelSource] = []
        if self._recording is not None:
            self._handlers["RECORDER_PLAYBACK"] = self._recorder_playback
            self._channel_sources.append(self._recording.channels)
        self._commands: queue.Queue[tuple[CommandDef, dict[str, Any], AuthenticTc] | None] = queue.Queue(
            self.config.command_queue_depth)
        self._rejections = RejectionTally()
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
        """Run handler(args by name, origin) for each accepted `command`; return completion data
        or None, raise CommandFailure for a reasoned failure."""
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

    def send_tokens(self, job_id: int, first_index: int, tokens: list[tuple[int, str]]) -> None:
        """Stream (token id, text) pairs starting at token first_index, best-effort, in as many
        JOB_TOKENS packets as it takes for each to fit. A token whose text alone does not fit is
        sent in pieces: the first carries its id, the rest no id and the same first_index."""
        for fields in token_packets(job_id, first_index, tokens, self.dictionary.max_packet_octets):
            self._writer.submit("JOB_TOKENS", fields)

    def publish_result(self, job_id: int, data: bytes, spi: int | None) -> bool:
        """Persist a job result with its MAC and queue it for reliable downlink; False if the job
        had one already. spi: the key that submitted the job, which makes the MAC (see _result_key)."""
        spi, key = self._result_key(spi)
        stored = self.results.store_result(job_id, data, spi, result_mac(key, job_id, data))
        self.downlink.add(job_id)
        self._writer.wake()
        return stored

    def silence_s(self, now: float | None = None) -> float:
        """Seconds since the last authentic, fresh uplink packet (since the start if none yet)."""
        last = self._last_contact
        return (time.monotonic() if now is None else now) - (self._started if last is None else last)

    def link_up(self) -> bool:
        last = self._last_contact
        return last is not None and time.monotonic() - last <= self.config.contact_timeout_s

    def start(self, boot_count: int) -> None:
        """Open the port (raises serial.SerialException if it cannot) and start serving; boot_count
        is this start's number, counted by the node."""
        self.telemetry.set("LINK_BOOT_COUNT", boot_count)
        self.telemetry.set("LINK_LAST_ARSN", self._replay.highest())
        self.telemetry.set("LINK_RECOVERY_CHALLENGE", self._replay.challenge())
        # Before the receive thread starts: a packet it took at once would otherwise see its
        # LINK_CONTACT overwritten with False here, for good (found by the kill -9 loop).
        self.telemetry.set("LINK_CONTACT", False)
        self._port.start(self._on_bytes)
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
        self._rejections.add(reason)
        self._events.emit("LINK_FRAME_REJECTED", reason=self.dictionary.enum_value("REASON", reason),
                          octets=min(octets, 0xFFFFFFFF))

    def _send_event(self, event: EventDef, fields: dict[str, Any]) -> None:
        self._writer.submit("EVENT", fields, rejection=event.rejection)
        if self._recording is not None:
            self._recording.event(event, fields)

    def _handle_uplink(self, packet: bytes) -> None:
        try:
            tc = self._authentic_and_fresh(packet)
        except LinkError as exc:
            self._reject_unverified(exc)
            return
        self._note_contact()
        try:
            fields = self.codec.decode_tc_fields(tc)
            if self._keys.is_recovery(tc.spi) and tc.kind.name != "COMMAND":
                raise LinkError("KEY_NOT_ALLOWED", f"SPI {tc.spi} is a recovery key; it sends recovery commands only")
            if tc.kind.name == "DL_SACK":
                self.telemetry.add("DL_SACKS_RECEIVED")
                self.downlink.on_sack(fields["entries"])
                self._writer.wake()
            else:
                self._accept_command(tc, fields)
        except LinkError as exc:
            self._reject_authentic(tc, exc)

    def _authentic_and_fresh(self, packet: bytes) -> AuthenticTc:
        """The packet if its MAC verifies and its ARSN is fresh (now recorded); LinkError if not."""
        tc = self.codec.authenticate_tc(packet, self._keys)
        context = {"spi": tc.spi, "arsn": tc.arsn, "seq_count": tc.seq_count}
        try:
            if self._keys.is_recovery(tc.spi):
                verdict = None if self._replay.take_challenge(tc.arsn) else "REPLAY"
                if verdict is None:
                    self.telemetry.set("LINK_RECOVERY_CHALLENGE", self._replay.challenge())
            else:
                verdict = self._replay.accept(tc.spi, tc.arsn, self.config.arsn_window)
                if verdict is None:
                    self.telemetry.set("LINK_LAST_ARSN", max(tc.arsn, self.telemetry.get("LINK_LAST_ARSN") or 0))
        except sqlite3.Error as exc:
            raise LinkError("STORE_ERROR", f"anti-replay counter not saved: {exc}", **context) from None
        if verdict == "REPLAY":
            raise LinkError("REPLAY", f"ARSN {tc.arsn} is not fresh for SPI {tc.spi}", **context)
        if verdict == "OUT_OF_WINDOW":
            raise LinkError("OUT_OF_WINDOW", f"ARSN {tc.arsn} is more than {self.config.arsn_window} above "
                            f"the last accepted for SPI {tc.spi}", **context)
        return tc

    def _accept_command(self, tc: AuthenticTc, fields: dict[str, Any]) -> None:
        command, args = self.codec.command_of(tc, fields)
        context = {"opcode": command.opcode}
        if command.recovery != self._keys.is_recovery(tc.spi):
            raise LinkError("KEY_NOT_ALLOWED", f"{command.name} needs {'a recovery' if command.recovery else 'an operations'}"
                            f" key, SPI {tc.spi} is not one", **context)
        if command.hazardous and not fields["confirm_hazardous"]:
            raise LinkError("NOT_CONFIRMED", f"{command.name} is hazardous and the packet does not confirm it", **context)
        if command.name not in self._handlers:
            raise LinkError("NOT_AVAILABLE", f"nothing onboard executes {command.name} now", **context)
        if self._commands.full():  # only this thread puts, so the check holds until the put
            raise LinkError("BUSY", f"{self.config.command_queue_depth} commands already queued", **context)
        self.telemetry.add("CMD_ACCEPTED")
        self._respond(tc, command.opcode, "ACCEPTED", "NONE", None)
        self._commands.put_nowait((command, args, tc))

    def _reject_unverified(self, exc: LinkError) -> None:
        """NACK input that did not prove itself authentic and fresh: unauthenticated, budgeted."""
        self.telemetry.add("CMD_REJECTED")
        if exc.reason in _AUTH_REASONS:
            self.telemetry.add("LINK_AUTH_FAILURES")
        elif exc.reason == "REPLAY":
            self.telemetry.add("LINK_REPLAYS_REJECTED")
        elif exc.reason == "OUT_OF_WINDOW":
            self.telemetry.add("LINK_ARSN_OUT_OF_WINDOW")
        self._rejections.add(exc.reason)
        reason = self.dictionary.enum_value("REASON", exc.reason)
        self._writer.submit("CMD_REJECTION", {"spi": exc.spi, "arsn": exc.arsn, "seq_count": exc.seq_count,
                                              "reason": reason, "detail": _one_line(exc.detail)}, rejection=True)
        self._events.emit("CMD_REJECTED", reason=reason, opcode=None, arsn=exc.arsn)

    def _reject_authentic(self, tc: AuthenticTc, exc: LinkError) -> None:
        """NACK an authentic fresh packet that cannot be executed: an authenticated response."""
        self.telemetry.add("CMD_REJECTED")
        self._respond(tc, exc.opcode, "REJECTED", exc.reason, _one_line(exc.detail))
        self._events.emit("CMD_REJECTED", reason=self.dictionary.enum_value("REASON", exc.reason),
                          opcode=exc.opcode, arsn=tc.arsn)

    def _respond(self, tc: AuthenticTc, opcode: int | None, status: str, reason: str, data: Any) -> None:
        key = self._keys.get(tc.spi)
        assert key is not None  # tc authenticated with it
        self._writer.submit("CMD_RESPONSE", {
            "arsn": tc.arsn, "seq_count": tc.seq_count, "opcode": opcode,
            "status": self.dictionary.enum_value("CMD_STATUS", status),
            "reason": self.dictionary.enum_value("REASON", reason), "data": data,
        }, seal=Seal(tc.spi, tc.arsn, key, tc.mac))

    def _note_contact(self) -> None:
        self._last_contact = time.monotonic()
        with self._contact_lock:
            acquired, self._contact = not self._contact, True
        if acquired:
            self.telemetry.set("LINK_CONTACT", True)
            self._events.emit("LINK_CONTACT_ACQUIRED")
            if self._recording is not None:
                self._recording.contact_acquired()
            self._writer.wake()

    # --- command execution -------------------------------------------------------------------
    def _run_commands(self) -> None:
        while (item := self._commands.get()) is not None:
            command, args, tc = item
            try:
                data = self._handlers[command.name](args, CommandOrigin(tc.spi, tc.arsn))
                msgpack.packb(data, use_bin_type=True)  # fail here, not silently in the writer
            except CommandFailure as exc:
                self._complete_failed(command, tc, exc.reason, _one_line(exc.detail))
            except Exception as exc:  # a handler bug fails its command, not the command thread
                log.exception("%s handler fault", command.name)
                self._complete_failed(command, tc, "EXECUTION_ERROR", _one_line(f"{type(exc).__name__}: {exc}"))
            else:
                self.telemetry.add("CMD_EXECUTED")
                self._respond(tc, command.opcode, "COMPLETED", "NONE", data)
                self._events.emit("CMD_COMPLETED", command=command.name)

    def _complete_failed(self, command: CommandDef, tc: AuthenticTc, reason: str, detail: str) -> None:
        self.telemetry.add("CMD_FAILED")
        self._respond(tc, command.opcode, "FAILED", reason, detail)
        self._events.emit("CMD_FAILED", command=command.name,
                          reason=self.dictionary.enum_value("REASON", reason), detail=detail)

    def _noop(self, args: dict[str, Any], origin: CommandOrigin) -> None:
        self._events.emit("CMD_NOOP_RECEIVED", dictionary_version=self.dictionary.version)

    def _clear_counters(self, args: dict[str, Any], origin: CommandOrigin) -> None:
        self.telemetry.zero(_CLEARABLE)
        self._events.emit("CMD_COUNTERS_CLEARED")

    def _ping(self, args: dict[str, Any], origin: CommandOrigin) -> dict[str, Any]:
        self._events.emit("LINK_PING_ANSWERED", token=args["token"])
        return {"token": args["token"]}

    def _set_hk_period(self, args: dict[str, Any], origin: CommandOrigin) -> None:
        self._hk_period_s = args["period_ms"] / 1000.0
        self._hk_wake.set()
        self._events.emit("LINK_HK_PERIOD_SET", period_ms=args["period_ms"])

    def _set_arsn(self, args: dict[str, Any], origin: CommandOrigin) -> dict[str, Any]:
        spi = args["spi"]
        if self._keys.get(spi) is None or self._keys.is_recovery(spi):
            raise CommandFailure("BAD_ARGUMENT", f"SPI {spi} is not an operations key of this node")
        try:
            previous, new = self._replay.set(spi, args["last_arsn"], args["allow_lower"])
        except sqlite3.Error as exc:
            raise CommandFailure("STORE_ERROR", f"anti-replay counter not saved: {exc}") from None
        self.telemetry.set("LINK_LAST_ARSN", self._replay.highest())
        self._events.emit("LINK_ARSN_SET", spi=spi, previous=previous, last_arsn=new, recovery_spi=origin.spi)
        return {"spi": spi, "previous": previous, "last_arsn": new}

    def _recorder_playback(self, args: dict[str, Any], origin: CommandOrigin) -> dict[str, Any]:
        assert self._recording is not None  # registered only with a recorder
        if args["end"] < args["start"]:
            raise CommandFailure("BAD_ARGUMENT", f"end {args['end']} is before start {args['start']}")
        try:
            return self._recording.playback.request(args["start"], args["end"], args["kinds"])
        except PlaybackBusy as exc:
            raise CommandFailure("BUSY", str(exc)) from None
        except sqlite3.Error as exc:
            raise CommandFailure("STORE_ERROR", f"recorder not readable: {exc}") from None

    def _result_key(self, spi: int | None) -> tuple[int, bytes]:
        """The key that authenticates a job's result: that of the SPI that submitted it, or, for a
        job from before jobs recorded it or whose key has since left the key file, the first
        operations key (the SPI goes down with the result)."""
        key = None if spi is None or self._keys.is_recovery(spi) else self._keys.get(spi)
        if key is not None:
            return spi, key
        first = min(s for s in self._keys.spis if not self._keys.is_recovery(s))
        return first, self._keys.get(first)

    def _sign_legacy_results(self) -> None:
        """Results stored before results carried MACs get one."""
        for result in self.results.pending_results():
            if not result.mac:
                spi, key = self._result_key(None)
                data = self.results.result(result.job_id) or b""
                self.results.sign_result(result.job_id, spi, result_mac(key, result.job_id, data))

    # --- housekeeping ------------------------------------------------------------------------
    def _run_housekeeping(self) -> None:
        while not self._stop.is_set():
            self._publish_housekeeping()
            self._hk_wake.wait(self._hk_period_s)
            self._hk_wake.clear()

    def _publish_housekeeping(self) -> None:
        now = time.monotonic()
        self.telemetry.set("LINK_UPTIME", int(now - self._started))
        self.telemetry.set("LINK_SILENCE_S", self.silence_s(now))
        with self._contact_lock:
            lost = self._contact and not self.link_up()
            if lost:
                self._contact = False
        if lost:
            self.telemetry.set("LINK_CONTACT", False)
            self._events.emit("LINK_CONTACT_LOST", timeout_ms=int(self.config.contact_timeout_s * 1000))
            if self._recording is not None:
                self._recording.contact_lost(time.time() - self.silence_s(now))
        self._summarise_rejections(now)
        for source in self._channel_sources:
            try:
                for name, value in source().items():
                    self.telemetry.set(name, value)
            except Exception:  # one bad sensor must not silence housekeeping
                log.exception("channel source fault")
        snapshot = self.telemetry.snapshot()
        self._writer.submit("HK", {"channels": snapshot})
        if self._recording is not None:
            self._recording.housekeeping(snapshot, now)

    def _summarise_rejections(self, now: float) -> None:
        period = self.config.rejection_summary_period_s
        summary = self._rejections.take_if_due(now, period, self.telemetry.get("LINK_REJECTIONS_SUPPRESSED") or 0)
        if summary is not None:
            count, suppressed, reason = summary
            self._events.emit("LINK_REJECTIONS_SUMMARY", count=min(count, 0xFFFFFFFF), period_s=int(period),
                              suppressed=suppressed, reason=self.dictionary.enum_value("REASON", reason))
