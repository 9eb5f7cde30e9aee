"""Power and thermal models: state of charge in [0, 1], energy balanced over an orbit,
temperatures finite and physical, and the thermal integration stable at a few seconds a step."""
from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hil.env.environment import EnvConfig, Environment
from hil.env.power import SOLAR_CONSTANT_W_M2, Battery, SolarArray
from hil.env.thermal import KELVIN, STEFAN_BOLTZMANN, T_SPACE_K, ThermalModel, ThermalParams

T0 = EnvConfig().satellite().epoch_unix
PERIOD_S = EnvConfig().satellite().tle.period_s

eff = st.floats(0.5, 1.0)


@settings(max_examples=200, deadline=None)
@given(capacity=st.floats(1.0, 500.0), soc0=st.floats(0.0, 1.0), ce=eff, de=eff,
       steps=st.lists(st.tuples(st.floats(0.0, 200.0), st.floats(0.0, 200.0), st.floats(0.0, 60.0)), max_size=50))
def test_soc_stays_in_range_and_every_step_balances(capacity, soc0, ce, de, steps):
    b = Battery(capacity, soc0, ce, de, 0.2)
    e0 = b.energy_wh
    for solar, load, dt in steps:
        b.step(solar, load, dt)
        assert 0.0 <= b.soc <= 1.0
    led = b.ledger
    lhs = led.solar_in_wh - (led.load_wh - led.unmet_wh)
    rhs = (b.energy_wh - e0) + led.losses_wh + led.shed_wh
    assert lhs == pytest.approx(rhs, abs=1e-9 * (1.0 + led.solar_in_wh + led.load_wh))
    assert min(led.losses_wh, led.shed_wh, led.unmet_wh) >= -1e-12


def test_an_empty_battery_leaves_the_load_unmet_and_a_full_one_sheds():
    b = Battery(10.0, 0.0, 0.9, 0.9, 0.3)
    b.step(0.0, 36.0, 100.0)  # 1 Wh asked of an empty battery
    assert b.soc == 0.0 and b.ledger.unmet_wh == pytest.approx(1.0)
    b = Battery(10.0, 1.0, 0.9, 0.9, 0.3)
    b.step(36.0, 0.0, 100.0)
    assert b.soc == 1.0 and b.ledger.shed_wh == pytest.approx(1.0)


def test_solar_array_power_follows_area_efficiency_illumination_and_cosine():
    a = SolarArray(0.25, 0.28)
    assert a.power_w(1.0, 1.0) == pytest.approx(SOLAR_CONSTANT_W_M2 * 0.25 * 0.28)
    assert a.power_w(0.5, 0.5) == pytest.approx(a.power_w(1.0, 1.0) / 4)
    assert a.power_w(1.0, -0.3) == 0.0 and a.power_w(0.0, 1.0) == 0.0


@settings(max_examples=8, deadline=None)
@given(area=st.floats(0.02, 0.5), eff_=st.floats(0.1, 0.32), capacity=st.floats(20.0, 300.0), soc0=st.floats(0.0, 1.0),
       ce=eff, de=eff, bus=st.floats(0.0, 30.0), compute=st.floats(0.0, 25.0),
       pointing=st.sampled_from(["sun", "zenith"]))
def test_energy_balances_over_an_orbit(area, eff_, capacity, soc0, ce, de, bus, compute, pointing):
    cfg = EnvConfig(array_area_m2=area, array_efficiency=eff_, battery_capacity_wh=capacity, battery_soc0=soc0,
                    battery_charge_eff=ce, battery_discharge_eff=de, bus_load_w=bus, array_pointing=pointing)
    env = Environment(cfg, T0)
    env.set_compute_power(compute)
    e0 = env.state.battery_wh
    solar_wh = 0.0
    saw_eclipse = False
    for _ in range(int(PERIOD_S / 10) + 1):
        solar_wh += env.state.solar_w * 10.0 / 3600.0  # the power each 10 s step runs on
        s = env.step(10.0)
        assert 0.0 <= s.soc <= 1.0 and 0.0 <= s.battery_wh <= s.battery_capacity_wh
        saw_eclipse |= s.in_eclipse
    assert saw_eclipse
    led = env.battery.ledger
    # every step is 10 sub-steps of 1 s; the array changes within one only at an eclipse edge
    assert led.solar_in_wh == pytest.approx(solar_wh, rel=0.01, abs=0.05)
    assert led.load_wh == pytest.approx((bus + compute) * (int(PERIOD_S / 10) + 1) * 10.0 / 3600.0, rel=1e-9)
    assert led.solar_in_wh - (led.load_wh - led.unmet_wh) == pytest.approx(
        env.state.battery_wh - e0 + led.losses_wh + led.shed_wh, abs=1e-6)


