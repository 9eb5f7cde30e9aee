from fastcrc import crc16
from hypothesis import given, strategies as st

from flight.link.crc16 import crc16_ccitt_false


def test_check_value_of_the_catalogue():
    # The "check" entry of CRC-16/CCITT-FALSE in the CRC catalogue.
    assert crc16_ccitt_false(b"123456789") == 0x29B1


def test_empty_input_leaves_the_initial_value():
    assert crc16_ccitt_false(b"") == 0xFFFF


def test_continuation_equals_one_pass():
    assert crc16_ccitt_false(b"56789", crc16_ccitt_false(b"1234")) == crc16_ccitt_false(b"123456789")


@given(st.binary(max_size=4096))
def test_matches_an_independent_implementation(data):
    # fastcrc's ibm_3740 is the catalogue's other name for CCITT-FALSE.
    assert crc16_ccitt_false(data) == crc16.ibm_3740(data)
