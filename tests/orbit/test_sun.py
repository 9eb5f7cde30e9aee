"""The Almanac's low-precision Sun against published values and an independent algorithm."""
from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from flight.orbit.sun import AU_KM, sun_distance_km, sun_ecliptic, sun_position, sun_positions, sun_ra_dec
from flight.orbit.tle import to_unix
from tests.orbit.meeus import meeus_sun, meeus_sun_vector_km

# Meeus, Astronomical Algorithms, 2nd ed., examples 25.a and 25.b: 1992 October 13.0 TD
# (cross-checked against PyMeeus's documented reproduction of them: true longitude 199°54'36",
# R 0.99766, apparent α 13h13m31.4s, δ -7°47'06"; VSOP87 R 0.99760852 in its truncated series)
# (JDE 2448908.5). TT - UTC was 58.184 s then (TAI - UTC = 26 s), so UTC is 23:59:01.816 the 12th.
JDE_25A = 2448908.5
UTC_25A = datetime(1992, 10, 12, 23, 59, 1, 816000, tzinfo=timezone.utc)
# 25.b, the full VSOP87 theory: α = 13h13m30.749s, δ = -7°47'01.74", R = 0.99760775 AU
RA_25B = (13 + 13 / 60 + 30.749 / 3600) * 15.0
DEC_25B = -(7 + 47 / 60 + 1.74 / 3600)
R_25B = 0.99760775


def separation_deg(ra1, dec1, ra2, dec2) -> float:
    a = [math.radians(x) for x in (ra1, dec1, ra2, dec2)]
    c = math.sin(a[1]) * math.sin(a[3]) + math.cos(a[1]) * math.cos(a[3]) * math.cos(a[0] - a[2])
    return math.degrees(math.acos(min(1.0, c)))


def jde_of(t: datetime) -> float:
    return 2440587.5 + (to_unix(t) + 69.184) / 86400.0  # TT - UTC ≈ 69.2 s since 2017


def test_the_independent_algorithm_reproduces_its_published_example():
    s = meeus_sun(JDE_25A)  # every intermediate value printed in example 25.a
    assert s["T"] == pytest.approx(-0.072183436, abs=1e-9)
    assert s["L0"] == pytest.approx(201.80720, abs=1e-5)
    assert s["M"] == pytest.approx(278.99397, abs=1e-5)
    assert s["e"] == pytest.approx(0.016711668, abs=1e-9)
    assert s["C"] == pytest.approx(-1.89732, abs=1e-5)
    assert s["true_long"] == pytest.approx(199.90988, abs=1e-5)
    assert s["R"] == pytest.approx(0.99766, abs=1e-5)
    assert s["lambda"] == pytest.approx(199.90895, abs=1e-5)
    assert s["eps"] == pytest.approx(23.43999, abs=1e-5)
    assert s["ra"] == pytest.approx(198.38083, abs=1e-5)
    assert s["dec"] == pytest.approx(-7.78507, abs=1e-5)


def test_almanac_sun_against_vsop87_example():
    ra, dec = sun_ra_dec(UTC_25A)
    assert separation_deg(ra, dec, RA_25B, DEC_25B) < 0.01  # the Almanac's stated accuracy
    assert sun_ecliptic(UTC_25A)[2] == pytest.approx(R_25B, abs=1e-4)
    assert sun_distance_km(UTC_25A) == pytest.approx(R_25B * AU_KM, rel=1e-4)


def test_almanac_sun_against_usno_events_2024():
    # USNO "Earth's Seasons and Apsides" 2024: March equinox 20 March 03:06 UTC (declination 0,
    # λ = 0), perihelion 3 January 00:39 UTC at 0.983 307 AU (147 100 632 km)
    lam, _, _ = sun_ecliptic(datetime(2024, 3, 20, 3, 6, tzinfo=timezone.utc))
    assert min(lam, 360 - lam) < 0.01
    assert sun_ecliptic(datetime(2024, 1, 3, 0, 39, tzinfo=timezone.utc))[2] == pytest.approx(0.983307, abs=1e-4)
    # June solstice 20 June 20:51 UTC: λ = 90°, declination = obliquity
    lam, eps, _ = sun_ecliptic(datetime(2024, 6, 20, 20, 51, tzinfo=timezone.utc))
    assert abs(lam - 90.0) < 0.01
    assert abs(sun_ra_dec(datetime(2024, 6, 20, 20, 51, tzinfo=timezone.utc))[1] - eps) < 1e-3


def test_almanac_sun_against_meeus_1950_to_2050():
    # both are 0.01° methods: they agree to ~0.01° (their sum bounds the difference)
    start = datetime(1950, 1, 1, tzinfo=timezone.utc)
    worst_deg, worst_r = 0.0, 0.0
    rng = np.random.default_rng(7)
    for days in rng.uniform(0, 100 * 365.25, 500):
        t = start + timedelta(days=float(days))
        ra, dec = sun_ra_dec(t)
        m = meeus_sun(jde_of(t))
        worst_deg = max(worst_deg, separation_deg(ra, dec, m["ra"], m["dec"]))
        worst_r = max(worst_r, abs(sun_ecliptic(t)[2] - m["R"]))
    assert worst_deg < 0.015, worst_deg
    assert worst_r < 1e-4, worst_r


def test_vector_forms_agree():
    t = datetime(2025, 5, 3, 12, 0, tzinfo=timezone.utc)
    v = sun_position(t)
    assert np.allclose(sun_positions(np.array([to_unix(t)]))[0], v)
    m = np.array(meeus_sun_vector_km(jde_of(t)))
    cos = v @ m / (np.linalg.norm(v) * np.linalg.norm(m))
    assert math.degrees(math.acos(min(1.0, cos))) < 0.015
    assert 0.983 * AU_KM < np.linalg.norm(v) < 1.017 * AU_KM
