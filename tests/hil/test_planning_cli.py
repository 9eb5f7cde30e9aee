"""`hil passes` and `hil eclipses`: JSON keys and values, umbra edges against an independent
computation (Meeus' Sun, Vallado's cones, spherical Earth: within 10 s), and bad input as one
line with exit code 2."""
from __future__ import annotations

import json
from datetime import datetime

import numpy as np
import pytest

from flight.orbit import Satellite
from hil.cli import main
from hil.env.environment import DEFAULT_TLE
from hil.env.stations import Station, contact_windows
from tests.orbit.test_eclipse import edges, independent_states

SAT = Satellite(DEFAULT_TLE)


@pytest.fixture
def tle(tmp_path):
    path = tmp_path / "sat.tle"
    path.write_text(DEFAULT_TLE)
    return str(path)


def unix(iso: str) -> float:
    assert iso.endswith("Z")
    return datetime.fromisoformat(iso).timestamp()


def test_passes_json_has_the_keys_and_the_windows(tle, capsys):
    assert main(["passes", "--tle", tle, "--station", "78.2297,15.4077,500", "--mask", "10",
                 "--start", "2025-02-09T08:00:00Z", "--hours", "12", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows and all(set(r) == {"rise", "culmination", "set", "max_elevation_deg"} for r in rows)
    start = unix("2025-02-09T08:00:00Z")
    ref = contact_windows(SAT, Station("s", 78.2297, 15.4077, 500.0, 10.0), start, start + 12 * 3600)
    assert len(rows) == len(ref)
    for r, w in zip(rows, ref):
        assert unix(r["rise"]) == pytest.approx(w.rise, abs=1e-3) and unix(r["set"]) == pytest.approx(w.set, abs=1e-3)
        assert unix(r["rise"]) < unix(r["culmination"]) < unix(r["set"]) and 10.0 <= r["max_elevation_deg"] <= 90.0


def test_eclipses_json_umbra_edges_agree_with_an_independent_computation(tle, capsys):
    assert main(["eclipses", "--tle", tle, "--hours", "4", "--json"]) == 0  # from the TLE's epoch
    rows = json.loads(capsys.readouterr().out)
    assert rows and all(set(r) == {"penumbra_entry", "umbra_entry", "umbra_exit", "penumbra_exit"} for r in rows)
    start = SAT.epoch_unix
    seconds = 4 * 3600 + 3600  # an eclipse that overlaps the end is returned whole
    t, umb, _, _ = independent_states(SAT, start, seconds)
    ref_in, ref_out = edges(t, umb)
    for r in rows:
        pe, ue, ux, px = (unix(r[k]) for k in ("penumbra_entry", "umbra_entry", "umbra_exit", "penumbra_exit"))
        assert pe < ue < ux < px
        assert np.min(np.abs(ref_in - ue)) <= 10.0 and np.min(np.abs(ref_out - ux)) <= 10.0


def test_text_output_has_one_line_per_window(tle, capsys):
    assert main(["eclipses", "--tle", tle, "--hours", "3"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    assert main(["passes", "--tle", tle, "--station", "78.2297,15.4077,500", "--hours", "3"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2


@pytest.mark.parametrize("argv", [
    ["passes", "--tle", "/nonexistent.tle", "--station", "0,0,0"],
    ["passes", "--tle", "{tle}", "--station", "0,0"],
    ["passes", "--tle", "{tle}", "--station", "95,0,0"],
    ["passes", "--tle", "{tle}", "--station", "0,0,0", "--mask", "95"],
    ["passes", "--tle", "{tle}", "--station", "0,0,0", "--hours", "-1"],
    ["eclipses", "--tle", "{tle}", "--start", "yesterday"],
    ["eclipses", "--tle", "{tle}", "--hours", "nan"],
    ["eclipses", "--tle", "{bad}"],
    ["eclipses"],
])
def test_bad_input_is_one_line_and_exit_2(argv, tle, tmp_path, capsys):
    bad = tmp_path / "bad.tle"
    bad.write_text(DEFAULT_TLE.replace("9997", "9998"))  # checksum
    argv = [a.format(tle=tle, bad=bad) for a in argv]
    try:
        code = main(argv)
    except SystemExit as usage:  # argparse's own refusals
        code = usage.code
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("hil") and "Traceback" not in err
