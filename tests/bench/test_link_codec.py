"""Link codec throughput and per-packet overhead (run with --benchmark-enable to measure).

Figures land in each benchmark's extra_info: packets/s, MB/s, overhead octets, and for decoding
the share of one core needed to keep up with a saturated 115200-baud line (11520 octets/s).
"""
from __future__ import annotations

import msgpack
import pytest

from flight.link.codec import PacketCodec
from flight.link.dictionary import load_dictionary
from flight.link.framing import Deframer, frame
from flight.link.keys import KeyRing
from flight.link.onboard_time import CucTime
from tests.link.samples import samples

D = load_dictionary()
CODEC = PacketCodec(D)
SAMPLES = samples(D)
LINE_OCTETS_PER_S = 115200 / 10  # UART 8N1: ten bits per octet
STREAM_PACKETS = 200
READ_CHUNK = 4096  # what one serial read returns on a busy line
KEY = bytes(range(32))


def _median(benchmark) -> float | None:
    """Median time of one call: robust to the noise of a shared machine; None when disabled."""
    stats = getattr(benchmark, "stats", None)
    return stats.stats.median if stats else None


def _body_octets(kind: str) -> int:
    return len(msgpack.packb([SAMPLES[kind][f.name] for f in D.packet(kind).fields], use_bin_type=True))


@pytest.mark.parametrize("kind", ["HK", "JOB_TOKENS"])
def test_link_encode(benchmark, kind):
    fields = SAMPLES[kind]
    time = CucTime.now()
    wire = benchmark(lambda: frame(CODEC.encode_tm(kind, fields, 1, time)))
    overhead = len(wire) - _body_octets(kind)
    assert overhead <= 14 + len(wire) // 254 + 1 + 1
    benchmark.extra_info.update(frame_octets=len(wire), body_octets=_body_octets(kind), overhead_octets=overhead)
    if (median := _median(benchmark)) is not None:
        benchmark.extra_info.update(packets_per_s=round(1 / median), mb_per_s=round(len(wire) / median / 1e6, 2))


@pytest.mark.parametrize("kind", ["HK", "JOB_TOKENS"])
def test_link_decode(benchmark, kind):
    """Deframe (COBS, header, CRC) and decode (msgpack, field checks) a stream, as the ground does."""
    packets = [CODEC.encode_tm(kind, SAMPLES[kind], n, CucTime.now()) for n in range(STREAM_PACKETS)]
    stream = b"".join(frame(p) for p in packets)
    chunks = [stream[i:i + READ_CHUNK] for i in range(0, len(stream), READ_CHUNK)]

    def decode_stream() -> int:
        deframer = Deframer(D.max_packet_octets)
        decoded = 0
        for chunk in chunks:
            for packet in deframer.feed(chunk):
                CODEC.decode_tm(packet)
                decoded += 1
        return decoded

    assert benchmark(decode_stream) == STREAM_PACKETS
    if (median := _median(benchmark)) is not None:
        per_octet = median / len(stream)
        benchmark.extra_info.update(
            packets_per_s=round(STREAM_PACKETS / median), mb_per_s=round(len(stream) / median / 1e6, 2),
            frame_octets=len(stream) // STREAM_PACKETS,
            core_percent_at_115200=round(100 * per_octet * LINE_OCTETS_PER_S, 4))


def test_link_uplink_decode(benchmark):
    """Flight side: deframe, authenticate (HMAC-SHA256) and decode a command."""
    keys = KeyRing({1: KEY})
    wire = frame(CODEC.encode_tc("COMMAND", SAMPLES["COMMAND"], 0, spi=1, arsn=1, key=KEY))
    deframer = Deframer(D.max_packet_octets)

    def decode() -> str:
        (packet,) = deframer.feed(wire)
        tc = CODEC.authenticate_tc(packet, keys)
        return CODEC.command_of(tc, CODEC.decode_tc_fields(tc))[0].name

    assert benchmark(decode) == "JOB_SUBMIT"
    if (median := _median(benchmark)) is not None:
        benchmark.extra_info.update(packets_per_s=round(1 / median), frame_octets=len(wire),
                                    overhead_octets=len(wire) - _body_octets("COMMAND"),
                                    core_percent_at_115200=round(100 * median / len(wire) * LINE_OCTETS_PER_S, 4))
