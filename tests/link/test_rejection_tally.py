"""The rejection summary's tally: one summary per period at most, none without rejections, and
a suppressed count that survives CMD_CLEAR_COUNTERS zeroing the counter it reads."""
from flight.link.rejection_tally import RejectionTally


def test_one_summary_per_period_with_the_last_reason():
    tally = RejectionTally()
    assert tally.take_if_due(1e9, 10.0, 0) is None  # nothing rejected: nothing to say
    for reason in ("BAD_MAC", "BAD_MAC", "REPLAY"):
        tally.add(reason)
    first = tally.take_if_due(1e9, 10.0, 40)
    assert first == (3, 40, "REPLAY")
    tally.add("BAD_CRC")
    assert tally.take_if_due(1e9 + 5, 10.0, 45) is None  # within the period
    assert tally.take_if_due(1e9 + 10, 10.0, 45) == (1, 5, "BAD_CRC")


def test_cleared_counter_does_not_wrap_the_suppressed_count():
    tally = RejectionTally()
    tally.add("BAD_MAC")
    tally.take_if_due(1e9, 10.0, 100)
    tally.add("BAD_MAC")
    assert tally.take_if_due(1e9 + 10, 10.0, 7) == (1, 7, "BAD_MAC")  # zeroed, then 7 more
