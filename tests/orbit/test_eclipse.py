"""Eclipse events: ordering, plausible durations, edge precision, and two independent checks
(1 s stepping with a separately coded Sun and shadow: Vallado's cone geometry, and a cylinder)."""
from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from flight.orbit import EclipsePredictor, Satellite, find_eclipses, illumination_at, next_eclipse
from flight.orbit.eclipse import eclipse_intervals
from flight.orbit.shadow import EARTH_RADIUS_KM, SUN_RADIUS_KM
from flight.orbit.sun import sun_ra_dec
from tests.orbit.meeus import meeus_sun_vector_km
from tests.orbit.tles import ISS, make_tle

ISS_SAT = Satellite(ISS)
T0 = ISS_SAT.tle.epoch


def sso(date: datetime, ltan_offset_deg: float) -> Satellite:
    """A 600 km sun-synchronous orbit (97.79°) whose node is ltan_offset_deg east of the Sun."""
    return Satellite(make_tle(date, 97.79, sun_ra_dec(date)[0] + ltan_offset_deg, 14.91))


def check_ordering(events, horizon_start, horizon_s):
    prev_exit = None
    for e in events:
        if e.umbra_entry is None:
            assert e.umbra_exit is None
            assert e.penumbra_entry < e.penumbra_exit
        else:
            assert e.penumbra_entry < e.umbra_entry < e.umbra_exit < e.penumbra_exit
        if prev_exit is not None:
            assert prev_exit < e.penumbra_entry
        prev_exit = e.penumbra_exit
        assert e.penumbra_exit > horizon_start and e.penumbra_entry < horizon_start + timedelta(seconds=horizon_s)


def test_iss_eclipses_ordering_and_durations():
    events = find_eclipses(ISS_SAT, T0, 86400)
    check_ordering(events, T0, 86400)
    assert 15 <= len(events) <= 17  # 15.5 orbits a day, one eclipse each
    period = ISS_SAT.tle.period_s
    for e in events:
        assert 25 * 60 < e.umbra_s < 37 * 60  # ~36 min at β = 0 for 420 km, less at higher β
        for pen in ((e.umbra_entry - e.penumbra_entry).total_seconds(), (e.penumbra_exit - e.umbra_exit).total_seconds()):
            assert 5 < pen < 60
    for e1, e2 in zip(events, events[1:]):
        assert abs((e2.penumbra_entry - e1.penumbra_entry).total_seconds() - period) < 60


def test_edges_are_located_to_a_tenth_of_a_second():
    for e in find_eclipses(ISS_SAT, T0, 4 * 3600)[:2]:
        pe, ue, ux, px = (x.timestamp() for x in (e.penumbra_entry, e.umbra_entry, e.umbra_exit, e.penumbra_exit))
        assert illumination_at(ISS_SAT, pe - 0.15) == 1.0 and illumination_at(ISS_SAT, pe + 0.15) < 1.0
        assert illumination_at(ISS_SAT, ue - 0.15) > 0.0 and illumination_at(ISS_SAT, ue + 0.15) == 0.0
        assert illumination_at(ISS_SAT, ux - 0.15) == 0.0 and illumination_at(ISS_SAT, ux + 0.15) > 0.0
        assert illumination_at(ISS_SAT, px - 0.15) < 1.0 and illumination_at(ISS_SAT, px + 0.15) == 1.0
        mid = 0.5 * (pe + ue)
        assert 0.0 < illumination_at(ISS_SAT, mid) < 1.0


# --- independent computation: 1 s steps, Meeus' Sun (tests/orbit/meeus.py), Vallado's shadow ----

