"""The cost model (flight.executive.cost_model): its identities over drawn models (the total is
the sum of its parts, N compute seconds cost N times the rate, the rideshare price is the block
then a slope), its [cost] configuration keys, that the ground can import it without the flight
software, and the default figures: printed, of sane magnitude, and as the docstring states."""
from __future__ import annotations

import math
import subprocess
import sys
from dataclasses import fields

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from flight.config import DEFAULT_POWER_LEVELS
from flight.executive import cost_model as cm
from flight.executive.cost_model import (CONFIG_KEYS, SECONDS_PER_YEAR, CostModel, ground_electricity_usd_per_token,
                                         rideshare_launch_usd)

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

money = st.floats(0, 1e9, allow_nan=False)
models = st.builds(
    CostModel,
    hardware_usd=money, mass_kg=st.floats(0, 5000), launch_base_usd=money, launch_base_kg=st.floats(0, 1000),
    launch_usd_per_kg=st.floats(0, 1e5), lifetime_years=st.floats(0.01, 30), duty_cycle=st.floats(1e-3, 1),
    ground_usd_per_minute=st.floats(0, 100), passes_per_day=st.floats(0, 50), minutes_per_pass=st.floats(0, 30),
    other_operations_usd_per_year=money)


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-9)


@SETTINGS
@given(models)
def test_total_is_the_sum_of_its_parts(m: CostModel):
    b = m.breakdown()
    assert close(b["total_usd"], b["hardware_usd"] + b["launch_usd"] + b["operations_usd"])
    assert close(b["operations_usd"], b["operations_usd_per_year"] * b["lifetime_years"])
    assert close(b["operations_usd_per_year"], b["ground_station_usd_per_year"] + b["other_operations_usd_per_year"])
    assert close(b["ground_station_usd_per_year"], m.ground_usd_per_minute * m.passes_per_day * m.minutes_per_pass * 365.25)
    if b["total_usd"] > 0:
        assert math.isclose(b["hardware_fraction"] + b["launch_fraction"] + b["operations_fraction"], 1.0, rel_tol=1e-12)
    assert all(isinstance(v, float) and math.isfinite(v) for v in b.values())


@SETTINGS
@given(models, st.floats(0, 1e9))
def test_n_compute_seconds_cost_n_times_the_rate(m: CostModel, n: float):
    assert close(m.compute_seconds, m.lifetime_years * SECONDS_PER_YEAR * m.duty_cycle)
    assert math.isclose(m.usd_per_compute_second, m.total_usd / m.compute_seconds, rel_tol=1e-12)
    assert math.isclose(m.cost_usd(n), n * m.usd_per_compute_second, rel_tol=1e-12, abs_tol=0)
    # the whole generating lifetime costs the whole node
    assert math.isclose(m.cost_usd(m.compute_seconds), m.total_usd, rel_tol=1e-12, abs_tol=1e-6)


@SETTINGS
@given(models, st.floats(0.01, 1e6))
def test_usd_per_token_is_the_rate_over_throughput(m: CostModel, tok_s: float):
    assert math.isclose(m.usd_per_token(tok_s), m.usd_per_compute_second / tok_s, rel_tol=1e-12)
    assert m.usd_per_token(0.0) == math.inf


@SETTINGS
@given(st.floats(0, 5000), st.floats(0, 5000), money, st.floats(0, 1000), st.floats(0, 1e5))
def test_rideshare_is_the_block_then_a_slope(m1: float, m2: float, base_usd: float, base_kg: float, per_kg: float):
    p1 = rideshare_launch_usd(m1, base_usd, base_kg, per_kg)
    p2 = rideshare_launch_usd(m2, base_usd, base_kg, per_kg)
    assert p1 >= base_usd
    if m1 <= base_kg:
        assert p1 == base_usd  # a lighter payload pays the whole block
    else:
        assert math.isclose(p1, base_usd + per_kg * (m1 - base_kg), rel_tol=1e-12)
    if m1 <= m2:
        assert p1 <= p2


@pytest.mark.parametrize("mass, price", [(1, 350_000), (20, 350_000), (50, 350_000), (100, 700_000),
                                         (200, 1_400_000), (500, 3_500_000)])
def test_rideshare_defaults_match_the_published_examples(mass: float, price: float):
    # the worked examples of newspaceeconomy.ca, 2026-02-27, from SpaceX's published price
    assert rideshare_launch_usd(mass) == price
    assert CostModel(mass_kg=mass).launch_usd == price


