"""CRC-16/CCITT-FALSE, the trailer of every packet on the link.

Polynomial 0x1021, initial value 0xFFFF, no reflection, no final XOR; check("123456789") = 0x29B1.
binascii.crc_hqx is exactly this polynomial without reflection, so seeding it with 0xFFFF gives
CCITT-FALSE in C at no dependency cost.
"""
from binascii import crc_hqx

CRC_INIT = 0xFFFF


def crc16_ccitt_false(data: bytes, crc: int = CRC_INIT) -> int:
    """CRC of data; pass a previous result as crc to continue over several pieces."""
    return crc_hqx(data, crc)