def independent_states(sat: Satellite, start: float, seconds: int):
    """Per second: (umbra?, penumbra-or-umbra?, cylinder?) from code that shares nothing with
    flight/orbit/{sun,shadow,eclipse}.py but the SGP4 positions.

    Shadow: Vallado, Fundamentals of Astrodynamics and Applications, algorithm SHADOW: the umbra
    and penumbra cones tangent to Sun and Earth, tested by the satellite's distance from the
    shadow axis (horizontal/vertical components), with the cone angles from the Sun's distance.
    """
    t = start + np.arange(seconds, dtype=float)
    r = sat.positions(t)
    umb = np.zeros(seconds, bool)
    pen = np.zeros(seconds, bool)
    cyl = np.zeros(seconds, bool)
    for i, ti in enumerate(t):
        sun = np.array(meeus_sun_vector_km(2440587.5 + (ti + 69.184) / 86400.0))
        dist = np.linalg.norm(sun)
        s_hat = sun / dist
        along = -(r[i] @ s_hat)  # distance behind the Earth along the anti-Sun axis
        if along <= 0:
            continue
        vert = np.linalg.norm(r[i] + along * s_hat)  # distance from the axis
        cyl[i] = vert < EARTH_RADIUS_KM
        a_pen = math.asin((SUN_RADIUS_KM + EARTH_RADIUS_KM) / dist)
        a_umb = math.asin((SUN_RADIUS_KM - EARTH_RADIUS_KM) / dist)
        pen_vert = math.tan(a_pen) * (EARTH_RADIUS_KM / math.sin(a_pen) + along)
        umb_vert = math.tan(a_umb) * (EARTH_RADIUS_KM / math.sin(a_umb) - along)
        pen[i] = vert <= pen_vert
        umb[i] = vert <= umb_vert
    return t, umb, pen, cyl


def edges(t, state):
    """(entries, exits): the first second inside, the first second outside."""
    d = np.diff(state.astype(int))
    return t[1:][d == 1], t[1:][d == -1]


@pytest.mark.parametrize("which", ["iss", "sso-noon"])
def test_umbra_and_penumbra_edges_against_an_independent_computation(which):
    sat = ISS_SAT if which == "iss" else sso(datetime(2025, 3, 1, tzinfo=timezone.utc), 0.0)
    start = sat.epoch_unix
    seconds = int(2.2 * sat.tle.period_s)
    t, umb, pen, cyl = independent_states(sat, start, seconds)
    ivals = [e for e in eclipse_intervals(sat, start, seconds) if e[0] > start + 1 and e[3] < start + seconds - 1]
    assert len(ivals) >= 2
    umb_in, umb_out = edges(t, umb)
    pen_in, pen_out = edges(t, pen)
    cyl_in, cyl_out = edges(t, cyl)
    for pe, ue, ux, px in ivals:
        nearest = lambda arr, x: arr[np.argmin(np.abs(arr - x))]  # noqa: E731
        # the criterion is 10 s; two conical models with Suns 0.01° apart agree to ~1 s
        assert abs(nearest(umb_in, ue) - ue) <= 2.0
        assert abs(nearest(umb_out, ux) - ux) <= 2.0
        assert abs(nearest(pen_in, pe) - pe) <= 2.0
        assert abs(nearest(pen_out, px) - px) <= 2.0
        # a cruder cylinder's edges fall between the penumbra and umbra edges, within ~10 s of the umbra's
        ci, co = nearest(cyl_in, ue), nearest(cyl_out, ux)
        assert pe - 1.0 <= ci <= ue + 1.0 and ux - 1.0 <= co <= px + 1.0
        assert abs(ci - ue) <= 10.0 and abs(co - ux) <= 10.0


def test_sun_synchronous_noon_midnight_orbit_has_an_eclipse_every_orbit():
    sat = sso(datetime(2025, 3, 1, tzinfo=timezone.utc), 0.0)
    events = find_eclipses(sat, sat.tle.epoch, 86400)
    check_ordering(events, sat.tle.epoch, 86400)
    assert 14 <= len(events) <= 16
    assert all(33 * 60 < e.umbra_s < 37 * 60 for e in events)  # β ≈ 0 at 600 km: ~35.5 min


def test_dawn_dusk_orbit_out_of_eclipse_season_has_none():
    date = datetime(2025, 12, 21, tzinfo=timezone.utc)
    sat = sso(date, 90.0)  # ascending node at 18:00 local time (Sentinel-1's orbit)
    assert find_eclipses(sat, date, 86400) == []
    assert next_eclipse(sat, date) == (math.inf, math.inf)
    assert EclipsePredictor(sat).at(date) == (False, math.inf, math.inf)


