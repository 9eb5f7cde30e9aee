"""The composed environment: illumination in [0, 1], eclipse and contact as stepped agree with
the windows and with an independent shadow computation (tests/orbit: Meeus' Sun, Vallado's
cones), sub-stepping, upsets drained, and the scenario table's one-line errors."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flight.orbit import Satellite
from hil.env.environment import DEFAULT_TLE, EnvConfig, Environment
from hil.env.orbit import NO_EVENT_S
from tests.orbit.test_eclipse import edges, independent_states, sso

SAT = Satellite(DEFAULT_TLE)
T0 = SAT.epoch_unix
CONFIG = EnvConfig()


def test_stepped_umbra_edges_agree_with_an_independent_computation_within_10_s():
    env = Environment(CONFIG, T0)
    seconds = int(2.2 * SAT.tle.period_s)
    dark = np.array([env.step(1.0).illumination == 0.0 for _ in range(seconds)])
    t = T0 + 1.0 + np.arange(seconds)
    _, umb, _, _ = independent_states(SAT, T0 + 1.0, seconds)
    ours_in, ours_out = edges(t, dark)
    ref_in, ref_out = edges(t, umb)
    assert len(ref_in) >= 2 and len(ours_in) == len(ref_in) and len(ours_out) == len(ref_out)
    assert np.max(np.abs(ours_in - ref_in)) <= 10.0 and np.max(np.abs(ours_out - ref_out)) <= 10.0
    # what it actually achieves (1 s steps on both sides, Suns 0.01° apart)
    assert np.max(np.abs(ours_in - ref_in)) <= 2.0 and np.max(np.abs(ours_out - ref_out)) <= 2.0


@settings(max_examples=20, deadline=None)
@given(start=st.floats(0.0, 3 * 86400.0), dts=st.lists(st.floats(0.0, 7.0), min_size=1, max_size=40))
def test_illumination_is_in_range_and_eclipse_timing_is_consistent(start, dts):
    env = Environment(CONFIG, T0 + start)
    for dt in dts:
        s = env.step(dt)
        assert 0.0 <= s.illumination <= 1.0
        assert s.in_eclipse == (s.illumination < 1.0) == (s.eclipse_entry_in_s == 0.0)
        assert 0.0 <= s.eclipse_entry_in_s < s.eclipse_exit_in_s < 2 * SAT.tle.period_s
        assert (s.solar_w == 0.0) == (s.illumination == 0.0)


def test_an_eclipse_in_progress_counts_down_to_its_exit_and_timing_is_one_orbit_ahead():
    env = Environment(CONFIG, T0)
    s = env.state
    entry = s.eclipse_entry_in_s
    s = env.step(entry + 60.0)  # one 60 s step over the entry, sub-stepped
    assert s.in_eclipse and s.eclipse_entry_in_s == 0.0
    exit_ = s.eclipse_exit_in_s
    s2 = env.step(100.0)
    assert s2.eclipse_exit_in_s == pytest.approx(exit_ - 100.0, abs=1e-6)
    s3 = env.step(exit_)
    assert not s3.in_eclipse and 0 < s3.eclipse_entry_in_s < SAT.tle.period_s


def test_dawn_dusk_orbit_out_of_season_reports_no_eclipse_with_finite_numbers():
    from datetime import datetime, timezone
    sat = sso(datetime(2025, 12, 21, tzinfo=timezone.utc), 90.0)
    env = Environment(EnvConfig(tle=sat.tle.text()), sat.epoch_unix)
    s = env.step(1.0)
    assert s.illumination == 1.0 and s.eclipse_entry_in_s == s.eclipse_exit_in_s == NO_EVENT_S


def test_contact_as_stepped_matches_the_windows_to_a_second():
    env = Environment(CONFIG, T0)
    windows = env.contact_windows(T0, T0 + 3 * 3600)
    assert windows
    for _ in range(3 * 3600):
        s = env.step(1.0)
        inside = [w for w in windows if w.rise <= s.t < w.set]
        assert s.contact == bool(inside)
        if inside:
            assert s.station == "svalsat" and s.elevation_deg >= CONFIG.stations[0].mask_deg - 1e-3
        else:
            assert s.station is None and s.elevation_deg < CONFIG.stations[0].mask_deg + 1e-3


def test_a_long_step_is_sub_stepped_like_one_second_steps():
    a, b = Environment(CONFIG, T0), Environment(CONFIG, T0)
    a.set_compute_power(15.0)
    b.set_compute_power(15.0)
    sa = a.step(600.0)
    for _ in range(600):
        sb = b.step(1.0)
    assert sa.t == pytest.approx(sb.t) and sa.battery_wh == pytest.approx(sb.battery_wh, abs=1e-9)
    assert sa.board_c == pytest.approx(sb.board_c, abs=1e-9) and sa.compute_w == 15.0


def test_upsets_are_seeded_in_their_step_and_drained():
    cfg = EnvConfig(seu_rate_per_bit_day=1e-2, weights_octets=100_000_000)  # a fierce storm: ~93 upsets a s
    a, b = Environment(cfg, T0, seed=7), Environment(cfg, T0, seed=7)
    a.step(2.0)
    ups = a.due_upsets()
    b.step(2.0)
    assert ups == b.due_upsets() and a.due_upsets() == []
    assert 100 < len(ups) < 300
    assert all(T0 <= u.t < T0 + 2.0 and 0 <= u.offset < 100_000_000 and 0 <= u.bit <= 7 for u in ups)
    assert [u.t for u in ups] == sorted(u.t for u in ups)
    a.set_seu_rate(0.0)
    a.step(10.0)
    assert a.due_upsets() == []


def test_from_dict_builds_a_config_and_refuses_bad_tables_in_one_line(tmp_path):
    tle = tmp_path / "sat.tle"
    tle.write_text(DEFAULT_TLE)
    cfg = EnvConfig.from_dict({
        "tle_file": str(tle), "battery_capacity_wh": 80, "weights_octets": 1000,
        "stations": [{"name": "berlin", "lat_deg": 52.5, "lon_deg": 13.3, "alt_m": 60, "mask_deg": 10}],
    })
    assert cfg.battery_capacity_wh == 80.0 and cfg.weights_octets == 1000 and cfg.stations[0].mask_deg == 10.0
    bad = [
        {"battery_capacity": 80},
        {"battery_soc0": 1.5},
        {"battery_soc0": True},
        {"bus_load_w": "8"},
        {"weights_octets": 1.5},
        {"array_pointing": "moon"},
        {"tle": "1 nonsense\n2 nonsense"},
        {"tle_file": str(tmp_path / "missing.tle")},
        {"stations": []},
        {"stations": [{"name": "x", "lat_deg": 95, "lon_deg": 0}]},
        {"stations": [{"name": "x", "lat_deg": 0}]},
        {"thermal": {}},
    ]
    for d in bad:
        with pytest.raises(ValueError) as refused:
            EnvConfig.from_dict(d)
        assert "\n" not in str(refused.value) and str(refused.value).startswith("environment"), d
