"""TLE_UPLOAD and the onboard eclipse prediction (flight/executive/orbit_service.py): a good TLE
is stored and predicts what flight/orbit's own find_eclipses finds, a bad one is refused with one
line and changes nothing, the TLE survives a restart, one that SGP4 can no longer propagate is
one fault and no prediction, and the prediction window is renewed off the calling thread."""
from __future__ import annotations

import threading
from datetime import datetime, timezone

import pytest

from flight.executive.orbit_service import OrbitService
from flight.link.dictionary import load_dictionary
from flight.link.service import CommandFailure, CommandOrigin
from flight.orbit import eclipse, find_eclipses, parse_tle
from flight.orbit.sun import sun_ra_dec
from flight.store.onboard_db import OnboardDb
from flight.store.tle_store import PersistedTle
from tests.orbit.tles import make_tle, with_checksum

EPOCH = datetime(2026, 3, 1, 6, 0, tzinfo=timezone.utc)
# ISS-like, its node at the Sun's right ascension: an eclipse every orbit
TLE = make_tle(EPOCH, 51.6, sun_ra_dec(EPOCH)[0], 15.5, satnum=48001, name="TOKENSAT-1")
UPLOAD = load_dictionary().command_by_name["TLE_UPLOAD"]
ORIGIN = CommandOrigin(spi=1, arsn=1)


def decaying(bstar: str = " 10000-1") -> str:
    """A 16.2 rev/day TLE with enough drag that SGP4 gives up about 2 days after its epoch."""
    _, l1, l2 = make_tle(EPOCH, 51.6, 10.0, 16.2, satnum=48002).splitlines()
    return with_checksum(l1[:53] + bstar + l1[61:68]) + "\n" + l2 + "\n"


class Clock:
    def __init__(self, t: float):
        self.t = t

    def __call__(self) -> float:
        return self.t


class Node:
    """The service as the node wires it: its database, its events and faults recorded."""

    def __init__(self, path, t: float):
        self.db = OnboardDb(path)
        self.clock = Clock(t)
        self.events: list[tuple[str, dict]] = []
        self.faults: list[tuple[str, str]] = []
        self.orbit = OrbitService(PersistedTle(self.db), lambda name, **args: self.events.append((name, args)),
                                  lambda kind, detail: self.faults.append((kind, detail)), clock=self.clock)

    def upload(self, text: str) -> dict:
        return self.upload_args(lines(text))

    def upload_args(self, values: list[str]) -> dict:
        """TLE_UPLOAD as the link runs it: arguments checked by the dictionary, defaults filled in."""
        return self.orbit.handlers()["TLE_UPLOAD"](UPLOAD.check_args(values), ORIGIN)


@pytest.fixture
def node(tmp_path):
    n = Node(tmp_path / "onboard.sqlite", EPOCH.timestamp() + 3600)
    yield n
    n.db.close()


def expected(tle_text: str, t: float) -> tuple[bool, float, float]:
    """(in eclipse, to entry, to exit) at t from flight/orbit's find_eclipses."""
    for e in find_eclipses(tle_text, t, 4 * 3600):
        entry, exit_ = e.penumbra_entry.timestamp(), e.penumbra_exit.timestamp()
        if exit_ > t:
            return (True, 0.0, exit_ - t) if entry <= t else (False, entry - t, exit_ - t)
    raise AssertionError("no eclipse in 4 h")


def test_an_uploaded_tle_is_stored_reported_and_predicts_what_find_eclipses_finds(node):
    assert node.orbit.at(node.clock()) is None and node.orbit.channels() == {}
    assert node.upload(TLE) == {"norad_id": "48001", "epoch": "2026-03-01T06:00:00Z"}
    assert node.events == [("ORBIT_TLE_LOADED", {"norad_id": "48001", "satellite": "TOKENSAT-1",
                                                 "epoch": "2026-03-01T06:00:00Z", "age_d": 0.04, "origin": "uplink"})]
    assert parse_tle(PersistedTle(node.db).load()) == parse_tle(TLE)
    assert node.orbit.channels() == {"ORBIT_TLE_AGE_D": pytest.approx(1 / 24)}
    start = node.clock()
    seen = set()
    for minutes in range(0, 3 * 95, 7):  # three orbits: sunlight and eclipse both
        node.clock.t = start + minutes * 60
        got, want = node.orbit.at(node.clock()), expected(TLE, node.clock())
        assert got[0] == want[0] and got[1:] == pytest.approx(want[1:], abs=0.2)
        seen.add(got[0])
    assert seen == {True, False} and node.faults == []


def lines(text: str) -> list[str]:
    """TLE_UPLOAD's arguments for a TLE's text: line 1, line 2, then the name if it has one."""
    found = text.strip().splitlines()
    return found[-2:] + found[:-2]


