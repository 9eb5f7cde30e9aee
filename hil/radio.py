"""The radio's impairments on one direction of the emulated link (hil/link.py applies them).

A Radio sits at the end of a Direction's paced line: every byte the pacer sends in its line slot
goes through Radio.apply, which loses it or flips some of its bits, in this order:

1. Contact gate (Radio.contact, set for both directions by LinkRelay.set_contact). Out of contact
   a byte is lost as a radio out of sight loses it: the transmitter keeps shifting bytes out at
   the baud, nobody hears them. Counted in bytes_lost_out_of_contact, never queued for later.
2. Dropouts (DropoutModel): random outages, bytes lost (bytes_lost_dropout). Up-times and outages
   alternate, each exponentially distributed with its mean (a two-state Markov chain).
3. Bit errors: each bit flipped independently with probability Impairments.ber (bits_flipped).
   Burst errors (BurstModel) are a continuous-time Gilbert-Elliott channel: a good state at
   Impairments.ber and a bad state at BurstModel.ber, alternating with exponentially distributed
   sojourns of the two means. The counter `bursts` counts bad states that met at least one byte
   (a burst nothing crosses is invisible), as `dropouts` does for outages.

Time. Every time here is simulated seconds, the environment's: with the relay's rate multiplier
K (LinkRelay(accel=K)) a simulated second passes in 1/K wall seconds, and one byte slot is K times
shorter in wall time than at the baud. So a dropout of 2 s costs the bytes 2 s of the flight's line
carries, whatever K. The dropout and burst schedules are drawn from their own seeded generators
and depend on the seed only, not on the traffic; which bits flip depends on the traffic too.

Bit errors are drawn as the gap to the next flipped bit (geometric), so the cost is per flip and
per chunk, not per bit: the relay keeps up at line rates of megabytes a second.

Usage, as the scenario runner drives the link:

    from hil.link import LinkRelay
    from hil.radio import BurstModel, DropoutModel, Impairments

    bad_link = Impairments(ber=1e-5, latency_s=0.01, seed=7,
                           burst=BurstModel(mean_interval_s=30.0, mean_duration_s=0.05, ber=1e-2),
                           dropout=DropoutModel(mean_interval_s=120.0, mean_duration_s=2.0))
    with LinkRelay(baud=115200, impairments=bad_link, accel=20.0) as relay:
        ...                                   # flight on relay.flight_path, ground on relay.ground_path
        relay.set_contact(env.in_contact())   # at each contact window edge
        relay.counters()                      # {"uplink": {"bytes_passed": ..., ...}, "downlink": {...}}
"""
from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass

MAX_BER = 0.5  # beyond it a bit is likelier wrong than right: an inverter, not a noisy channel
MAX_LATENCY_S = 10.0  # a GEO hop is 0.25 s; more is a typing error (and bytes held in memory)
MAX_MEAN_S = 1e7  # about four months of simulated time: longer means "never" and a finite bound keeps sums finite
FORGET_AFTER_SOJOURNS = 50  # a two-state chain this far past its last switch has forgotten its state

COUNTERS = ("bytes_lost_out_of_contact", "bytes_lost_dropout", "bits_flipped", "bursts", "dropouts")


def _check_mean(name: str, value: float) -> None:
    if not 0.0 < value <= MAX_MEAN_S:  # also refuses NaN
        raise ValueError(f"{name} must be above 0 and at most {MAX_MEAN_S:g} s, got {value!r}")


def _check_ber(name: str, value: float) -> None:
    if not 0.0 <= value <= MAX_BER:
        raise ValueError(f"{name} must be from 0 to {MAX_BER}, got {value!r}")


@dataclass(frozen=True)
class BurstModel:
    """Burst errors: bad states of mean_duration_s at bit error rate `ber`, separated by good states
    of mean_interval_s at the link's own ber (simulated seconds, exponentially distributed)."""
    mean_interval_s: float
    mean_duration_s: float
    ber: float = 1e-2

    def __post_init__(self) -> None:
        _check_mean("burst mean interval", self.mean_interval_s)
        _check_mean("burst mean duration", self.mean_duration_s)
        _check_ber("burst ber", self.ber)


@dataclass(frozen=True)
class DropoutModel:
    """Outages of mean_duration_s, separated by up-times of mean_interval_s (from the end of one to
    the start of the next; simulated seconds, exponentially distributed). Bytes in them are lost."""
    mean_interval_s: float
    mean_duration_s: float

    def __post_init__(self) -> None:
        _check_mean("dropout mean interval", self.mean_interval_s)
        _check_mean("dropout mean duration", self.mean_duration_s)


@dataclass(frozen=True)
class Impairments:
    """What the radio does to each direction's bytes (each direction draws its own, from seed).
    latency_s is one way, in simulated seconds: bytes arrive that long after their line slot."""
    ber: float = 0.0
    latency_s: float = 0.0
    burst: BurstModel | None = None
    dropout: DropoutModel | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        _check_ber("ber", self.ber)
        if not 0.0 <= self.latency_s <= MAX_LATENCY_S:
            raise ValueError(f"latency must be from 0 to {MAX_LATENCY_S:g} s, got {self.latency_s!r}")


