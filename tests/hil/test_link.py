"""LinkRelay: paced at baud/10 bytes per second each way, back-pressure instead of loss, and the
in-process hooks (tamper, extra sources) that never split a frame."""
from __future__ import annotations

import itertools
import os
import random
import threading
import time

import pytest

from hil.link import MAX_BURST_S, QUEUE_BOUND, FrameSource, LinkRelay, OpenError, open_pty
from tests.hil.helpers import QUIET_S, Receiver, Sender, line

TOLERANCE = 0.02  # the bound on measured against configured rate


def assert_never_early(receiver: Receiver, sender: Sender, rate: float) -> None:
    """No byte came before its slot on a line that started when the sender began, less the idle
    allowance; a late reader only makes this easier to meet."""
    for at, received in receiver.arrivals:
        assert received <= (at - sender.started + MAX_BURST_S) * rate + 1


def pty_buffer_bytes() -> int:
    """How much a pty takes from its slave's writer before it blocks, with nobody reading."""
    master, slave, _ = open_pty()
    try:
        os.set_blocking(slave, False)
        taken = 0
        while True:
            try:
                taken += os.write(slave, bytes(1024))
            except BlockingIOError:
                return taken
    finally:
        os.close(master)
        os.close(slave)


def run_both_ways(relay: LinkRelay, uplink: bytes, downlink: bytes) -> tuple[Sender, Receiver, Sender, Receiver]:
    with line(relay.flight_path) as flight, line(relay.ground_path) as ground:
        up_rx, down_rx = Receiver(flight, len(uplink)), Receiver(ground, len(downlink))
        up_tx, down_tx = Sender(ground, uplink), Sender(flight, downlink)
        for thread in (up_rx, down_rx, up_tx, down_tx):
            thread.start()
        for thread in (up_tx, down_tx, up_rx, down_rx):
            thread.join(timeout=30)
    return up_tx, up_rx, down_tx, down_rx


def test_full_duplex_at_115200_is_paced_within_2_percent_and_holds_writers_back() -> None:
    rate, seconds = 11520, 4
    rng = random.Random(1)
    uplink, downlink = rng.randbytes(rate * seconds), rng.randbytes(rate * seconds)
    with LinkRelay(baud=115200) as relay:
        up_tx, up_rx, down_tx, down_rx = run_both_ways(relay, uplink, downlink)
    assert up_rx.data == uplink and down_rx.data == downlink  # all of it, in order
    counters = [(d.bytes_passed, d.bytes_dropped) for d in (relay.uplink, relay.downlink)]  # final once closed
    assert counters == [(len(uplink), 0), (len(downlink), 0)]
    # Only what the relay's queue and the pty's own buffer hold can be written ahead of the line.
    ahead = QUEUE_BOUND + pty_buffer_bytes() + 2048
    for sender, receiver in ((up_tx, up_rx), (down_tx, down_rx)):
        print(f"measured {receiver.rate():.1f} B/s of {rate}; writer held {sender.elapsed:.2f} s")
        assert receiver.rate() == pytest.approx(rate, rel=TOLERANCE)
        assert_never_early(receiver, sender, rate)
        assert sender.elapsed >= (len(sender.data) - ahead) / rate


def test_9600_baud_is_paced_within_2_percent() -> None:
    rate = 960
    data = random.Random(2).randbytes(rate * 2)
    with LinkRelay(baud=9600) as relay, line(relay.flight_path) as flight, line(relay.ground_path) as ground:
        receiver, sender = Receiver(ground, len(data)), Sender(flight, data)
        receiver.start()
        sender.run()
        receiver.join(timeout=30)
    assert receiver.data == data
    print(f"measured {receiver.rate():.1f} B/s of {rate}")
    assert receiver.rate() == pytest.approx(rate, rel=TOLERANCE)
    assert_never_early(receiver, sender, rate)


