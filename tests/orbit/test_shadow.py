"""Conical shadow: invariants (hypothesis), limits, and the overlap area against a direct count."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flight.orbit.shadow import EARTH_RADIUS_KM, SUN_RADIUS_KM, illumination, illumination_from_angles, margins
from flight.orbit.sun import AU_KM

RE = EARTH_RADIUS_KM
UMBRA_HALF_ANGLE = math.asin((SUN_RADIUS_KM - RE) / AU_KM)  # ~0.264°


def unit(v):
    v = np.asarray(v, float)
    return v / np.linalg.norm(v)


directions = st.tuples(*[st.floats(-1, 1)] * 3).filter(lambda v: np.linalg.norm(v) > 0.1).map(unit)
sun_distance = st.floats(0.983 * AU_KM, 1.017 * AU_KM)


def perpendicular(s_hat, other):
    p = np.cross(s_hat, other)
    if np.linalg.norm(p) < 1e-6:
        p = np.cross(s_hat, [0.0, 0.0, 1.0] if abs(s_hat[2]) < 0.9 else [1.0, 0.0, 0.0])
    return unit(p)


@settings(max_examples=300, deadline=None)
@given(directions, directions, st.floats(RE + 150, 50_000), sun_distance)
def test_illumination_is_a_fraction(s_hat, r_hat, r, d):
    x = illumination(r * r_hat, d * s_hat)
    assert 0.0 <= x <= 1.0


@settings(max_examples=300, deadline=None)
@given(directions, directions, st.floats(RE + 150, 50_000), sun_distance)
def test_sunward_side_is_lit(s_hat, r_hat, r, d):
    if r_hat @ s_hat < 0:
        r_hat = -r_hat
    assert illumination(r * r_hat, d * s_hat) == 1.0


@settings(max_examples=300, deadline=None)
@given(directions, directions, st.floats(RE + 150, 50_000), st.floats(0, 0.9), sun_distance)
def test_deep_in_the_shadow_cylinder_is_dark(s_hat, other, behind, frac, d):
    # behind the Earth, closer to the axis than the umbra cone's radius there (less a margin)
    umbra_radius = RE / math.cos(UMBRA_HALF_ANGLE) - behind * math.tan(UMBRA_HALF_ANGLE)
    r = -behind * s_hat + frac * (umbra_radius - 5.0) * perpendicular(s_hat, other)
    if np.linalg.norm(r) < RE + 100:
        return
    assert illumination(r, d * s_hat) == 0.0


@settings(max_examples=100, deadline=None)
@given(directions, directions, st.floats(RE + 150, 40_000), sun_distance)
def test_monotonic_through_the_penumbra_on_a_straight_path(s_hat, other, behind, d):
    # walk straight out of the shadow, perpendicular to its axis: never darker
    p = perpendicular(s_hat, other)
    offsets = np.linspace(0.0, 1.5 * RE + behind * 0.01, 4000)
    path = -behind * s_hat + offsets[:, None] * p
    x = illumination(path, d * s_hat)
    assert x[0] == 0.0 and x[-1] == 1.0
    assert np.all(np.diff(x) >= -1e-12)
    assert np.any((x > 0) & (x < 1))  # there is a penumbra between


def test_margins_are_continuous_and_signed():
    s = np.array([AU_KM, 0.0, 0.0])
    lit, umbra = np.array([RE + 500, 0, 0]), np.array([-(RE + 500), 0, 0])
    assert all(m > 0 for m in margins(lit, s))
    assert all(m < 0 for m in margins(umbra, s))


def test_annular_beyond_the_umbra_apex():
    # far behind the Earth (beyond ~1.38 million km) the Earth is a disc inside the Sun's
    s = np.array([AU_KM, 0.0, 0.0])
    r = np.array([-3.0e6, 0.0, 0.0])
    a = math.asin(SUN_RADIUS_KM / (AU_KM + 3.0e6))
    b = math.asin(RE / 3.0e6)
    assert illumination(r, s) == pytest.approx(1 - (b / a) ** 2, rel=1e-9)


def overlap_by_counting(a, b, c, n=1200):
    """Visible fraction of a disc of radius a with a disc of radius b at distance c in front."""
    g = np.linspace(-a, a, n)
    x, y = np.meshgrid(g, g)
    sun = x * x + y * y <= a * a
    earth = (x - c) ** 2 + y * y <= b * b
    return 1.0 - np.count_nonzero(sun & earth) / np.count_nonzero(sun)


@pytest.mark.parametrize(
    "a, b, c",
    [(0.0046, 1.2, 1.2), (0.0046, 1.2, 1.199), (0.0046, 1.2, 1.2035), (0.0046, 0.9, 0.8990),
     (0.0046, 0.0025, 0.004), (0.0046, 0.004, 0.006), (0.01, 0.01, 0.01)],
)
def test_overlap_area_against_a_direct_count(a, b, c):
    assert illumination_from_angles(a, b, c) == pytest.approx(overlap_by_counting(a, b, c), abs=3e-3)


def test_limits():
    a, b = 0.0046, 1.2
    assert illumination_from_angles(a, b, a + b) == 1.0
    assert illumination_from_angles(a, b, b - a) == 0.0
    assert illumination_from_angles(a, b, a + b - 1e-12) == pytest.approx(1.0, abs=1e-6)
    assert illumination_from_angles(a, b, b - a + 1e-12) == pytest.approx(0.0, abs=1e-6)
    assert illumination_from_angles(a, b, b) == pytest.approx(0.5, abs=0.01)  # limb through the Sun's centre