class _Episodes:
    """An alternating process in simulated time: off for Exp(mean_interval_s), on for
    Exp(mean_duration_s), and so on, starting off at time 0. Queried with nondecreasing times."""

    def __init__(self, rng: random.Random, mean_interval_s: float, mean_duration_s: float):
        self._rng = rng
        self._interval, self._duration = mean_interval_s, mean_duration_s
        self.start = rng.expovariate(1 / mean_interval_s)
        self.end = self.start + rng.expovariate(1 / mean_duration_s)
        self.met = 0  # episodes at least one byte fell in
        self._met_current = False

    def _advance(self, t: float) -> None:
        while t >= self.end:
            self._met_current = False
            if t - self.end > FORGET_AFTER_SOJOURNS * (self._interval + self._duration):
                # Long past the last switch (an idle line, a high K): drawing every episode in
                # between would cost time for nothing. Exponential sojourns are memoryless, so the
                # state at t is the stationary one and the time left in it is a fresh draw.
                if self._rng.random() < self._duration / (self._interval + self._duration):
                    self.start = t
                else:
                    self.start = t + self._rng.expovariate(1 / self._interval)
            else:
                self.start = self.end + self._rng.expovariate(1 / self._interval)
            self.end = self.start + self._rng.expovariate(1 / self._duration)

    def runs(self, t0: float, dt: float, n: int) -> Iterator[tuple[int, int, bool]]:
        """Split the n byte slots at t0, t0 + dt, ... into runs [i, j) that are all on or all off."""
        i = 0
        while i < n:
            t = t0 + i * dt
            self._advance(t)
            on = t >= self.start
            edge = self.end if on else self.start
            j = min(n, max(i + 1, math.ceil((edge - t0) / dt)))  # the first slot at or past the edge
            if on and not self._met_current:
                self._met_current = True
                self.met += 1
            yield i, j, on
            i = j


class Radio:
    """One direction's impairments; see the module docstring. Not thread-safe: its Direction's
    transmit thread alone calls apply(), other threads only set contact and read counters."""

    def __init__(self, impairments: Impairments, name: str):
        self.impairments = impairments
        self.contact = True
        self.bytes_lost_out_of_contact = 0
        self.bytes_lost_dropout = 0
        self.bits_flipped = 0
        # Each process its own generator, so that the outage and burst schedules depend on the seed
        # alone, not on how many bits the traffic made the bit-error generator draw.
        seed = impairments.seed
        self._bits = random.Random(f"{seed}/{name}/bits")
        self._bursts = self._episodes(impairments.burst, random.Random(f"{seed}/{name}/bursts"))
        self._dropouts = self._episodes(impairments.dropout, random.Random(f"{seed}/{name}/dropouts"))
        self._clean = impairments.ber == 0 and self._bursts is None and self._dropouts is None

    @staticmethod
    def _episodes(model: BurstModel | DropoutModel | None, rng: random.Random) -> _Episodes | None:
        return None if model is None else _Episodes(rng, model.mean_interval_s, model.mean_duration_s)

    @property
    def bursts(self) -> int:
        return self._bursts.met if self._bursts else 0

    @property
    def dropouts(self) -> int:
        return self._dropouts.met if self._dropouts else 0

    def counters(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in COUNTERS}

    def apply(self, data: bytes, t0: float, dt: float) -> bytes:
        """What the receiver gets of data, whose bytes have their line slots at simulated times t0,
        t0 + dt, ...: lost bytes left out, the rest with their bit errors."""
        if not self.contact:
            self.bytes_lost_out_of_contact += len(data)
            return b""
        if self._clean:
            return data
        kept = [(0, len(data))]
        if self._dropouts is not None:
            kept = [(i, j) for i, j, out in self._dropouts.runs(t0, dt, len(data)) if not out]
            self.bytes_lost_dropout += len(data) - sum(j - i for i, j in kept)
        received = bytearray()
        for i, j in kept:
            piece = bytearray(data[i:j])
            if self._bursts is None:
                self._flip(piece, 0, len(piece), self.impairments.ber)
            else:
                for a, b, bad in self._bursts.runs(t0 + i * dt, dt, len(piece)):
                    self._flip(piece, a, b, self.impairments.burst.ber if bad else self.impairments.ber)  # type: ignore[union-attr]
            received += piece
        return bytes(received)

    def _flip(self, buf: bytearray, start: int, end: int, ber: float) -> None:
        """Flip each bit of buf[start:end] independently with probability ber."""
        if ber <= 0.0:
            return
        log_keep = math.log1p(-ber)
        bit, stop = start * 8, end * 8
        while True:
            # bits kept before the next flip: geometric, P(at least k) = (1 - ber)^k; 1 - random()
            # is in (0, 1], so the log is finite
            bit += int(math.log(1.0 - self._bits.random()) / log_keep)
            if bit >= stop:
                return
            buf[bit >> 3] ^= 0x80 >> (bit & 7)
            self.bits_flipped += 1
            bit += 1
