"""The radio in the relay, over real ptys: the rate multiplier, bit errors, the contact gate,
latency and dropouts on the paced line; `hil link`'s radio options; and the flight/ground link
still delivering a job over a noisy radio (CRC rejects, the reliable downlink resends)."""
from __future__ import annotations

import json
import math
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hil.link import MAX_BURST_S, MAX_LINE_RATE, LinkRelay
from hil.radio import DropoutModel, Impairments
from tests.hil.helpers import Receiver, Sender, line
from tests.node.helpers import FlightRun, HilLink, flight_generate, ground, new_keys, write_config

REPO = Path(__file__).resolve().parents[2]
TOLERANCE = 0.02  # as tests/hil/test_link.py: measured against configured rate
Z = 4.5


def relay_stream(relay: LinkRelay, data: bytes, during=None, quiet_s: float = 5.0) -> Receiver:
    """data from ground to flight as fast as the line takes it; during(relay) runs meanwhile. A
    lossy line delivers less than data: the receiver stops after quiet_s without a byte."""
    with line(relay.flight_path) as flight, line(relay.ground_path) as ground_fd:
        receiver = Receiver(flight, len(data), quiet_s=quiet_s)
        sender = Sender(ground_fd, data)
        receiver.start()
        sender.start()
        if during is not None:
            during(relay)
        sender.join(timeout=60)
        receiver.join(timeout=60)
    return receiver


@pytest.mark.parametrize("baud, accel", [(9600, 10.0), (115200, 20.0)])
def test_accel_multiplies_the_byte_rate(baud: int, accel: float) -> None:
    rate = baud / 10 * accel
    data = random.Random(1).randbytes(int(rate * 1.5))
    with LinkRelay(baud=baud, accel=accel) as relay:
        receiver = relay_stream(relay, data)
    assert receiver.data == data
    print(f"measured {receiver.rate():.0f} B/s of {rate:.0f}")
    assert receiver.rate() == pytest.approx(rate, rel=TOLERANCE)


def test_accel_is_capped_at_the_fastest_line_paced() -> None:
    with LinkRelay(baud=2_000_000, accel=100.0) as relay:
        assert relay.uplink.rate == relay.downlink.rate == MAX_LINE_RATE


@pytest.mark.parametrize("accel", [0.0, -1.0, math.nan, 1e7])
def test_a_bad_accel_is_refused(accel: float) -> None:
    with pytest.raises(ValueError):
        LinkRelay(accel=accel)


def test_bit_errors_on_the_line_are_within_the_binomial_bound_and_counted() -> None:
    ber = 1e-3
    data = random.Random(2).randbytes(125_000)  # 1e6 bits, about 1.1 s at 115200 baud x 10
    with LinkRelay(baud=115200, accel=10.0, impairments=Impairments(ber=ber, seed=3)) as relay:
        receiver = relay_stream(relay, data)
    counters = relay.counters()["uplink"]
    n = len(data) * 8
    assert len(receiver.data) == len(data) == counters["bytes_passed"]
    flipped = (int.from_bytes(receiver.data, "big") ^ int.from_bytes(data, "big")).bit_count()
    assert flipped == counters["bits_flipped"]
    assert abs(flipped - n * ber) <= Z * math.sqrt(n * ber * (1 - ber))
    assert relay.counters()["downlink"]["bits_flipped"] == 0  # nothing went that way


def test_out_of_contact_the_line_loses_its_bytes_and_counts_them() -> None:
    rate = 115200 / 10 * 10
    data = random.Random(4).randbytes(int(rate * 2))

    def pass_gap(relay: LinkRelay) -> None:
        time.sleep(0.5)
        relay.set_contact(False)
        time.sleep(0.5)
        relay.set_contact(True)

    with LinkRelay(baud=115200, accel=10.0) as relay:
        receiver = relay_stream(relay, data, during=pass_gap, quiet_s=1.0)
        counters = relay.counters()["uplink"]
    received = bytes(receiver.data)
    lost = counters["bytes_lost_out_of_contact"]
    assert counters["bytes_passed"] + lost == len(data) == len(received) + lost
    # one gap, where contact was lost; before and after it the stream as sent
    head = next(i for i, (a, b) in enumerate(zip(received, data)) if a != b)
    assert received == data[:head] + data[head + lost:]
    assert lost == pytest.approx(0.5 * rate, rel=0.2)


@pytest.mark.parametrize("accel", [1.0, 4.0])
def test_latency_delays_each_byte_by_its_wall_share_and_keeps_the_rate(accel: float) -> None:
    latency_s = 0.4
    wall = latency_s / accel
    rate = 11520 * accel
    data = random.Random(5).randbytes(int(rate * 1.0))
    with LinkRelay(baud=115200, accel=accel, impairments=Impairments(latency_s=latency_s)) as relay, \
            line(relay.flight_path) as flight, line(relay.ground_path) as ground_fd:
        receiver = Receiver(flight, len(data))
        receiver.start()
        sent_at = time.monotonic()
        Sender(ground_fd, data).run()
        receiver.join(timeout=30)
    assert receiver.data == data  # in order, all of it
    # a line that stood idle starts up to MAX_BURST_S back (test_link.assert_never_early): so may its latency
    assert wall - MAX_BURST_S <= receiver.first_at - sent_at <= wall + 0.05
    assert receiver.rate() == pytest.approx(rate, rel=TOLERANCE)


