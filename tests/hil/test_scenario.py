"""The scenario format (hil/scenario.py): the shipped files load, every rule refuses in one line,
and `hil run` turns a bad file into one line on stderr and exit 2, before starting anything."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import numpy as np

from hil.scenario import ScenarioError, jittered, load, parse

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted((REPO / "scenarios").glob("*.toml"))
HIL = str(Path(sys.executable).with_name("hil"))
MINIMAL = {"scenario": {"name": "t", "duration_s": 100.0}}


def test_every_issue_scenario_is_shipped_and_loads():
    names = {load(path).name for path in SHIPPED}
    assert names == {"nominal", "eclipse_heavy", "hot_case", "radiation_storm", "bad_link", "crash_recovery"}


def test_a_scenario_reads_as_documented():
    s = parse({"scenario": {"name": "x", "duration_s": 1000, "accel": 50, "seed": 3, "model": "synthetic"},
               "link": {"ber": 1e-5, "dropout": {"mean_interval_s": 60, "mean_duration_s": 2}},
               "timeline": [{"at_s": 10, "action": "submit", "prompt": "p", "count": 3, "every_s": 100,
                             "deadline_s": 500},
                            {"at_s": 5, "action": "command", "name": "MODE_SET", "args": {"mode": 2}}],
               "faults": [{"at_s": 100, "kind": "kill9", "restart_after_s": 10, "count": 2, "every_s": 300},
                          {"at_s": 50, "kind": "brownout", "duration_s": 20}],
               "criteria": {"deadline_hit_rate_min": 0.5}})
    assert [j.at_s for j in s.submits] == [10, 110, 210] and s.submits[0].deadline_s == 500
    assert s.commands[0].args == {"mode": 2}
    assert [(f.at_s, f.kind) for f in s.faults] == [(50, "brownout"), (100, "kill9"), (400, "kill9")]
    assert s.link["dropout"] == {"mean_interval_s": 60.0, "mean_duration_s": 2.0}
    assert s.criteria == {"deadline_hit_rate_min": 0.5}


def test_jitter_moves_a_fault_by_the_seed_within_its_bound_and_the_run():
    s = parse({**MINIMAL, "faults": [{"at_s": 50, "kind": "link_outage", "duration_s": 5, "jitter_s": 20},
                                     {"at_s": 95, "kind": "seu_burst", "jitter_s": 30}]})
    outage, burst = s.faults
    assert outage.jitter_s == 20 and outage.at_s == 50
    runs = [jittered(outage, np.random.default_rng(seed), s.duration_s).at_s for seed in range(50)]
    assert all(30 <= t <= 70 for t in runs) and len(set(runs)) == 50  # every seed its own instant
    assert runs == [jittered(outage, np.random.default_rng(seed), s.duration_s).at_s for seed in range(50)]
    assert max(jittered(burst, np.random.default_rng(seed), 100.0).at_s for seed in range(50)) == 100.0  # kept in
    assert jittered(parse(MINIMAL | {"faults": [{"at_s": 5, "kind": "seu_burst"}]}).faults[0],
                    np.random.default_rng(1), 100.0).at_s == 5  # no jitter: the file's instant


def test_overrides_shorten_a_scenario_and_drop_what_falls_after_it():
    s = load(REPO / "scenarios" / "crash_recovery.toml")
    short = s.with_overrides({"scenario": {"duration_s": 600, "accel": 40, "model": "synthetic"}})
    assert (short.duration_s, short.accel, short.model) == (600, 40, "synthetic")
    assert all(f.at_s <= 600 for f in short.faults) and len(short.faults) < len(s.faults)
    with pytest.raises(ScenarioError):
        s.with_overrides({"timeline": {"at_s": 1}})


@pytest.mark.parametrize("raw, words", [
    ({}, "[scenario] table is missing"),
    ({"scenario": {"duration_s": 10}}, "scenario.name is required"),
    ({"scenario": {"name": "t", "duration_s": -1}}, "scenario.duration_s must be above 0"),
    ({"scenario": {"name": "t", "duration_s": 10, "accel": float("nan")}}, "finite number"),
    ({"scenario": {"name": "t", "duration_s": 10, "model": "big"}}, "scenario.model must be one of"),
    ({"scenario": {"name": "t", "duration_s": 10, "start": "yesterday"}}, "ISO-8601"),
    ({**MINIMAL, "extra": {}}, "unknown table"),
    ({**MINIMAL, "link": {"ber": 0.9}}, "link: "),
    ({**MINIMAL, "link": {"dropout": {"mean_interval_s": 10}}}, "link.dropout.mean_duration_s is required"),
    ({**MINIMAL, "environment": {"battery_soc0": 2.0}}, "environment"),
    ({**MINIMAL, "environment": {"colour": "red"}}, "unknown key"),
    ({**MINIMAL, "flight": {"sensors": {"backend": "sim"}}}, "flight.sensors"),
    ({**MINIMAL, "timeline": [{"at_s": 1, "action": "dance"}]}, "action must be one of"),
    ({**MINIMAL, "timeline": [{"at_s": 500, "action": "submit", "prompt": "p"}]}, "at most 100"),
    ({**MINIMAL, "timeline": [{"at_s": 1, "action": "submit", "prompt": "p", "count": 5, "every_s": 50}]},
     "falls after duration_s"),
    ({**MINIMAL, "timeline": [{"at_s": 1, "action": "submit"}]}, "prompt is required"),
    ({**MINIMAL, "timeline": [{"at_s": 1, "action": "command", "name": "X", "args": 3}]}, "args must be a table"),
    ({**MINIMAL, "faults": [{"at_s": 1, "kind": "meteor"}]}, "kind must be one of"),
    ({**MINIMAL, "faults": [{"at_s": 1, "kind": "brownout"}]}, "needs duration_s"),
    ({**MINIMAL, "faults": [{"at_s": 1, "kind": "kill9", "count": 3, "every_s": 5, "restart_after_s": 10}]},
     "every_s must exceed"),
    ({**MINIMAL, "faults": [{"at_s": 1, "kind": "kill9", "count": 2, "every_s": 30, "restart_after_s": 10,
                             "jitter_s": 15}]}, "every_s must exceed restart_after_s + 2 jitter_s"),
    ({**MINIMAL, "faults": [{"at_s": 1, "kind": "seu_burst", "jitter_s": -1}]}, "jitter_s"),
    ({**MINIMAL, "faults": [{"at_s": 1, "kind": "sensor_fail", "duration_s": 5, "mode": "on fire"}]},
     "silent or garbled"),
    ({**MINIMAL, "faults": [{"at_s": 1, "kind": "seu_burst", "duration_s": 5}]}, "unknown key"),
    ({**MINIMAL, "criteria": {"deadline_hit_rate_min": 2}}, "at most 1"),
    ({**MINIMAL, "criteria": {"speed": 2}}, "unknown key"),
])
def test_each_rule_refuses_in_one_line(raw, words):
    with pytest.raises(ScenarioError) as refused:
        parse(raw)
    assert words in str(refused.value) and len(str(refused.value).splitlines()) == 1


@pytest.mark.parametrize("text", ["not toml [", "[scenario]\nname = 't'\n", "[scenario]\nname='t'\nduration_s=9\n"
                                  "[flight.link]\nhk_period_s = 'soon'\n"])
def test_hil_run_refuses_a_bad_file_in_one_line_with_exit_2(tmp_path, text):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    done = subprocess.run([HIL, "run", str(path), "--out", str(tmp_path / "out")], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith("hil run: ")


def test_hil_run_refuses_a_missing_file_and_a_bad_accel(tmp_path):
    for argv in ([str(tmp_path / "absent.toml")], [str(SHIPPED[0]), "--accel", "0"]):
        done = subprocess.run([HIL, "run", *argv], capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
