"""Which compression for job results on the downlink: zlib or zstd, measured on model output.

Generates a few results with the default model (greedy and sampled, about 1 500 tokens in all),
then prints each one's size and the ratio zlib (levels 6, 9) and zstd (levels 3, 19, if the
`zstandard` package is installed) achieve on it, and the totals. Results are compressed one by
one, as the downlink would send them.

    .venv/bin/python scripts/measure_result_compression.py [--model PATH] [--tokens N]
"""
from __future__ import annotations

import argparse
import zlib

from flight.engine import Engine

PROMPTS = [
    ("Write a detailed essay about why satellites need radiation-tolerant computers.", 0.0),
    ("Explain, step by step, how a battery management system decides when to charge.", 0.8),
    ("The history of spaceflight began in", 0.8),
]


def compressors() -> dict[str, object]:
    found = {"zlib-6": lambda d: zlib.compress(d, 6), "zlib-9": lambda d: zlib.compress(d, 9)}
    try:
        import zstandard
    except ImportError:
        print("zstandard not installed: zlib only (pip install zstandard to compare)")
        return found
    for level in (3, 19):
        found[f"zstd-{level}"] = zstandard.ZstdCompressor(level=level).compress
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model")
    parser.add_argument("--tokens", type=int, default=500, help="tokens per result")
    args = parser.parse_args()
    methods = compressors()
    totals = dict.fromkeys(["raw", *methods], 0)
    with Engine.load(args.model) as engine:
        for prompt, temperature in PROMPTS:
            text = engine.generate(engine.tokenize(prompt), args.tokens, temperature, 40, 0.95, 7).text.encode()
            sizes = {name: len(compress(text)) for name, compress in methods.items()}
            totals["raw"] += len(text)
            for name, size in sizes.items():
                totals[name] += size
            print(f"T={temperature}: {len(text)} octets; " + ", ".join(
                f"{name} {len(text) / max(size, 1):.2f}x" for name, size in sizes.items()))
    print("all: " + ", ".join(f"{name} {totals['raw'] / totals[name]:.2f}x" for name in methods))


if __name__ == "__main__":
    main()
