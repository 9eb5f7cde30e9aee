"""GroundClient without a flight: the onboard clock it keeps from TM packets (for deadlines), and
what submit_job puts on the wire."""
from __future__ import annotations

import inspect
import threading
import time

import pytest

from flight.link.codec import PacketCodec
from flight.link.dictionary import ValueCheckError, load_dictionary
from flight.link.framing import frame
from flight.link.onboard_time import CucTime
from ground.client import GroundClient

D = load_dictionary()
CODEC = PacketCodec(D)
SUBMIT = D.command_by_name["JOB_SUBMIT"]


def hk_at(onboard: float) -> bytes:
    return frame(CODEC.encode_tm("HK", {"channels": {}}, 0, time=CucTime.from_unix(onboard)))


def test_onboard_time_is_the_latest_tm_time_plus_the_time_since(client):
    assert not client.onboard_clock_known
    assert abs(client.onboard_time() - time.time()) < 1.0  # nothing heard yet: the local clock
    client._on_bytes(hk_at(1_000_000.0))  # a node whose clock is far behind ours
    assert client.onboard_clock_known
    time.sleep(0.2)
    now = client.onboard_time()
    assert 1_000_000.2 <= now < 1_000_001.0
    client._on_bytes(hk_at(2_000_000.5))  # the latest packet counts
    assert 2_000_000.5 <= client.onboard_time() < 2_000_001.0


def test_onboard_time_waits_for_a_first_packet(client):
    threading.Timer(0.2, client._on_bytes, args=(hk_at(5_000_000.0),)).start()
    assert 5_000_000.0 <= client.onboard_time(wait=5.0) < 5_000_001.0


def test_onboard_time_falls_back_to_the_local_clock_after_the_wait(client):
    started = time.monotonic()
    assert abs(client.onboard_time(wait=0.2) - time.time()) < 1.0
    assert time.monotonic() - started >= 0.2


def test_submit_job_defaults_are_the_dictionary_defaults():
    parameters = inspect.signature(GroundClient.submit_job).parameters
    for arg in SUBMIT.args:
        if arg.optional:
            assert parameters[arg.name].kind is inspect.Parameter.KEYWORD_ONLY
            assert parameters[arg.name].default == arg.default, arg.name


@pytest.mark.parametrize("options, wire", [
    ({}, []),
    ({"chat": False, "temperature": 0.0, "top_p": 1.0}, []),  # at their defaults: not sent
    ({"stream": True}, [False, True]),
    ({"priority": 3}, [False, False, 3]),
    ({"seed": 5}, [False, False, 0, 0, 0, 0, 1, 5]),  # positional: the defaults before it go too
])
def test_submit_job_sends_only_what_differs_from_the_defaults(client, options, wire):
    sent = []

    def capture(kind, fields, arsn=None):
        sent.append(fields["args"])
        return 1, client.history_index()

    client._send_tc = capture
    with pytest.raises(TimeoutError):
        client.submit_job("why orbit?", 4, job_id=9, timeout=0.01, attempts=1, **options)
    assert sent == [[9, 4, "why orbit?", *wire]]
    assert {name: value for name, value in client.archive.job(9).items() if name in options} == options


def test_submit_job_checks_before_it_records_or_sends(client):
    client._send_tc = lambda *args, **kwargs: pytest.fail("sent")
    for bad in ({"priority": 101}, {"top_p": 0.0}, {"temperature": float("nan")}, {"stream": 1}):
        with pytest.raises(ValueCheckError):
            client.submit_job("x", 4, **bad)
    with pytest.raises(ValueCheckError):
        client.submit_job("x" * 1801, 4)
    assert client.archive.query("SELECT count(*) FROM jobs") == [(0,)]
    assert client.archive.query("SELECT count(*) FROM counters WHERE name = 'job_id'") == [(0,)]  # no id used up


def test_received_since_gives_each_packet_once_in_order(client):
    for t in (1_000_000.0, 1_000_001.0):
        client._on_bytes(hk_at(t))
    first, index = client.received_since(0)
    assert [item.packet.time.to_unix() for item in first] == [1_000_000.0, 1_000_001.0] and index == 2
    client._on_bytes(hk_at(1_000_002.0))
    more, index = client.received_since(index)
    assert [item.packet.time.to_unix() for item in more] == [1_000_002.0] and index == 3
    assert client.received_since(index) == ([], 3)