def test_idle_time_is_no_credit_for_a_burst() -> None:
    rate = 11520
    data = random.Random(5).randbytes(rate * 3 // 10)  # less than the idle time's worth
    with LinkRelay(baud=115200) as relay, line(relay.flight_path) as flight, line(relay.ground_path) as ground:
        time.sleep(0.5)
        receiver, sender = Receiver(flight, len(data)), Sender(ground, data)
        receiver.start()
        sender.run()
        receiver.join(timeout=30)
    assert receiver.data == data
    assert_never_early(receiver, sender, rate)
    assert receiver.rate() == pytest.approx(rate, rel=TOLERANCE)


def test_a_receiver_that_does_not_read_loses_bytes_without_stalling_the_sender() -> None:
    data = bytes(50_000)
    with LinkRelay(baud=921600) as relay, line(relay.flight_path), line(relay.ground_path) as ground:
        sender = Sender(ground, data)
        sender.start()
        sender.join(timeout=30)
        deadline = time.monotonic() + 10
        while relay.uplink.bytes_passed + relay.uplink.bytes_dropped < len(data) and time.monotonic() < deadline:
            time.sleep(0.05)
        passed, dropped = relay.uplink.bytes_passed, relay.uplink.bytes_dropped
    assert not sender.is_alive()
    assert dropped > 0 and passed + dropped == len(data)


def ground_frames(count: int, rng: random.Random) -> list[bytes]:
    """Distinct frames as COBS puts them on the wire: no 0x00 inside, one at the end."""
    return [b"G%06d" % i + bytes(rng.randrange(1, 256) for _ in range(rng.randrange(0, 150))) + b"\x00"
            for i in range(count)]


def attack_frame(i: int) -> bytes:
    return b"A%06d" % i + b"\xff" * (i % 60) + b"\x00"


def spoof(frame: bytes) -> list[bytes]:
    return [b"F" + frame, frame]


def flood(source: FrameSource) -> None:
    """Keep the source's queue topped up: the line's full rate, shared with the ground."""
    for i in itertools.count():
        if not source.offer(attack_frame(i)):
            return


def bursts(source: FrameSource) -> None:
    """A few frames now and then, so that they also arrive while a ground frame is half sent."""
    rng = random.Random(4)
    for i in itertools.count():
        if not source.offer(attack_frame(i)):
            return
        if rng.random() < 0.3:
            time.sleep(rng.random() * 0.003)


@pytest.mark.parametrize("attack", [flood, bursts])
@pytest.mark.parametrize("tamper", [None, spoof], ids=["raw", "spoofer"])
def test_extra_source_and_tamper_share_the_uplink_without_splitting_frames(tamper, attack) -> None:
    rng = random.Random(3)
    sent = ground_frames(150, rng)
    stream = b"".join(sent)
    # Frames reach the relay in pieces, at times slower than the line takes them, so that the line
    # often carries half a ground frame while the attacker's next one waits.
    chunks = [rng.randrange(1, 40) for _ in range(len(stream))]
    with LinkRelay(baud=460800, uplink_tamper=tamper) as relay, \
            line(relay.flight_path) as flight, line(relay.ground_path) as ground:
        flooding = threading.Thread(target=attack, args=(relay.uplink.add_source(),), daemon=True)
        flooding.start()
        done = threading.Event()
        receiver = Receiver(flight, until=done)
        receiver.start()
        Sender(ground, stream, chunks, pause_s=0.0005).run()
        deadline = time.monotonic() + 20
        while sent[-1] not in receiver.data and time.monotonic() < deadline:
            time.sleep(0.05)
        done.set()
        receiver.join(timeout=QUIET_S + 5)
    flooding.join(timeout=5)
    assert not flooding.is_alive()  # offer() returns False once the relay has stopped
    received = [f + b"\x00" for f in bytes(receiver.data).split(b"\x00")[:-1]]
    # A frame split by another, or merged with one, would show up as frames never sent.
    from_ground = [f for f in received if not f.startswith(b"A")]
    assert from_ground == [f for g in sent for f in (tamper(g) if tamper else [g])]
    from_attacker = [f for f in received if f.startswith(b"A")]
    assert from_attacker == [attack_frame(i) for i in range(len(from_attacker))]  # in order, none lost
    assert len(from_attacker) >= len(sent) // 4  # the two take turns on the line


def test_inject_sends_frames_between_the_sides_frames_in_both_directions() -> None:
    with LinkRelay(baud=460800) as relay, line(relay.flight_path) as flight, line(relay.ground_path) as ground:
        with pytest.raises(ValueError):
            relay.uplink.inject(b"no delimiter")
        assert relay.uplink.inject(b"to flight\x00") and relay.downlink.inject(b"to ground\x00")
        for fd, expected in ((flight, b"to flight\x00"), (ground, b"to ground\x00")):
            receiver = Receiver(fd, len(expected))
            receiver.run()
            assert receiver.data == expected
    assert not relay.uplink.inject(b"late\x00")  # the relay has stopped


def test_devices_are_opened_with_pyserial_and_relayed_both_ways() -> None:
    flight_master, flight_slave, flight_path = open_pty()  # stand-ins for two UARTs
    ground_master, ground_slave, ground_path = open_pty()
    try:
        with LinkRelay(flight_path, ground_path, baud=460800) as relay:
            assert (relay.flight_path, relay.ground_path) == (flight_path, ground_path)
            for source, target, data in ((ground_master, flight_master, b"up\x00link"), (flight_master, ground_master, b"down")):
                receiver = Receiver(target, len(data))
                receiver.start()
                os.write(source, data)
                receiver.join(timeout=QUIET_S + 5)
                assert receiver.data == data
    finally:
        for fd in (flight_master, flight_slave, ground_master, ground_slave):
            os.close(fd)


@pytest.mark.parametrize("port, reason", [("/nonexistent/tty", "No such file or directory"), ("loop://", "not a serial device")])
def test_a_device_that_cannot_be_opened_is_one_line_and_leaks_nothing(port: str, reason: str) -> None:
    fds_before = set(os.listdir("/proc/self/fd"))
    with pytest.raises(OpenError) as failure:
        LinkRelay(ground_port=port)  # the flight side's pty is opened first, then given back
    assert str(failure.value) == f"cannot open {port}: {reason}"
    assert set(os.listdir("/proc/self/fd")) == fds_before


def test_a_raising_hook_halts_the_relay_with_its_error_and_close_joins_every_thread() -> None:
    def broken(frame: bytes) -> list[bytes]:
        raise RuntimeError("hook bug")

    with LinkRelay(baud=460800, downlink_tamper=broken) as relay, line(relay.flight_path) as flight:
        os.write(flight, b"frame\x00")
        assert relay.halted.wait(timeout=10)
        assert "hook bug" in (relay.error or "")
    assert not [t for t in threading.enumerate() if t.name.startswith("hil ")]
