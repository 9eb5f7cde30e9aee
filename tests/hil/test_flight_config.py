"""The node's config for a run (hil/flight_config.py): link timers from simulated to wall seconds
with their floors, the environment's battery floor, and the node's own loader as the judge."""
from __future__ import annotations

import pytest

from hil import flight_config
from hil.scenario import ScenarioError


def test_link_timers_are_divided_by_k_down_to_their_floors():
    assert flight_config.wall_link_timers({}, 1.0) == {"hk_period_s": 1.0, "contact_timeout_s": 10.0, "rto_s": 3.0}
    assert flight_config.wall_link_timers({"link": {"hk_period_s": 50.0}}, 100.0) == {
        "hk_period_s": 0.5, "contact_timeout_s": 2.0, "rto_s": 0.5}


def test_the_written_config_is_what_the_node_loads(tmp_path):
    tables = flight_config.compose({"engine": {"scrub_period_s": 12.5}, "scheduler": {"thermal_limit_c": 80.0}},
                                   10.0, battery_floor_wh=27.5)
    config = flight_config.write(tables, tmp_path / "flight.toml")
    assert config.values["engine"]["scrub_period_s"] == 12.5
    assert config.values["scheduler"]["battery_floor_wh"] == 27.5 and config.values["scheduler"]["thermal_limit_c"] == 80
    assert config.values["link"]["contact_timeout_s"] == 2.0


@pytest.mark.parametrize("flight, words", [
    ({"scheduler": {"battery_floor_wh": 5.0}}, "comes from environment.battery_floor"),
    ({"link": {"rto_s": "soon"}}, "flight.link.rto_s"),
    ({"engine": {"colour": "red"}}, "unknown key"),
    ({"engine": {"scrub_period_s": [1, 2]}}, "string, number or boolean"),
])
def test_bad_overrides_are_one_line(tmp_path, flight, words):
    with pytest.raises(ScenarioError) as refused:
        flight_config.write(flight_config.compose(flight, 10.0, 30.0), tmp_path / "flight.toml")
    assert words in str(refused.value) and len(str(refused.value).splitlines()) == 1
