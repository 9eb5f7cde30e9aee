"""The sim sensor backend's models, each checked for its invariants over parametrized cases."""
import math

import pytest
from hypothesis import given, settings, strategies as st

from flight.sensors.sim import Eclipse, SimConfig, SimSensors


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


@pytest.mark.parametrize("period, eclipse", [(5700.0, 2100.0), (100.0, 0.0), (60.0, 59.0)])
def test_eclipse_is_a_square_wave_with_consistent_timings(period, eclipse):
    model = Eclipse(period, eclipse)
    steps = 997
    dark = 0
    for i in range(steps):
        t = i * 3 * period / steps
        in_eclipse, entry, exit_ = model.at(t)
        dark += in_eclipse
        if in_eclipse:
            assert entry == 0 and 0 < exit_ <= eclipse
        else:
            assert 0 < entry <= period - eclipse and exit_ - entry == pytest.approx(eclipse)
    assert dark / steps == pytest.approx(eclipse / period, abs=2 / steps * 3 + 0.01)
    assert model.sunlit_seconds(0, 3 * period) == pytest.approx(3 * (period - eclipse))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 900), st.floats(0, 60)), min_size=1, max_size=40))
def test_battery_stays_within_its_capacity_and_balances_energy(steps):
    clock = Clock()
    config = SimConfig(battery_capacity_wh=50.0, battery_start_wh=25.0)
    sim = SimSensors(config, clock)
    previous = sim.read()
    for dt, compute_w in steps:
        sim.report_compute_power(compute_w)
        clock.t += dt
        reading = sim.read()
        assert 0.0 <= reading.battery_wh <= config.battery_capacity_wh
        assert reading.load_w == config.base_load_w + compute_w
        # within the clip, the change is what flowed in and out
        sunlit = sim._eclipse.sunlit_seconds(previous.time_s, reading.time_s)
        unclipped = previous.battery_wh + (config.solar_w * sunlit - reading.load_w * dt) / 3600
        assert reading.battery_wh == pytest.approx(min(config.battery_capacity_wh, max(0.0, unclipped)), abs=1e-9)
        previous = reading


@pytest.mark.parametrize("compute_w", [0.0, 5.0, 25.0])
def test_temperature_rises_monotonically_to_its_steady_state_without_overshoot(compute_w):
    clock = Clock()
    config = SimConfig()
    sim = SimSensors(config, clock)
    sim.report_compute_power(compute_w)
    steady = config.ambient_c + config.thermal_resistance_c_per_w * compute_w
    last = sim.read().board_temperature_c
    for _ in range(200):
        clock.t += 30.0
        temperature = sim.read().board_temperature_c
        assert last <= temperature <= steady + 1e-9
        last = temperature
    assert last == pytest.approx(steady, abs=1e-3)
    clock.t += config.thermal_time_constant_s  # and cools back by one time constant's e-fold
    sim.report_compute_power(0.0)
    clock.t += config.thermal_time_constant_s
    assert sim.read().board_temperature_c - config.ambient_c == pytest.approx((steady - config.ambient_c) / math.e, rel=1e-6)


@pytest.mark.parametrize("kwargs", [dict(eclipse_s=6000.0), dict(battery_start_wh=200.0), dict(battery_capacity_wh=0.0),
                                    dict(solar_w=-1.0), dict(thermal_time_constant_s=0.0)])
def test_bad_config_is_refused(kwargs):
    with pytest.raises(ValueError):
        SimConfig(**kwargs)


@pytest.mark.parametrize("watts", [-1.0, math.nan])
def test_bad_compute_power_is_refused(watts):
    with pytest.raises(ValueError):
        SimSensors(SimConfig(), Clock()).report_compute_power(watts)
