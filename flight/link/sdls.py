"""Authentication in the manner of CCSDS SDLS (355.0-B-2), authentication-only suite.

A secured packet's user data (every TC kind, and CMD_RESPONSE on the downlink) is wrapped as

    | security header: SPI (2) | ARSN (8) | msgpack body | security trailer: MAC (16) |

SPI is the security parameter index (which key), ARSN the 64-bit anti-replay sequence number,
both big-endian. SDLS's IV and pad-length fields are absent: nothing is encrypted. The MAC is
HMAC-SHA256, truncated to its first 16 octets, over every octet of the packet before it:
primary header, time, security header and body, followed by associated data that is not sent.
Covering the primary header binds the MAC to the APID, so a valid body cannot be replayed under
another packet kind. A command has no associated data; a CMD_RESPONSE's is the MAC of the
command it answers, which ties the response to that one packet (an ARSN alone could repeat after
a recovery lowered a counter).

A whole job result is authenticated once, by result_mac(): the ground checks it after
reassembly, before it archives anything.
"""
from __future__ import annotations

import hashlib
import hmac
import struct

SECURITY_HEADER = struct.Struct(">HQ")
MAC_OCTETS = 16
_RESULT_DOMAIN = b"tokensat-result"
_RESULT_HEADER = struct.Struct(">II")


def compute_mac(key: bytes, covered: bytes, associated: bytes = b"") -> bytes:
    return hmac.new(key, covered + associated, hashlib.sha256).digest()[:MAC_OCTETS]


def mac_matches(key: bytes, covered: bytes, mac: bytes, associated: bytes = b"") -> bool:
    return hmac.compare_digest(compute_mac(key, covered, associated), mac)


def result_mac(key: bytes, job_id: int, data: bytes) -> bytes:
    """The MAC over a whole job result: domain | job_id | length | data."""
    digest = hmac.new(key, _RESULT_DOMAIN + _RESULT_HEADER.pack(job_id, len(data)), hashlib.sha256)
    digest.update(data)
    return digest.digest()[:MAC_OCTETS]
