"""Attacks on the link at the real byte rate, through the HIL link relay (hil link) at 115200 baud:
a keyless flood and a replay flood at line rate, and an on-path spoofer racing each command with a
forged copy. The figures are printed (run with -s) for the record."""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cobs import cobs

from flight.link.codec import PacketCodec
from flight.link.dictionary import load_dictionary
from flight.link.framing import frame
from flight.link.onboard_time import CucTime
from flight.link.service import LinkConfig
from flight.link.spacepacket import append_crc, build_packet
from ground.cli import main as ground_main
from ground.client import GroundClient
from hil.link import LinkRelay
from tests.link.conftest import FlightUnderTest
from tests.link.helpers import hk_value

D = load_dictionary()
CODEC = PacketCodec(D)
BAUD = 115200
LINE_RATE = BAUD / 10
# Timings as flown: a flood must not be helped by a short housekeeping period.
FLOWN = LinkConfig(hk_period_s=1.0, contact_timeout_s=10.0, rto_s=3.0)
FLOOD_S = 6.0


class Rig:
    def __init__(self, tmp_path: Path, keyfile: Path, **relay_hooks):
        self.relay = LinkRelay(baud=BAUD, **relay_hooks)
        self.flight = FlightUnderTest(self.relay.flight_path, tmp_path / "onboard.sqlite", keyfile, FLOWN)
        self.ground = GroundClient(self.relay.ground_path, keys=keyfile, archive=tmp_path / "ground.sqlite").connect()
        self.ground.await_telemetry("LINK_CONTACT", lambda v: v is True, timeout=20)

    def close(self) -> None:
        self.ground.close()
        self.flight.stop()
        self.relay.close()


@pytest.fixture
def rig(tmp_path: Path, keyfile: Path) -> Iterator[Rig]:
    rig = Rig(tmp_path, keyfile)
    yield rig
    rig.close()


def keyless_packet() -> bytes:
    """The shortest TC that reaches the MAC check: security header, a one-octet body, a zero MAC."""
    return build_packet(True, D.packet("COMMAND").apid, 0, CucTime.now(), (1).to_bytes(2, "big") + bytes(8) + b"\x90"
                        + bytes(16))


class Flood:
    """An attacker thread writing frames into the uplink at line rate, sharing it with the ground."""

    def __init__(self, relay: LinkRelay, hostile: bytes):
        self._source = relay.uplink.add_source()
        self._burst = hostile * max(1, 512 // len(hostile))
        self._stop = threading.Event()
        self.offered = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set() and self._source.offer(self._burst, timeout=0.5):
            self.offered += len(self._burst)

    def __enter__(self) -> Flood:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@pytest.mark.parametrize("attack", ["keyless", "replay"])
def test_line_rate_flood_costs_the_downlink_little_and_commands_still_complete(rig: Rig, attack: str):
    ground, relay = rig.ground, rig.relay
    if attack == "keyless":
        hostile = frame(keyless_packet())
    else:  # a sniffed authentic command, replayed at line rate
        sniffed = ground.encode_tc("COMMAND", {"opcode": D.command_by_name["CMD_NOOP"].opcode, "args": []})
        ground.send_packet(sniffed)
        ground.await_event("CMD_NOOP_RECEIVED")
        hostile = frame(sniffed)
    up0, down0, t0 = relay.uplink.bytes_passed, relay.downlink.bytes_passed, time.monotonic()
    with Flood(relay, hostile):
        time.sleep(FLOOD_S / 3)  # the flood is in full swing
        started = time.monotonic()
        response = ground.send_and_await_completion("LINK_PING", token=77, timeout=5.0)
        ping_s = time.monotonic() - started
        time.sleep(max(0.0, t0 + FLOOD_S - time.monotonic()))
        up, down, elapsed = relay.uplink.bytes_passed - up0, relay.downlink.bytes_passed - down0, time.monotonic() - t0
    assert response.data == {"token": 77}
    ratio = down / up
    print(f"\n{attack} flood: uplink {up / elapsed:.0f} B/s ({up / elapsed / LINE_RATE:.1%} of the line), downlink "
          f"{down / elapsed:.0f} B/s = {ratio:.1%} of the flood; legitimate LINK_PING completed in {ping_s:.2f} s")
    assert up / elapsed > 0.9 * LINE_RATE  # the attacker really held the line
    assert ratio < 0.10
    suppressed = hk_value(ground, "LINK_REJECTIONS_SUPPRESSED", lambda v: v > 0)
    summary = ground.await_event("LINK_REJECTIONS_SUMMARY", timeout=15)
    assert summary.args["count"] > 100 and summary.args["suppressed"] > 0 and suppressed > 0
    reason = "BAD_MAC" if attack == "keyless" else "REPLAY"
    assert reason in summary.message


def test_spoofed_rejections_do_not_make_the_ground_give_up(tmp_path: Path, keyfile: Path, capsys):
    """An on-path attacker sends ahead of every command a copy with the same ARSN and a zeroed MAC;
    the node rejects each copy (BAD_MAC) and executes the original. The ground must report each
    command as completed, and the node must have executed each exactly once."""
    spoofed: list[int] = []

    def spoof(chunk: bytes) -> list[bytes]:
        packet = cobs.decode(chunk[:-1])
        if len(packet) < 40 or not packet[0] & 0x10:  # an idle delimiter, or not a TC
            return [chunk]
        forged = append_crc(packet[:-18] + bytes(16))
        spoofed.append(int.from_bytes(packet[14:22], "big"))
        return [frame(forged), chunk]

    rig = Rig(tmp_path, keyfile, uplink_tamper=spoof)
    try:
        tokens = list(range(100, 105))
        for token in tokens:
            assert rig.ground.send_and_await_completion("LINK_PING", token=token, timeout=10).data == {"token": token}
        answered = [rig.ground.await_event("LINK_PING_ANSWERED", lambda e, t=t: e.args["token"] == t).args["token"]
                    for t in tokens]
        assert answered == tokens
        assert rig.flight.service.telemetry.get("LINK_AUTH_FAILURES") >= len(tokens)
        rejected = [item for item in list(rig.ground._history) if item.packet.name == "CMD_REJECTION"]
        assert rejected and all(D.enums["REASON"].name_of(r.packet.fields["reason"]) == "BAD_MAC" for r in rejected)
        executed = rig.flight.service.telemetry.get("CMD_EXECUTED")
    finally:
        rig.ground.close()
    # The same through the command line an operator uses: exit 0, COMPLETED.
    archive = tmp_path / "ground.sqlite"
    code = ground_main(["send", "LINK_PING", "token=7", "--port", rig.relay.ground_path, "--keys", str(keyfile),
                        "--archive", str(archive)])
    out = capsys.readouterr().out
    rig.flight.stop()
    rig.relay.close()
    assert code == 0 and "COMPLETED" in out
    assert executed == len(tokens)  # pings only: none twice, none lost
    print(f"\nspoofing: {len(spoofed)} commands raced by a forged copy; {len(tokens) + 1} reported COMPLETED, "
          f"each executed once ({len(rejected)} unauthenticated BAD_MAC rejections reached the ground)")
