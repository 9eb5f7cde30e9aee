"""The ground client library: what scripts and integration tests use to fly the spacecraft.

In the spirit of F Prime's integration-test API:

    with GroundClient("/dev/ttyUSB0", keys="link-keys.json", archive="ground.sqlite") as gc:
        gc.send_and_await_completion("LINK_PING", token=7)
        gc.await_telemetry("LINK_CONTACT", lambda v: v is True, timeout=10)
        gc.await_event("CMD_NOOP_RECEIVED", timeout=5)
        job = gc.submit_job("Why run inference in orbit?", max_tokens=64, stream=True,
                            deadline=gc.onboard_time() + 600)
        result = decode_result(gc.await_result(job, timeout=60))  # flight.link.job_result

Everything received is kept in a history that the await_* calls search (from the last
clear_histories(), or from a given index) until a match or the timeout. Result segments are
deduplicated, reassembled, authenticated and archived; a SACK goes up every sack_interval_s,
which doubles as the keep-alive that tells the flight the ground is listening, and a last one
on close acknowledges everything archived.

Events and housekeeping snapshots played back from the onboard recorder (REC_PLAYBACK) are
archived at their original onboard time, marked as played back, once per recorder seq;
await_event matches live events only, await_played_back and await_played_back_event the
played-back records.

What is believed of the node: a CMD_RESPONSE only if its MAC verifies with the key of the
command this client sent with that ARSN (the MAC covers that command's own MAC too), so an
on-path forger can neither complete nor fail a command. A CMD_REJECTION is unauthenticated:
anyone can send one for any ARSN, so it is reported only if no authenticated response arrives
before the timeout, and then marked as such.

ARSNs come from the archive's persisted counter per SPI, never from a clock or from telemetry.

The onboard clock, as the ground knows it (onboard_time): the CUC time of the latest TM packet
received plus the time elapsed here since it arrived; the local UTC clock until a packet has
arrived. The downlink's own delay is not counted, and TM times are not authenticated (except a
CMD_RESPONSE's), so it is an estimate for scheduling (JOB_SUBMIT deadlines), not a time source.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

import serial

from flight.link.codec import LinkError, PacketCodec, TmPacket
from flight.link.dictionary import Dictionary, ValueCheckError, load_dictionary
from flight.link.framing import Deframer, frame
from flight.link.keys import KeyRing
from flight.link.serial_port import SerialPort
from flight.link.sdls import MAC_OCTETS
from flight.link.spacepacket import CRC_OCTETS, SEQ_COUNT_MODULO, SequenceCounters
from ground.archive import GroundArchive
from ground.result_assembly import ResultAssembler

log = logging.getLogger(__name__)
T = TypeVar("T")
HISTORY_LIMIT = 100_000
# Headers, security header, MAC, CRC and the body's outer array, with room to spare.
SACK_PACKET_OVERHEAD = 64
SENT_MEMORY = 4096  # commands whose responses this client can still authenticate


@dataclass(frozen=True)
class Received:
    index: int
    received: float  # ground Unix time
    packet: TmPacket


@dataclass(frozen=True)
class ChannelReading:
    name: str
    value: Any
    onboard_time: float
    limit_state: str  # nominal, yellow or red


@dataclass(frozen=True)
class EventRecord:
    name: str
    severity: str
    message: str
    args: dict[str, Any]
    onboard_time: float


@dataclass(frozen=True)
class PlaybackRecord:
    """A record of the onboard recorder, played back: an event or a housekeeping snapshot."""

    seq: int
    kind: str  # a REC_KIND name: EVENT or HK
    onboard_time: float  # of the original
    in_contact: bool  # the node was in contact when it recorded it (it was sent live too)
    event: EventRecord | None  # for an EVENT
    channels: dict[str, Any] | None  # for an HK: channel name -> value


@dataclass(frozen=True)
class CommandHandle:
    name: str
    opcode: int
    arsn: int
    sent_index: int  # history index when it was sent: its responses come after


@dataclass(frozen=True)
class CommandResponse:
    status: str  # ACCEPTED, REJECTED, COMPLETED, FAILED
    reason: str
    data: Any
    arsn: int | None
    opcode: int | None
    authenticated: bool = True  # False: an unauthenticated CMD_REJECTION, not tied to our packet


class CommandError(Exception):
    """A command was rejected or failed; .response says how."""

    def __init__(self, name: str, response: CommandResponse):
        text = f"{name} {response.status}: {response.reason} {response.data or ''}".rstrip()
        if not response.authenticated:
            text = (f"{name}: no authenticated response; an unauthenticated rejection ({response.reason}: "
                    f"{response.data}) cannot be tied to our packet, so the command may still have run")
            if response.reason in ("REPLAY", "OUT_OF_WINDOW"):
                text += "; if every command meets this, the anti-replay counters are out of step: see `ground recover`"
        super().__init__(text)
        self.response = response


class HazardousCommandError(ValueError):
    """A hazardous command was sent without confirmation."""


class GroundClient:
    def __init__(self, port: str, *, keys: KeyRing | str | Path, archive: GroundArchive | str | Path,
                 baud: int = 115200, spi: int | None = None, sack_interval_s: float | None = 1.0,
                 dictionary: Dictionary | None = None):
        """sack_interval_s None: send no acknowledgements (a session that only commands, such as
        a recovery with a recovery key, which may send nothing else)."""
        self.dictionary = dictionary or load_dictionary()
        self.codec = PacketCodec(self.dictionary)
        self.keys = keys if isinstance(keys, KeyRing) else KeyRing.load(keys)
        # Default: the first operations key; a recovery key only when the file holds nothing else.
        operations = [s for s in self.keys.spis if not self.keys.is_recovery(s)]
        self.spi = (operations or self.keys.spis)[0] if spi is None else spi
        if self.keys.get(self.spi) is None:
            raise ValueError(f"no key for SPI {self.spi}")
        # Opened by connect(), after the port: a port that cannot be opened leaves no new file.
        self._archive_source = archive
        self.archive: GroundArchive = None  # type: ignore[assignment]
        self.assembler: ResultAssembler = None  # type: ignore[assignment]
        self.port = SerialPort(port, baud)
        self.deframer = Deframer(self.dictionary.max_packet_octets)
        self.decode_errors: Counter[str] = Counter()
        self.sequence_gaps = 0
        self._last_seq: dict[int, int] = {}
        self._sequence = SequenceCounters()
        self._send_lock = threading.Lock()
        self._sack_interval_s = sack_interval_s
        self._history: deque[Received] = deque(maxlen=HISTORY_LIMIT)
        self._next_index = 0
        self._search_floor = 0
        self._completed: set[int] = set()
        self._onboard_clock: tuple[float, float] | None = None  # (latest TM onboard time, monotonic on arrival)
        self._tokens: dict[int, dict[tuple[int, str], int]] = {}  # job -> (first_index, text) -> arrival
        self._sent: OrderedDict[tuple[int, int], bytes] = OrderedDict()  # (spi, arsn) -> the command's MAC
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._sack_thread = threading.Thread(target=self._run_sacks, name="ground sack", daemon=True)

    # --- lifecycle -----------------------------------------------------------------------------
    def connect(self) -> GroundClient:
        """Open the port (raises serial.SerialException), then the archive, then start receiving."""
        self.port.open()
        try:
            self.open_archive()
        except Exception:
            self.port.close()
            raise
        self.port.start(self._on_bytes)
        if self._sack_interval_s is not None:
            self._sack_thread.start()
        return self

    def open_archive(self) -> None:
        """Open the archive and the result assembler on it (connect() does, after the port)."""
        source = self._archive_source
        self.archive = source if isinstance(source, GroundArchive) else GroundArchive(source)
        self.assembler = ResultAssembler(self.archive, self.keys, self.dictionary.segment_octets,
                                         self.dictionary.max_packet_octets - SACK_PACKET_OVERHEAD)

    def close(self) -> None:
        """Acknowledge everything archived (so the flight need not send it again), then close."""
        self._stop.set()
        if self._sack_thread.is_alive():
            self._sack_thread.join(timeout=2.0)
            if self.assembler.segments_received:
                self._send_sack()
        self.port.close()
        if self.archive is not None:
            self.archive.close()

    def __enter__(self) -> GroundClient:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- commands ------------------------------------------------------------------------------
    def send_command(self, name: str, *, confirm_hazardous: bool = False, arsn: int | None = None,
                     **args: Any) -> CommandHandle:
        """Validate and send a command by name. Raises KeyError (unknown name), ValueError (bad
        arguments), HazardousCommandError (a hazardous command without confirm_hazardous=True).
        arsn: only for a recovery key, whose ARSN is the node's challenge."""
        command = self.dictionary.command_by_name[name]
        if command.hazardous and not confirm_hazardous:
            raise HazardousCommandError(f"{name} is hazardous and needs explicit confirmation")
        values = command.order_args(args)
        fields = {"opcode": command.opcode, "args": values, "confirm_hazardous": confirm_hazardous}
        arsn, index = self._send_tc("COMMAND", fields, arsn)
        return CommandHandle(name, command.opcode, arsn, index)

    def await_response(self, handle: CommandHandle, statuses: tuple[str, ...] = ("COMPLETED", "FAILED", "REJECTED"),
                       timeout: float = 10.0) -> CommandResponse:
        """The first authenticated response to handle with a status in statuses.

        An unauthenticated CMD_REJECTION naming our ARSN proves nothing: an on-path attacker
        can send one ahead of our packet, and a radio that duplicates our frame makes the node
        NACK the copy as a REPLAY while it executes the original. So one is returned (with
        authenticated=False) only if nothing authenticated in statuses arrives before the timeout.
        """
        unverified: list[CommandResponse] = []

        def match(item: Received) -> CommandResponse | None:
            fields = item.packet.fields
            if item.packet.name == "CMD_REJECTION" and fields["arsn"] == handle.arsn:
                unverified.append(self._rejection(item.packet))
            elif item.packet.name == "CMD_RESPONSE" and fields["arsn"] == handle.arsn:
                response = self._response(item.packet)
                if response.status in statuses:
                    return response
            return None

        try:
            return self._wait(match, timeout, handle.sent_index, f"{handle.name} response in {statuses}")
        except TimeoutError:
            if unverified and "REJECTED" in statuses:
                return unverified[0]
            raise

    def send_and_await_completion(self, name: str, *, timeout: float = 10.0, confirm_hazardous: bool = False,
                                  **args: Any) -> CommandResponse:
        """Send, then wait for the outcome; raises CommandError unless it COMPLETED."""
        handle = self.send_command(name, confirm_hazardous=confirm_hazardous, **args)
        response = self.await_response(handle, timeout=timeout)
        if response.status != "COMPLETED":
            raise CommandError(name, response)
        return response

    def send_packet(self, packet: bytes) -> None:
        """Frame and send an already encoded packet, as is (tests use it to send bad ones)."""
        with self._send_lock:
            self.port.write(frame(packet))

    def send_bytes(self, data: bytes) -> None:
        """Write raw bytes to the line, unframed."""
        with self._send_lock:
            self.port.write(data)

    def encode_tc(self, kind: str, fields: dict[str, Any], *, arsn: int | None = None, key: bytes | None = None,
                  spi: int | None = None) -> bytes:
        """An authenticated TC packet with this client's next ARSN and sequence count (or the given
        ones); responses to it will authenticate."""
        spi = self.spi if spi is None else spi
        key = self.keys.get(spi) if key is None else key
        if key is None:
            raise ValueError(f"no key for SPI {spi}")
        apid = self.dictionary.packet(kind).apid
        arsn = self.archive.next_arsn(spi) if arsn is None else arsn
        packet = self.codec.encode_tc(kind, fields, self._sequence.take(apid), spi=spi, arsn=arsn, key=key)
        with self._cond:
            self._sent[(spi, arsn)] = packet[-CRC_OCTETS - MAC_OCTETS:-CRC_OCTETS]
            if len(self._sent) > SENT_MEMORY:
                self._sent.popitem(last=False)
        return packet

    def _send_tc(self, kind: str, fields: dict[str, Any], arsn: int | None = None) -> tuple[int, int]:
        with self._send_lock:
            arsn = self.archive.next_arsn(self.spi) if arsn is None else arsn
            packet = self.encode_tc(kind, fields, arsn=arsn)
            with self._cond:
                index = self._next_index
            self.port.write(frame(packet))
        return arsn, index

    def _response(self, packet: TmPacket) -> CommandResponse:
        f = self.dictionary.enums
        return CommandResponse(f["CMD_STATUS"].name_of(packet.fields["status"]), f["REASON"].name_of(packet.fields["reason"]),
                               packet.fields["data"], packet.fields["arsn"], packet.fields["opcode"])

    def _rejection(self, packet: TmPacket) -> CommandResponse:
        return CommandResponse("REJECTED", self.dictionary.enums["REASON"].name_of(packet.fields["reason"]),
                               packet.fields["detail"], packet.fields["arsn"], None, authenticated=False)

    def _authentic_response(self, packet: TmPacket) -> bool:
        """True if a CMD_RESPONSE answers a command this client sent, under that command's key."""
        security = packet.security
        with self._cond:
            command_mac = self._sent.get((security.spi, security.arsn)) if security else None
        key = self.keys.get(security.spi) if security else None
        return (command_mac is not None and key is not None and security.arsn == packet.fields["arsn"]
                and self.codec.verify_tm(packet, key, command_mac))

    def recover_arsn(self, target_spi: int, *, last_arsn: int | None = None, allow_lower: bool = False,
                     timeout: float = 10.0) -> dict[str, Any]:
        """Resynchronise the anti-replay counter of operations key target_spi, with this client's
        recovery key (see LINK_SET_ARSN). The node's counter is set to last_arsn (default: the
        last ARSN this archive used for target_spi), upwards only unless allow_lower; the archive
        then continues from the value the node reports in its authenticated completion."""
        if not self.keys.is_recovery(self.spi):
            raise ValueError(f"SPI {self.spi} is not a recovery key; recovery needs the offline recovery key file")
        since = self.history_index()
        challenge = self.await_telemetry("LINK_RECOVERY_CHALLENGE", timeout=timeout, since=since).value
        value = self.archive.last_arsn(target_spi) if last_arsn is None else last_arsn
        handle = self.send_command("LINK_SET_ARSN", confirm_hazardous=True, arsn=challenge, spi=target_spi,
                                   last_arsn=value, allow_lower=allow_lower)
        response = self.await_response(handle, timeout=timeout)
        if response.status != "COMPLETED":
            raise CommandError("LINK_SET_ARSN", response)
        self.archive.set_arsn(target_spi, response.data["last_arsn"])
        return response.data

    # --- telemetry and events ------------------------------------------------------------------
    def history_index(self) -> int:
        """Index the next received packet will get; pass it as `since` to search only what follows."""
        with self._cond:
            return self._next_index

    def received_since(self, index: int) -> tuple[list[Received], int]:
        """The packets received from history index on that the history still holds, in order, and
        the index to continue from (a recorder of everything, such as the HIL rig's, polls this)."""
        with self._cond:
            oldest = self._next_index - len(self._history)
            return list(self._history)[max(index, oldest) - oldest:], self._next_index

    def clear_histories(self) -> None:
        """Make later await_* calls without `since` ignore everything received so far."""
        with self._cond:
            self._search_floor = self._next_index

    def await_packet(self, predicate: Callable[[TmPacket], bool], timeout: float = 10.0,
                     since: int | None = None) -> Received:
        return self._wait(lambda item: item if predicate(item.packet) else None, timeout, since, "matching packet")

    def await_telemetry(self, channel: str, predicate: Callable[[Any], bool] | None = None, timeout: float = 10.0,
                        since: int | None = None) -> ChannelReading:
        definition = self.dictionary.channel_by_name[channel]

        def match(item: Received) -> ChannelReading | None:
            if item.packet.name != "HK" or definition.id not in item.packet.fields["channels"]:
                return None
            value = item.packet.fields["channels"][definition.id]
            if predicate is not None and not predicate(value):
                return None
            return ChannelReading(channel, value, item.packet.time.to_unix(), definition.limit_state(value))

        return self._wait(match, timeout, since, f"telemetry {channel}")

    def latest_housekeeping(self) -> dict[str, Any]:
        """The channels of the latest HK packet received, by name ({} before the first)."""
        with self._cond:
            for item in reversed(self._history):
                if item.packet.name == "HK":
                    by_id = self.dictionary.channel_by_id
                    return {by_id[cid].name: value for cid, value in item.packet.fields["channels"].items()
                            if cid in by_id}
        return {}

    def await_event(self, name: str, predicate: Callable[[EventRecord], bool] | None = None, timeout: float = 10.0,
                    since: int | None = None) -> EventRecord:
        definition = self.dictionary.event_by_name[name]

        def match(item: Received) -> EventRecord | None:
            if item.packet.name != "EVENT" or item.packet.fields["event_id"] != definition.id:
                return None
            record = self.event_record(item.packet)
            return record if predicate is None or predicate(record) else None

        return self._wait(match, timeout, since, f"event {name}")

    def event_record(self, packet: TmPacket) -> EventRecord:
        return self._event(packet.fields, packet.time.to_unix())

    def _event(self, fields: dict[str, Any], onboard_time: float) -> EventRecord:
        event = self.dictionary.event_by_id[fields["event_id"]]
        args = dict(zip((a.name for a in event.args), fields["args"]))
        return EventRecord(event.name, event.severity, self.dictionary.format_event(event, fields["args"]), args,
                           onboard_time)

    def playback_records(self, packet: TmPacket) -> list[PlaybackRecord]:
        """The records of a REC_PLAYBACK packet (checked by the decoder already)."""
        out = []
        for seq, onboard_time, kind, in_contact, body in packet.fields["records"]:
            packet_kind, fields = self.codec.decode_record_body(kind, body)
            if packet_kind.name == "EVENT":
                out.append(PlaybackRecord(seq, "EVENT", onboard_time, in_contact, self._event(fields, onboard_time), None))
            else:
                by_id = self.dictionary.channel_by_id
                channels = {by_id[cid].name: value for cid, value in fields["channels"].items()}
                out.append(PlaybackRecord(seq, "HK", onboard_time, in_contact, None, channels))
        return out

    def await_played_back(self, predicate: Callable[[PlaybackRecord], bool] | None = None, timeout: float = 10.0,
                          since: int | None = None) -> PlaybackRecord:
        """The first record played back from the onboard recorder that matches."""
        def match(item: Received) -> PlaybackRecord | None:
            if item.packet.name != "REC_PLAYBACK":
                return None
            return next((r for r in self.playback_records(item.packet) if predicate is None or predicate(r)), None)

        return self._wait(match, timeout, since, "played-back record")

    def await_played_back_event(self, name: str, predicate: Callable[[EventRecord], bool] | None = None,
                                timeout: float = 10.0, since: int | None = None) -> PlaybackRecord:
        """The first played-back event of this name that matches; its event's onboard_time is the original's."""
        definition = self.dictionary.event_by_name[name]
        return self.await_played_back(lambda r: r.event is not None and r.event.name == definition.name
                                      and (predicate is None or predicate(r.event)), timeout, since)

    def _wait(self, match: Callable[[Received], T | None], timeout: float, since: int | None, what: str) -> T:
        deadline = time.monotonic() + timeout
        with self._cond:
            index = self._search_floor if since is None else since
            while True:
                oldest = self._next_index - len(self._history)
                index = max(index, oldest)
                while index < self._next_index:
                    found = match(self._history[index - oldest])
                    index += 1
                    if found is not None:
                        return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no {what} within {timeout} s")
                self._cond.wait(remaining)

    # --- jobs ----------------------------------------------------------------------------------
    def submit_job(self, prompt: str, max_tokens: int, *, job_id: int | None = None, timeout: float = 10.0,
                   attempts: int = 3, chat: bool = False, stream: bool = False, priority: int = 0,
                   deadline: float = 0.0, temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
                   seed: int = 0, token_ids: bool = False) -> int:
        """Submit a job and wait until the flight has stored it; returns its job id (allocated
        from the archive unless given). The options are JOB_SUBMIT's optional arguments (ICD
        section 10); deadline is onboard time in s since 1970 (onboard_time() + a delay), 0 for
        none. Only options away from their defaults go on the wire. Everything is checked
        (ValueCheckError) before anything is recorded or sent; the job and its options are
        recorded in the archive before the first attempt.

        Resubmission with the same id is idempotent onboard, so a lost response (or a command the
        radio reordered behind a newer ARSN, NACKed as REPLAY) is simply retried. A FAILED
        completion (CONTEXT_OVERFLOW, DUPLICATE_JOB, ...) raises CommandError at once."""
        command = self.dictionary.command_by_name["JOB_SUBMIT"]
        given = {"chat": chat, "stream": stream, "priority": priority, "deadline": deadline,
                 "temperature": temperature, "top_k": top_k, "top_p": top_p, "seed": seed, "token_ids": token_ids}
        defaults = {arg.name: arg.default for arg in command.args if arg.optional}
        options = {name: value for name, value in given.items() if value != defaults[name]}
        args = {"max_tokens": max_tokens, "prompt": prompt, **options}
        command.order_args({"job_id": 1 if job_id is None else job_id, **args})  # checked before an id is used
        job_id = self.archive.next_job_id() if job_id is None else job_id
        self.archive.record_job(job_id, prompt, max_tokens, options)
        for attempt in range(1, attempts + 1):
            try:
                self.send_and_await_completion("JOB_SUBMIT", timeout=timeout, job_id=job_id, **args)
                return job_id
            except TimeoutError:
                if attempt == attempts:
                    raise
            except CommandError as exc:
                # Only an unauthenticated rejection is worth another try: it may be a forgery, or
                # the node's answer to a copy of our packet that the uplink reordered.
                if exc.response.authenticated or attempt == attempts:
                    raise
            log.warning("JOB_SUBMIT %d: no completion (attempt %d of %d), resubmitting", job_id, attempt, attempts)
        raise ValueError("attempts must be at least 1")

    def cancel_job(self, job_id: int, *, timeout: float = 10.0) -> CommandResponse:
        """Send JOB_CANCEL and wait for its completion; CommandError (reason UNKNOWN_JOB,
        JOB_ENDED, ...) unless it COMPLETED. The cancelled job's result still comes, as any other."""
        return self.send_and_await_completion("JOB_CANCEL", timeout=timeout, job_id=job_id)

    def await_result(self, job_id: int, timeout: float = 60.0, *, on_tokens: Callable[[str], object] | None = None,
                     since: int | None = None) -> bytes:
        """The job's archived result octets (as the flight sent them: flight.link.job_result
        decodes them), waiting up to timeout for them to arrive.

        on_tokens: called (outside every lock, in this thread) with the text of each new JOB_TOKENS
        chunk of the job received from history index since (default: now) until the result is
        archived, in arrival order; duplicates the radio made are passed once. Best-effort, as
        the stream is: chunks lost or reordered on the way stay lost or out of order."""
        deadline = time.monotonic() + timeout
        index = self.history_index() if since is None else since
        seen: set[tuple[int, str]] = set()
        while True:
            stored = self.archive.result(job_id)
            pieces: list[str] = []
            with self._cond:
                if on_tokens is not None:
                    index = self._new_token_chunks(job_id, index, seen, pieces)
                if stored is None and not pieces and job_id not in self._completed:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise TimeoutError(f"no result for job {job_id} within {timeout} s")
                    self._cond.wait(remaining)
                    continue
            for text in pieces:
                on_tokens(text)  # type: ignore[misc]
            if stored is not None and not pieces:
                return stored

    def _new_token_chunks(self, job_id: int, index: int, seen: set[tuple[int, str]], out: list[str]) -> int:
        """Append to out the text of JOB_TOKENS chunks of job_id from history index on that are
        not in seen; return the index to continue from. Called with self._cond held."""
        oldest = self._next_index - len(self._history)
        for position in range(max(index, oldest) - oldest, len(self._history)):
            item = self._history[position]
            fields = item.packet.fields
            if item.packet.name == "JOB_TOKENS" and fields["job_id"] == job_id:
                key = (fields["first_index"], fields["text"])
                if key not in seen:
                    seen.add(key)
                    out.append(fields["text"])
        return self._next_index

    def results(self) -> dict[int, bytes]:
        return self.archive.results()

    def onboard_time(self, wait: float = 0.0) -> float:
        """The node's clock now (s since 1970 UTC) as far as the ground knows it: the onboard
        (CUC) time of the latest TM packet received plus the time elapsed since it arrived,
        waiting up to `wait` s for a first packet; the local UTC clock if none has arrived.
        See onboard_clock_known."""
        deadline = time.monotonic() + wait
        with self._cond:
            while self._onboard_clock is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return time.time()
                self._cond.wait(remaining)
            onboard, arrived = self._onboard_clock
        return onboard + (time.monotonic() - arrived)

    @property
    def onboard_clock_known(self) -> bool:
        """True once a TM packet has told the onboard time (onboard_time is then not the local clock)."""
        with self._cond:
            return self._onboard_clock is not None

    def streamed_text(self, job_id: int) -> str:
        """The token stream received so far for a job (best-effort; gaps where chunks were lost).
        Pieces of one long token share a first_index and are joined in arrival order."""
        with self._cond:
            chunks = self._tokens.get(job_id, {})
            return "".join(text for (_, text) in sorted(chunks, key=lambda chunk: (chunk[0], chunks[chunk])))

    # --- receive path --------------------------------------------------------------------------
    def _on_bytes(self, data: bytes) -> None:
        try:
            for raw in self.deframer.feed(data):
                try:
                    packet = self.codec.decode_tm(raw)
                except LinkError as exc:
                    self.decode_errors[exc.reason] += 1
                    log.warning("downlink packet rejected: %s", exc)
                    continue
                if packet.name == "CMD_RESPONSE" and not self._authentic_response(packet):
                    # forged, or answering a command this client did not send: either way unprovable
                    self.decode_errors["UNAUTHENTIC_RESPONSE"] += 1
                    log.warning("CMD_RESPONSE for ARSN %s does not authenticate; ignored", packet.fields["arsn"])
                    continue
                self._take(packet)
        except Exception:  # a bug here must cost one packet, not the receive thread
            log.exception("downlink handling fault")

    def _take(self, packet: TmPacket) -> None:
        apid = packet.kind.apid
        last = self._last_seq.get(apid)
        if last is not None and packet.seq_count != (last + 1) % SEQ_COUNT_MODULO:
            self.sequence_gaps += 1
        self._last_seq[apid] = packet.seq_count
        completed = False
        if packet.name == "JOB_RESULT_SEGMENT":
            completed = self.assembler.on_segment(packet.fields)
        elif packet.name == "EVENT":
            record = self.event_record(packet)
            self.archive.log_event(record.onboard_time, record.name, record.severity, record.message)
        elif packet.name == "REC_PLAYBACK":
            records = self.playback_records(packet)
            self.archive.log_playback(
                [(r.seq, r.onboard_time, r.event.name, r.event.severity, r.event.message) for r in records if r.event],
                [(r.seq, r.onboard_time, r.channels) for r in records if r.channels is not None])
        with self._cond:
            if completed:
                self._completed.add(packet.fields["job_id"])
            if packet.name == "JOB_TOKENS":
                chunks = self._tokens.setdefault(packet.fields["job_id"], {})
                chunks.setdefault((packet.fields["first_index"], packet.fields["text"]), self._next_index)
            self._onboard_clock = (packet.time.to_unix(), time.monotonic())
            self._history.append(Received(self._next_index, time.time(), packet))
            self._next_index += 1
            self._cond.notify_all()

    def _run_sacks(self) -> None:
        while not self._stop.wait(self._sack_interval_s):
            self._send_sack()

    def _send_sack(self) -> None:
        try:
            self._send_tc("DL_SACK", {"entries": self.assembler.sack_entries()})
        except (serial.SerialException, OSError, ValueError, ValueCheckError) as exc:
            log.warning("SACK not sent: %s", exc)