def test_dropouts_cut_whole_runs_out_of_the_stream() -> None:
    # 20 simulated seconds in 2 wall seconds, an outage of 0.1 s every half second or so
    impairments = Impairments(dropout=DropoutModel(mean_interval_s=0.5, mean_duration_s=0.1), seed=6)
    data = random.Random(7).randbytes(115200 * 2)
    with LinkRelay(baud=115200, accel=10.0, impairments=impairments) as relay:
        receiver = relay_stream(relay, data, quiet_s=0.5)
        counters = relay.counters()["uplink"]
    received = bytes(receiver.data)
    # Walk the received bytes along the sent ones: each mismatch is a gap, found again by the next
    # 16 bytes (random data: unique). Each dropout that met the stream is one gap.
    gaps, lost, i, j = 0, 0, 0, 0
    while i < len(received):
        if received[i] != data[j]:
            k = data.find(received[i:i + 16], j)
            assert k > j
            gaps, lost, j = gaps + 1, lost + k - j, k
        i, j = i + 1, j + 1
    lost += len(data) - j  # an outage at the very end
    gaps += j < len(data)
    assert (gaps, lost) == (counters["dropouts"], counters["bytes_lost_dropout"])
    assert 10 <= gaps <= 60  # about 33 expected
    assert lost / len(data) == pytest.approx(0.1 / 0.6, abs=0.08)


# --- hil link's radio options -------------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["--ber", "0.6"], "argument --ber: expected a bit error rate from 0 to 0.5, got '0.6'"),
    (["--ber", "nan"], "argument --ber: expected a bit error rate from 0 to 0.5, got 'nan'"),
    (["--latency-ms", "-1"], "argument --latency-ms: expected milliseconds from 0 to 10000, got '-1'"),
    (["--burst-interval-s", "2"], "--burst-interval-s and --burst-duration-ms go together"),
    (["--burst-ber", "0.1"], "--burst-ber needs --burst-interval-s and --burst-duration-ms"),
    (["--burst-interval-s", "0", "--burst-duration-ms", "5"],
     "argument --burst-interval-s: expected seconds above 0 and at most 10000000, got '0'"),
    (["--dropout-duration-ms", "100"], "--dropout-interval-s and --dropout-duration-ms go together"),
    (["--dropout-interval-s", "inf", "--dropout-duration-ms", "100"],
     "argument --dropout-interval-s: expected seconds above 0 and at most 10000000, got 'inf'"),
    (["--accel", "0"], "argument --accel: expected a rate multiplier above 0 and at most 1000000, got '0'"),
    (["--seed", "-1"], "argument --seed: expected a seed from 0 to 9223372036854775807, got '-1'"),
], ids=lambda value: " ".join(value) if isinstance(value, list) else "")
def test_bad_radio_options_are_one_line_and_exit_2(args: list[str], message: str) -> None:
    done = subprocess.run([sys.executable, "-m", "hil.cli", "link", "--pty", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=30)
    assert (done.returncode, done.stderr, done.stdout) == (2, f"hil link: error: {message}\n", "")


def test_hil_link_flips_bits_and_reports_them() -> None:
    link = HilLink(115200, "--ber", "0.01", "--seed", "1", "--accel", "4", "--latency-ms", "20",
                   "--stats-interval", "0.2")
    try:
        data = bytes(4000)
        with line(link.flight) as flight, line(link.ground) as ground_fd:
            receiver = Receiver(flight, len(data))
            receiver.start()
            os.write(ground_fd, data)
            receiver.join(timeout=15)
        flipped = sum(bin(byte).count("1") for byte in receiver.data)
        assert len(receiver.data) == len(data) and flipped > 0
        stats = ""
        deadline = time.monotonic() + 10
        while f"{flipped} bits flipped" not in stats and time.monotonic() < deadline:
            stats = link.proc.stdout.readline()  # type: ignore[union-attr]
        assert stats.startswith("uplink 4000 B") and f", {flipped} bits flipped;" in stats
    finally:
        link.stop()


# --- the flight/ground link over a noisy radio ---------------------------------------------------

@pytest.fixture
def noisy_link():
    # 30 times the bad-link scenario's BER, so that the few kB of a short job surely meet corrupted
    # frames (about 10 flipped bits in the downlink's 4 kB; a third of its frames hit).
    hil = HilLink(115200, "--ber", "3e-4", "--seed", "3", "--stats-interval", "0.5")
    yield hil
    hil.stop()


def test_a_job_is_delivered_exactly_over_a_noisy_radio(noisy_link, tmp_path) -> None:
    keys = new_keys(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    node = FlightRun(noisy_link.flight, keys, data, tmp_path / "flight.log",
                     "--config", str(write_config(tmp_path / "n.toml")))
    node.start()
    prompt = "Name three uses of a satellite:"
    try:
        out = ground(noisy_link.ground, keys, tmp_path / "ground.sqlite", "submit", "--prompt", prompt,
                     "--max-tokens", "48", "--temperature", "0", "--token-ids", "--json", timeout=90)
    finally:
        node.stop()
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["token_ids"] == flight_generate(prompt, 48)["tokens"]  # nothing corrupted got through
    noisy_link.stop()
    stats = noisy_link.proc.stdout.read().splitlines()  # type: ignore[union-attr]
    print(stats[-1])
    downlink = stats[-1].partition("; downlink ")[2]
    assert int(re.search(r"(\d+) bits flipped", downlink or "0 bits flipped").group(1)) > 0, stats[-1]