def test_a_launch_price_function_replaces_the_rideshare_formula():
    m = CostModel(mass_kg=20, launch_price=lambda kg: 200.0 * kg)  # Suncatcher's parity price
    assert m.launch_usd == 4000.0
    assert close(m.total_usd, m.hardware_usd + 4000.0 + m.operations_usd)
    assert m == CostModel(mass_kg=20)  # the function is not part of the configuration's identity


@pytest.mark.parametrize("key, value", [
    ("hardware_usd", -1.0), ("mass_kg", math.nan), ("launch_usd_per_kg", math.inf), ("lifetime_years", 0.0),
    ("lifetime_years", -5.0), ("duty_cycle", 0.0), ("duty_cycle", 1.5), ("passes_per_day", -1), ("minutes_per_pass", True),
    ("ground_usd_per_minute", "10"), ("other_operations_usd_per_year", None)])
def test_bad_values_are_one_line_errors(key: str, value: object):
    with pytest.raises(ValueError) as err:
        CostModel(**{key: value})
    assert key in str(err.value) and "\n" not in str(err.value)


def test_config_keys_are_the_model_fields_with_their_defaults():
    names = {f.name: f.default for f in fields(CostModel) if f.name != "launch_price"}
    assert set(CONFIG_KEYS) == set(names)
    for key, (default, meaning) in CONFIG_KEYS.items():
        assert default == names[key], key
        assert meaning and "\n" not in meaning
    assert CostModel(**{k: v[0] for k, v in CONFIG_KEYS.items()}) == CostModel()


def test_the_ground_can_import_it_without_the_flight_software():
    code = ("import sys, flight.executive.cost_model as m; m.CostModel().breakdown(); "
            "extra = sorted(k for k in sys.modules if k.startswith('flight') and k not in "
            "('flight', 'flight.executive', 'flight.executive.cost_model')); "
            "assert not extra and 'numpy' not in sys.modules, extra")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_default_figures(capsys):
    m = CostModel()
    b = m.breakdown()
    lines = [f"default cost model: total ${b['total_usd']:,.0f} (hardware ${b['hardware_usd']:,.0f}, "
             f"launch ${b['launch_usd']:,.0f}, operations ${b['operations_usd']:,.0f} over {m.lifetime_years:g} years); "
             f"{b['compute_seconds']:.3g} compute s at duty {m.duty_cycle:g}: ${b['usd_per_compute_second']:.4f}/s, "
             f"${b['usd_per_compute_hour']:.2f}/compute-hour",
             f"at 100 tok/s: ${m.usd_per_token(100):.3g}/token (${m.usd_per_token(100) * 1e6:,.0f} per million)"]
    for level in DEFAULT_POWER_LEVELS:
        lines.append(f"{level.name:5s} {level.watts:4g} W {level.tokens_per_s:4g} tok/s: "
                     f"{level.watts / level.tokens_per_s:.3f} J/token, ${m.usd_per_token(level.tokens_per_s):.3g}/token")
    ground = [ground_electricity_usd_per_token(0.12, usd, pue) for usd in cm.GROUND_USD_PER_KWH for pue in (1.10, 1.58)]
    lines.append(f"ground electricity, 0.12 J/token H100: ${min(ground):.2g} to ${max(ground):.2g}/token")
    with capsys.disabled():
        print("\n" + "\n".join(lines))
    # sane magnitudes: a ~$2M node, cents per compute second, 1e-5..1e-3 $ per token at 100 tok/s
    assert 1e6 < m.total_usd < 1e7
    assert 1e-3 < m.usd_per_compute_second < 1e-1
    assert 1e-5 < m.usd_per_token(100) < 1e-3
    # capital and operations, not energy, set the orbital price: >= 1000x the ground's power bill
    assert m.usd_per_token(DEFAULT_POWER_LEVELS[-1].tokens_per_s) > 1e3 * max(ground)


def test_the_docstring_states_the_default_figures():
    m = CostModel()
    doc = cm.__doc__
    assert f"${m.usd_per_compute_second:.4f}" in doc
    assert f"total ~ ${m.total_usd / 1e6:.2f} M" in doc
    for level in DEFAULT_POWER_LEVELS:
        mantissa, exponent = f"{m.usd_per_token(level.tokens_per_s):.1e}".split("e")
        usd = f"{mantissa}e{int(exponent)}"  # 6.6e-4, as written
        assert f"{level.watts / level.tokens_per_s:.3f} J/token, ~${usd} per token" in doc, level
