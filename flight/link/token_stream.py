"""A job's token stream cut into JOB_TOKENS packets that each fit, whatever the token text: as
many whole tokens as fit a packet; a token whose text alone does not fit is sent in pieces cut
at character boundaries, the first with the token's id, the rest with no id and the same
first_index (the ground joins them in arrival order)."""
from __future__ import annotations

from typing import Any

import msgpack

# Room in a JOB_TOKENS packet for everything but the token ids and text: headers, CRC, the
# body's array, integers and the text's msgpack header (the tests check the real encoding).
OVERHEAD = 40

def token_packets(job_id: int, first_index: int, tokens: list[tuple[int, str]],
                  max_packet_octets: int) -> list[dict[str, Any]]:
    """JOB_TOKENS fields for tokens, each packet within max_packet_octets."""
    room = max_packet_octets - OVERHEAD
    packets: list[dict[str, Any]] = []
    ids: list[int] = []
    text = b""
    start = first_index

    def add(first: int, token_ids: list[int], data: bytes) -> None:
        packets.append({"job_id": job_id, "first_index": first, "token_ids": token_ids, "text": data.decode()})

    def size(token_ids: list[int], octets: int) -> int:
        return len(msgpack.packb(token_ids)) + octets

    for index, (token_id, piece) in enumerate(tokens, first_index):
        encoded = piece.encode("utf-8", "replace")
        if ids and size(ids + [token_id], len(text) + len(encoded)) > room:
            add(start, ids, text)
            ids, text = [], b""
        if size(ids + [token_id], len(text) + len(encoded)) <= room:
            if not ids:
                start = index
            ids.append(token_id)
            text += encoded
            continue
        # One token's text larger than a packet: pieces cut at character boundaries, the first
        # with the token's id, the rest with none.
        piece_ids = [token_id]
        while size(piece_ids, len(encoded)) > room:
            cut = room - size(piece_ids, 0)
            while (encoded[cut] & 0xC0) == 0x80:  # a UTF-8 continuation octet: cut before its character
                cut -= 1
            add(index, piece_ids, encoded[:cut])
            piece_ids, encoded = [], encoded[cut:]
        add(index, piece_ids, encoded)
    if ids:
        add(start, ids, text)
    return packets