def test_dawn_dusk_orbit_in_eclipse_season():
    date = datetime(2025, 6, 21, tzinfo=timezone.utc)
    events = find_eclipses(sso(date, 90.0), date, 86400)
    assert len(events) >= 14
    assert all(15 * 60 < e.umbra_s < 25 * 60 for e in events)  # Sentinel-1 sees ≤ ~20 min at solstice


def test_grazing_penumbral_passes_are_found_with_a_coarse_step():
    # 3 May 2025: the first days of the dawn-dusk orbit's season, penumbra-only passes < 2 min
    date = datetime(2025, 5, 3, tzinfo=timezone.utc)
    sat = sso(date, 90.0)
    fine = find_eclipses(sat, date, 86400, step_s=1.0)
    coarse = find_eclipses(sat, date, 86400, step_s=60.0)
    assert fine and all(e.umbra_entry is None for e in fine)
    assert any(e.duration_s < 60 for e in fine)
    assert len(coarse) == len(fine)
    for f, c in zip(fine, coarse):
        assert abs((f.penumbra_entry - c.penumbra_entry).total_seconds()) < 0.2
        assert abs((f.penumbra_exit - c.penumbra_exit).total_seconds()) < 0.2
    assert fine[0].as_dict()["umbra_entry"] is None


def test_an_eclipse_in_progress_at_the_start_is_returned_whole():
    first = find_eclipses(ISS_SAT, T0, 3 * 3600)[0]
    mid = first.umbra_entry + timedelta(minutes=5)
    again = find_eclipses(ISS_SAT, mid, 3600)[0]
    assert abs((again.penumbra_entry - first.penumbra_entry).total_seconds()) < 0.2
    assert again.penumbra_entry < mid


def test_next_eclipse_in_sunlight_and_in_eclipse():
    e = find_eclipses(ISS_SAT, T0, 3 * 3600)[0]
    pe, ue, ux, px = (x.timestamp() for x in (e.penumbra_entry, e.umbra_entry, e.umbra_exit, e.penumbra_exit))
    before = pe - 100.0
    entry, exit_ = next_eclipse(ISS_SAT, before)
    assert entry == pytest.approx(100.0, abs=0.2) and exit_ == pytest.approx(px - before, abs=0.2)
    inside = ue + 60.0
    entry, exit_ = next_eclipse(ISS_SAT, inside)
    assert entry == 0.0 and exit_ == pytest.approx(px - inside, abs=0.2)
    entry, exit_ = next_eclipse(ISS_SAT, before, edge="umbra")
    assert entry == pytest.approx(ue - before, abs=0.2) and exit_ == pytest.approx(ux - before, abs=0.2)
    with pytest.raises(ValueError):
        next_eclipse(ISS_SAT, before, edge="moon")


def test_predictor_matches_next_eclipse_and_the_illumination():
    pred = EclipsePredictor(ISS_SAT, horizon_s=4 * 3600)
    start = T0.timestamp()
    for k in range(0, 10 * 3600, 397):  # crosses several cache windows
        t = start + k
        in_ecl, entry, exit_ = pred.at(t)
        ref = next_eclipse(ISS_SAT, t, horizon_s=4 * 3600)
        assert entry == pytest.approx(ref[0], abs=0.2) and exit_ == pytest.approx(ref[1], abs=0.2)
        assert in_ecl == (entry == 0.0)
        assert in_ecl == (illumination_at(ISS_SAT, t) < 1.0)
        assert 0 <= entry < exit_ < 2 * ISS_SAT.tle.period_s
    assert pred.at(start)[1:] == pytest.approx(next_eclipse(ISS_SAT, start), abs=0.2)  # back in time


def test_accepts_tle_text_and_validates_arguments():
    assert find_eclipses(ISS, T0, 3600) == find_eclipses(ISS_SAT, T0, 3600)
    with pytest.raises(ValueError):
        find_eclipses(ISS_SAT, T0, 3600, step_s=120)
    with pytest.raises(ValueError):
        find_eclipses(ISS_SAT, T0, 3600, tol_s=5)
