"""The radio's impairment models (hil/radio.py) on their own, in simulated time, without ptys:
bit errors at their rate, contact gate, dropouts and bursts with their means, schedules that
depend on the seed alone, and bad parameters refused."""
from __future__ import annotations

import math
import random

import pytest

from hil.radio import BurstModel, DropoutModel, Impairments, Radio

Z = 4.5  # standard deviations: a seeded test this far out would be a real bias, not bad luck


def feed(radio: Radio, data: bytes, dt: float, t0: float = 0.0, seed: int = 9) -> bytes:
    """data through the radio in chunks of the sizes the pacer writes (1 to a few hundred bytes)."""
    rng = random.Random(seed)
    out, i = bytearray(), 0
    while i < len(data):
        j = min(len(data), i + rng.randrange(1, 400))
        out += radio.apply(data[i:j], t0 + i * dt, dt)
        i = j
    return bytes(out)


def flipped_bits(a: bytes, b: bytes) -> int:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).bit_count()


def test_a_clean_radio_passes_the_bytes_themselves() -> None:
    radio = Radio(Impairments(), "uplink")
    data = b"frame\x00"
    assert radio.apply(data, 0.0, 1e-4) is data
    assert radio.counters() == dict.fromkeys(radio.counters(), 0)


def test_bit_errors_over_a_million_bits_are_within_the_binomial_bound() -> None:
    ber, data = 1e-3, bytes(125_000)  # 1e6 bits
    radio = Radio(Impairments(ber=ber, seed=1), "downlink")
    received = feed(radio, data, 1 / 11520)
    n = len(data) * 8
    assert len(received) == len(data)
    assert flipped_bits(received, data) == radio.bits_flipped
    assert abs(radio.bits_flipped - n * ber) <= Z * math.sqrt(n * ber * (1 - ber))
    # every bit position of a byte is hit, about equally: no position favoured by the drawing
    per_position = [sum(byte >> k & 1 for byte in received) for k in range(8)]
    assert all(abs(count - n / 8 * ber) <= Z * math.sqrt(n / 8 * ber) for count in per_position)


def test_the_same_seed_flips_the_same_bits_and_another_seed_others() -> None:
    data = bytes(20_000)
    first, again, other = (feed(Radio(Impairments(ber=1e-3, seed=s), "uplink"), data, 1e-4) for s in (5, 5, 6))
    assert first == again and first != other


def test_out_of_contact_bytes_are_lost_and_counted_not_queued() -> None:
    radio = Radio(Impairments(ber=0.01), "uplink")
    radio.contact = False
    assert radio.apply(b"x" * 100, 0.0, 1e-4) == b""
    radio.contact = True
    assert radio.apply(b"\xff" * 10, 0.01, 1e-4) != b""  # the next bytes, not the lost ones
    assert radio.bytes_lost_out_of_contact == 100


def test_dropouts_lose_the_share_and_lengths_of_their_means() -> None:
    interval, duration, dt = 1.0, 0.25, 1e-3  # 1000 bytes per simulated second
    radio = Radio(Impairments(dropout=DropoutModel(interval, duration), seed=2), "downlink")
    sim_s = 2000.0
    received = feed(radio, bytes(int(sim_s / dt)), dt)
    lost = radio.bytes_lost_dropout
    assert len(received) + lost == sim_s / dt
    assert lost / (sim_s / dt) == pytest.approx(duration / (interval + duration), abs=0.03)
    assert radio.dropouts == pytest.approx(sim_s / (interval + duration), rel=0.15)
    assert lost * dt / radio.dropouts == pytest.approx(duration, rel=0.15)  # mean length of one


def test_the_outage_schedule_depends_on_the_seed_alone_not_on_the_traffic() -> None:
    model = Impairments(dropout=DropoutModel(0.5, 0.1), burst=BurstModel(0.5, 0.1, 0.05), ber=1e-4, seed=3)
    data = random.Random(1).randbytes(100_000)
    radios = [Radio(model, "uplink") for _ in range(2)]
    for radio, chunking in zip(radios, (11, 12)):
        feed(radio, data, 1e-4, seed=chunking)
    assert radios[0].bytes_lost_dropout == radios[1].bytes_lost_dropout > 0
    assert radios[0].dropouts == radios[1].dropouts and radios[0].bursts == radios[1].bursts > 0


def test_far_apart_bytes_see_the_stationary_outage_share_without_drawing_every_episode() -> None:
    # 4000 single bytes 1000 simulated seconds apart, with outages every few ms: drawing each
    # episode in between would take hours; the chain's memorylessness makes it one draw each.
    radio = Radio(Impairments(dropout=DropoutModel(4e-3, 1e-3), seed=4), "uplink")
    samples = 4000
    lost = sum(not radio.apply(b"x", k * 1000.0, 1e-4) for k in range(1, samples + 1))
    share = 1e-3 / 5e-3
    assert abs(lost / samples - share) <= Z * math.sqrt(share * (1 - share) / samples)


def test_burst_errors_come_in_bursts_at_the_burst_ber() -> None:
    interval, duration, burst_ber, dt = 1.0, 0.1, 0.01, 1e-3
    radio = Radio(Impairments(burst=BurstModel(interval, duration, burst_ber), seed=5), "downlink")
    sim_s = 500.0
    data = bytes(int(sim_s / dt))
    received = feed(radio, data, dt)
    assert len(received) == len(data)  # bursts corrupt, they do not lose
    bad_bits = sim_s / dt * 8 * duration / (interval + duration)
    assert radio.bits_flipped == pytest.approx(bad_bits * burst_ber, rel=0.25)
    assert radio.bursts == pytest.approx(sim_s / (interval + duration), rel=0.2)
    # The flips cluster: runs of flipped bytes closer than 0.2 s are no more than the bursts. As
    # many flips spread independently over the whole time would make about twice as many runs.
    at = [i * dt for i, byte in enumerate(received) if byte]
    clusters = 1 + sum(b - a > 0.2 for a, b in zip(at, at[1:]))
    assert clusters <= radio.bursts


@pytest.mark.parametrize("make", [
    lambda: Impairments(ber=0.6),
    lambda: Impairments(ber=math.nan),
    lambda: Impairments(latency_s=-0.1),
    lambda: Impairments(latency_s=11.0),
    lambda: BurstModel(0.0, 0.1),
    lambda: BurstModel(1.0, math.inf),
    lambda: BurstModel(1.0, 0.1, ber=-1e-3),
    lambda: DropoutModel(math.nan, 1.0),
    lambda: DropoutModel(1.0, -1.0),
], ids=["ber>0.5", "ber nan", "latency<0", "latency>10s", "burst interval 0", "burst duration inf",
        "burst ber<0", "dropout interval nan", "dropout duration<0"])
def test_bad_parameters_are_refused(make) -> None:
    with pytest.raises(ValueError):
        make()
