"""A job's result as it travels: zlib of one msgpack map whose keys are the dictionary's result
fields (dictionary.json "result", ICD section 8). The flight encodes it once when the job ends;
the ground decodes it after the result MAC has verified.

zlib, level 9: scripts/measure_result_compression.py measured 3.98x on model output against
3.97x for zstd level 19 and 3.68x for zstd level 3, and zlib needs no package on either side.
"""
from __future__ import annotations

import zlib
from typing import Any

import msgpack

from flight.link.dictionary import Dictionary, ValueCheckError, load_dictionary

_LEVEL = 9
# A result is at most n_ctx tokens of text; 16 MiB bounds what a hostile or broken result may
# inflate to (a zlib bomb) far above any honest one.
MAX_DECODED_OCTETS = 16 << 20


class ResultDecodeError(ValueError):
    """Result octets that are not a result of this dictionary; the message is one line."""


def encode_result(fields: dict[str, Any], dictionary: Dictionary | None = None) -> bytes:
    """The downlinked octets of a result; ValueCheckError if a field is missing or mistyped."""
    spec = (dictionary or load_dictionary()).result
    names = [f.name for f in spec.fields]
    if set(fields) != set(names):
        raise ValueCheckError(f"result fields: missing {sorted(set(names) - set(fields))}, "
                              f"unknown {sorted(set(fields) - set(names))}")
    for field in spec.fields:
        field.check(fields[field.name])
    return zlib.compress(msgpack.packb({n: fields[n] for n in names}, use_bin_type=True), _LEVEL)


def decode_result(data: bytes, dictionary: Dictionary | None = None) -> dict[str, Any]:
    """The fields of a result; ResultDecodeError if the octets are not one."""
    spec = (dictionary or load_dictionary()).result
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(data, MAX_DECODED_OCTETS)
    except zlib.error as exc:
        raise ResultDecodeError(f"result is not zlib data: {exc}") from None
    if inflater.unconsumed_tail or not inflater.eof:
        raise ResultDecodeError("result is truncated or inflates beyond "
                                f"{MAX_DECODED_OCTETS} octets")
    try:
        fields = msgpack.unpackb(raw, raw=False, strict_map_key=False)
    except Exception as exc:  # untrusted octets into a C parser: anything it raises means "not a result"
        raise ResultDecodeError(f"result is not msgpack: {type(exc).__name__}") from None
    if not isinstance(fields, dict):
        raise ResultDecodeError("result is not a msgpack map")
    for field in spec.fields:
        if field.name not in fields:
            raise ResultDecodeError(f"result has no {field.name}")
        try:
            field.check(fields[field.name])
        except ValueCheckError as exc:
            raise ResultDecodeError(f"result {exc}") from None
    return {f.name: fields[f.name] for f in spec.fields}