OTHER = make_tle(EPOCH, 51.6, 0.0, 15.5, satnum=48003)
BAD = {
    "checksum": (lambda: lines(TLE.replace("15.50000000", "15.50000001")), "TLE line 2: checksum is"),
    "line 1 twice": (lambda: [lines(TLE)[0]] * 2, "TLE line 2 does not start with '2 '"),
    "inclination": (lambda: lines(make_tle(EPOCH, 181.0, 0.0, 15.5)), "inclination (deg) 181.0 is out of range"),
    "two satellites": (lambda: [lines(TLE)[0], lines(OTHER)[1]], "different catalogue numbers"),
    "name of two lines": (lambda: lines(TLE)[:2] + ["TOKENSAT\nSAT"], "must have 2 lines (or 3 with a name), got 4"),
    "decays before now": (lambda: lines(decaying()), "cannot be propagated from now"),
}


@pytest.mark.parametrize("case", BAD)
def test_a_bad_tle_is_refused_with_one_line_and_changes_nothing(node, case):
    values, message = BAD[case][0](), BAD[case][1]
    node.upload(TLE)
    before = (node.orbit.tle, PersistedTle(node.db).load(), len(node.events))
    node.clock.t = EPOCH.timestamp() + 2 * 86400  # where the decaying TLE no longer propagates
    with pytest.raises(CommandFailure) as refused:
        node.upload_args(values)
    assert refused.value.reason == "BAD_ARGUMENT" and message in refused.value.detail, refused.value.detail
    assert "\n" not in refused.value.detail
    assert (node.orbit.tle, PersistedTle(node.db).load(), len(node.events)) == before
    assert node.orbit.at(node.clock()) is not None


def test_an_overlong_line_is_refused_by_the_dictionary_before_the_handler():
    from flight.link.dictionary import ValueCheckError

    with pytest.raises(ValueCheckError, match="at most 80"):
        UPLOAD.check_args(["1" * 81, "2"])


def test_the_tle_survives_a_restart(tmp_path):
    first = Node(tmp_path / "onboard.sqlite", EPOCH.timestamp() + 600)
    first.upload(TLE)
    first.db.close()
    second = Node(tmp_path / "onboard.sqlite", EPOCH.timestamp() + 7200)
    second.orbit.restore()
    assert second.orbit.tle == parse_tle(TLE)
    assert [(n, a["origin"], a["norad_id"]) for n, a in second.events] == [("ORBIT_TLE_LOADED", "onboard store", "48001")]
    got, want = second.orbit.at(second.clock()), expected(TLE, second.clock())
    assert got[0] == want[0] and got[1:] == pytest.approx(want[1:], abs=0.2)
    second.db.close()


def test_a_node_without_a_stored_tle_restores_nothing(node):
    node.orbit.restore()
    assert node.orbit.tle is None and node.events == [] and node.faults == []


def test_a_stored_tle_that_can_no_longer_fly_is_one_fault_and_keeps_its_age(tmp_path):
    first = Node(tmp_path / "onboard.sqlite", EPOCH.timestamp())
    first.upload(decaying())
    first.db.close()
    later = Node(tmp_path / "onboard.sqlite", EPOCH.timestamp() + 5 * 86400)  # the node was off for days
    later.orbit.restore()
    assert later.orbit.at(later.clock()) is None and later.events == []
    assert [k for k, _ in later.faults] == ["orbit"] and "48002 unusable" in later.faults[0][1]
    assert later.orbit.faults == 1 and later.orbit.channels() == {"ORBIT_TLE_AGE_D": pytest.approx(5.0)}
    later.db.close()


def join_window_threads() -> None:
    for thread in threading.enumerate():
        if thread.name == "orbit window":
            thread.join(10)


def test_a_tle_that_stops_propagating_in_flight_is_reported_once(node):
    node.clock.t = EPOCH.timestamp()
    node.upload(decaying())
    assert node.orbit.at(node.clock()) is not None
    node.clock.t += 3 * 86400
    for _ in range(3):
        assert node.orbit.at(node.clock()) is None
    join_window_threads()  # the renewal it started fails too: still one fault
    assert [k for k, _ in node.faults] == ["orbit"] and node.orbit.faults == 1
    node.upload(TLE)  # a fresh TLE: predicting again
    assert node.orbit.at(node.clock()) is not None


def test_the_window_is_renewed_off_the_calling_thread(node, monkeypatch):
    renew_at = node.clock() + 0.3 * node.orbit.horizon_s  # past a quarter of the window
    want = expected(TLE, renew_at)
    computed_on: list[str] = []
    compute = eclipse.eclipse_intervals

    def recording(*args, **kwargs):
        computed_on.append(threading.current_thread().name)
        return compute(*args, **kwargs)

    monkeypatch.setattr(eclipse, "eclipse_intervals", recording)
    node.upload(TLE)
    assert computed_on == [threading.current_thread().name]  # the command's thread, before it completes
    node.clock.t = renew_at
    got = node.orbit.at(node.clock())
    join_window_threads()
    assert computed_on[1:] == ["orbit window"]
    assert got[0] == want[0] and got[1:] == pytest.approx(want[1:], abs=0.2)
    for _ in range(40):  # the rest of the renewed window's first quarter: answered from it
        node.clock.t += 0.2 * node.orbit.horizon_s / 40
        node.orbit.at(node.clock())
    assert computed_on[1:] == ["orbit window"]