# --- thermal ---------------------------------------------------------------------------------

PARAMS = dict(board_heat_capacity_j_k=150.0, radiator_heat_capacity_j_k=1350.0, conductance_w_k=1.0,
              radiator_area_m2=0.1, emissivity=0.85, absorptance=0.2, sunlit_area_m2=0.06)


def upper_bound_k(p: ThermalParams, compute: float, bus: float, t0_k: float) -> float:
    """M + compute/G, with M the hotter of the start and the radiator's steady state with every
    source on at once (full sun). The region {T_r <= M, T_b <= M + compute/G} is invariant: on
    its edge T_r = M the radiator radiates at least all it can receive, and on T_b = M + compute/G
    the board conducts away at least its compute power."""
    q = compute + bus + p.absorptance * p.sunlit_area_m2 * SOLAR_CONSTANT_W_M2
    t_rad = (q / (p.emissivity * STEFAN_BOLTZMANN * p.radiator_area_m2) + T_SPACE_K**4) ** 0.25
    return max(t0_k, t_rad) + compute / p.conductance_w_k


@settings(max_examples=100, deadline=None)
@given(cb=st.floats(10.0, 2000.0), cr=st.floats(100.0, 20000.0), g=st.floats(0.05, 20.0), area=st.floats(0.01, 1.0),
       emis=st.floats(0.05, 1.0), absorb=st.floats(0.0, 1.0), tb0=st.floats(-100.0, 150.0), tr0=st.floats(-100.0, 150.0),
       compute=st.floats(0.0, 40.0), bus=st.floats(0.0, 30.0), dt=st.floats(0.01, 5.0),
       lit=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=400))
def test_temperatures_stay_finite_and_physical(cb, cr, g, area, emis, absorb, tb0, tr0, compute, bus, dt, lit):
    p = ThermalParams(cb, cr, g, area, emis, absorb, 0.06)
    m = ThermalModel(p, tb0, tr0)
    hi = upper_bound_k(p, compute, bus, max(tb0, tr0) + KELVIN) + 1e-6
    for illum in lit:
        m.step(compute, bus, illum, dt)
        for c in (m.board_c, m.radiator_c):
            assert math.isfinite(c) and T_SPACE_K <= c + KELVIN <= hi


def test_steady_state_matches_the_radiative_balance_and_large_steps_agree_with_small():
    p = ThermalParams(**PARAMS)
    fine, coarse = ThermalModel(p, 20.0, 10.0), ThermalModel(p, 20.0, 10.0)
    for _ in range(3000):
        fine.step(15.0, 8.0, 1.0, 0.1)
    for _ in range(60):
        coarse.step(15.0, 8.0, 1.0, 5.0)
    assert coarse.board_c == pytest.approx(fine.board_c, abs=0.2)
    assert coarse.radiator_c == pytest.approx(fine.radiator_c, abs=0.2)
    for _ in range(200):  # 10 time constants
        coarse.step(15.0, 8.0, 1.0, 300.0)
    q = 15.0 + 8.0 + 0.2 * 0.06 * SOLAR_CONSTANT_W_M2
    t_rad = (q / (0.85 * STEFAN_BOLTZMANN * 0.1)) ** 0.25 - KELVIN
    assert coarse.radiator_c == pytest.approx(t_rad, abs=0.01)
    assert coarse.board_c == pytest.approx(t_rad + 15.0 / 1.0, abs=0.01)
