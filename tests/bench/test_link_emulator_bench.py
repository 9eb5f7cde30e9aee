"""The link emulator's byte-rate accuracy at 115200 baud (issue 9: within 1%), measured over pty
pairs as the flight and ground software use them: both directions at once, each sender writing
as fast as the line takes it for SECONDS, each receiver timing what arrives.

Figures in extra_info: each direction's measured bytes/s and its ratio to baud/10, with the
radio's impairments off and on (BER, bursts and latency change bits and arrival times, not the
pace of the line). `make test` runs the body once too (benchmarks disabled); the ratio is read,
never asserted: a loaded machine must not fail the suite, the figure says how the line held.
"""
from __future__ import annotations

import random

import pytest

from hil.link import LinkRelay
from hil.radio import BurstModel, Impairments
from tests.hil.helpers import Receiver, Sender, line

BAUD = 115200
SECONDS = 3
RADIO = Impairments(ber=1e-5, latency_s=0.01, burst=BurstModel(mean_interval_s=1.0, mean_duration_s=0.02), seed=1)


@pytest.mark.parametrize("impairments", [None, RADIO], ids=["clean", "radio"])
def test_link_emulator_byte_rate_accuracy(benchmark, impairments: Impairments | None) -> None:
    rate = BAUD / 10
    rng = random.Random(1)
    uplink, downlink = rng.randbytes(int(rate * SECONDS)), rng.randbytes(int(rate * SECONDS))
    sent = {"uplink": uplink, "downlink": downlink}
    measured: dict[str, float] = {}

    def run() -> None:
        with LinkRelay(baud=BAUD, impairments=impairments) as relay, \
                line(relay.flight_path) as flight, line(relay.ground_path) as ground:
            receivers = {"uplink": Receiver(flight, len(uplink)), "downlink": Receiver(ground, len(downlink))}
            threads = [*receivers.values(), Sender(ground, uplink), Sender(flight, downlink)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=SECONDS * 5)
        for name, receiver in receivers.items():
            assert len(receiver.data) == len(sent[name])  # all of it: no impairment here loses bytes
            measured[name] = receiver.rate()

    benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update({f"{name}_b_s": round(value, 1) for name, value in measured.items()})
    benchmark.extra_info.update({f"{name}_ratio": round(value / rate, 5) for name, value in measured.items()})
