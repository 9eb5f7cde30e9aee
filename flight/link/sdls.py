"""Command authentication in the manner of CCSDS SDLS (355.0-B-2), authentication-only suite.

A TC packet's user data is wrapped as

    | security header: SPI (2) | ARSN (8) | msgpack body | security trailer: MAC (16) |

SPI is the security parameter index (which key), ARSN the 64-bit anti-replay sequence number,
both big-endian. SDLS's IV and pad-length fields are absent: nothing is encrypted. The MAC is
HMAC-SHA256, truncated to its first 16 octets, over every octet of the packet before it:
primary header, time, security header and body. Covering the primary header binds the MAC to
the APID, so a valid body cannot be replayed under another packet kind.
"""
from __future__ import annotations

import hashlib
import hmac
import struct

SECURITY_HEADER = struct.Struct(">HQ")
MAC_OCTETS = 16


def compute_mac(key: bytes, covered: bytes) -> bytes:
    return hmac.new(key, covered, hashlib.sha256).digest()[:MAC_OCTETS]


def mac_matches(key: bytes, covered: bytes, mac: bytes) -> bool:
    return hmac.compare_digest(compute_mac(key, covered), mac)
