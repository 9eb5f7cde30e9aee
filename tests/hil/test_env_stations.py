"""Ground stations and contact windows: edges within 1 s (the issue's bound), and the passes
cross-checked against skyfield's find_events for the same TLE and station."""
from __future__ import annotations

import math
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flight.orbit import Satellite
from hil.env.environment import DEFAULT_TLE
from hil.env.stations import Station, contact_windows, elevation_deg, gmst_rad
from tests.orbit.tles import ISS

SAT = Satellite(DEFAULT_TLE)
T0 = SAT.epoch_unix
STATIONS = [
    Station("svalsat", 78.2297, 15.4077, 500.0, 5.0),
    Station("berlin", 52.5125, 13.3269, 60.0, 10.0),
    Station("hartebeesthoek", -25.8897, 27.6853, 1415.0, 0.0),
]


def elevation_at(sat: Satellite, station: Station, t: float) -> float:
    return float(elevation_deg(station, sat.position(t), t))


@pytest.mark.parametrize("station", STATIONS, ids=lambda s: s.name)
def test_rise_and_set_are_located_to_within_a_second(station):
    windows = contact_windows(SAT, station, T0, T0 + 86400)
    assert len(windows) >= 2
    for w in windows:
        assert w.rise < w.culmination < w.set
        assert elevation_at(SAT, station, w.rise - 0.5) < station.mask_deg < elevation_at(SAT, station, w.rise + 0.5)
        assert elevation_at(SAT, station, w.set - 0.5) > station.mask_deg > elevation_at(SAT, station, w.set + 0.5)
        peak = elevation_at(SAT, station, w.culmination)
        assert peak == pytest.approx(w.max_elevation_deg, abs=1e-6)
        assert peak >= elevation_at(SAT, station, w.culmination - 5) and peak >= elevation_at(SAT, station, w.culmination + 5)
    for a, b in zip(windows, windows[1:]):
        assert a.set < b.rise


def test_a_pass_in_progress_at_the_start_keeps_its_rise():
    first = contact_windows(SAT, STATIONS[0], T0, T0 + 86400)[0]
    again = contact_windows(SAT, STATIONS[0], first.culmination, first.culmination + 60)
    assert len(again) == 1 and again[0].rise == pytest.approx(first.rise, abs=0.02)


def test_a_pass_grazing_the_mask_between_samples_is_found():
    # a station's mask set just under a pass's peak: above it for only a few seconds
    st0 = STATIONS[1]
    w = max(contact_windows(SAT, st0, T0, T0 + 86400), key=lambda w: w.max_elevation_deg)
    grazing = Station("grazing", st0.lat_deg, st0.lon_deg, st0.alt_m, w.max_elevation_deg - 0.001)
    found = [g for g in contact_windows(SAT, grazing, w.rise, w.set) if abs(g.culmination - w.culmination) < 5]
    assert len(found) == 1 and 0 < found[0].duration_s < 10


@settings(max_examples=30, deadline=None)
@given(lat=st.floats(-90, 90), lon=st.floats(-180, 180), dt=st.floats(0, 86400))
def test_elevation_is_an_angle_and_zenith_is_ninety(lat, lon, dt):
    station = Station("s", lat, lon, 0.0)
    el = elevation_at(SAT, station, T0 + dt)
    assert -90.0 <= el <= 90.0
    # a point straight above the station along its normal is at the zenith (rotate it to TEME)
    up = station.ecef_km + 500.0 * station.up
    th = float(gmst_rad(T0 + dt))
    teme = [math.cos(th) * up[0] - math.sin(th) * up[1], math.sin(th) * up[0] + math.cos(th) * up[1], up[2]]
    assert float(elevation_deg(station, teme, T0 + dt)) == pytest.approx(90.0, abs=1e-4)


def test_station_refuses_bad_values_in_one_line():
    for kw in ({"lat_deg": 91.0}, {"lon_deg": math.nan}, {"mask_deg": 90.0}, {"alt_m": 1e6}):
        args = {"lat_deg": 0.0, "lon_deg": 0.0, **kw}
        with pytest.raises(ValueError) as bad:
            Station("x", **args)
        assert "\n" not in str(bad.value)


# --- cross-check against skyfield (test-only dependency; nothing is downloaded: the timescale is
# skyfield's built-in one and find_events needs no planetary ephemeris) -----------------------

@pytest.mark.parametrize("tle,station", [(DEFAULT_TLE, STATIONS[0]), (DEFAULT_TLE, STATIONS[1]), (ISS, STATIONS[2])],
                         ids=["sso-svalsat", "sso-berlin", "iss-hartebeesthoek"])
def test_passes_agree_with_skyfield_find_events(tle, station):
    skyfield_api = pytest.importorskip("skyfield.api")
    ts = skyfield_api.load.timescale(builtin=True)
    lines = [ln for ln in tle.splitlines() if ln.strip()]
    sky_sat = skyfield_api.EarthSatellite(lines[-2], lines[-1], lines[0], ts)
    sat = Satellite(tle)
    start, end = sat.epoch_unix, sat.epoch_unix + 86400
    topos = skyfield_api.wgs84.latlon(station.lat_deg, station.lon_deg, elevation_m=station.alt_m)
    at = lambda u: ts.from_datetime(datetime.fromtimestamp(u, tz=timezone.utc))  # noqa: E731
    times, kinds = sky_sat.find_events(topos, at(start), at(end), altitude_degrees=station.mask_deg)
    events = [(float(t.utc_datetime().timestamp()), int(k)) for t, k in zip(times, kinds)]
    # whole passes only (find_events cuts one in progress at either end), each rise-culminate-set
    ours = [w for w in contact_windows(sat, station, start, end) if w.rise > start and w.set < end]
    theirs = []
    for i in range(len(events) - 2):
        if [k for _, k in events[i:i + 3]] == [0, 1, 2]:
            theirs.append(tuple(t for t, _ in events[i:i + 3]))
    assert len(ours) == len(theirs) >= 2
    for w, (rise, culm, set_) in zip(ours, theirs):
        assert abs(w.rise - rise) < 2.0 and abs(w.set - set_) < 2.0
        # the peak is flat: its time is ill-conditioned, its elevation is not
        assert abs(w.culmination - culm) < 10.0
        el = (sky_sat - topos).at(at(culm)).altaz()[0].degrees
        assert w.max_elevation_deg == pytest.approx(el, abs=0.05)
