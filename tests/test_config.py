"""The node configuration: documented defaults, the file, then flags; every bad value one line."""
from pathlib import Path

import pytest

from flight.config import DEFAULT_POWER_LEVELS, SCHEMA, ConfigError, load_config, render_example

EXAMPLE = Path(__file__).resolve().parents[1] / "flight" / "node.example.toml"


def test_defaults_need_no_file_and_the_example_lists_every_key_at_its_default():
    assert EXAMPLE.read_text() == render_example(), "flight/node.example.toml is stale: regenerate it"
    defaults = load_config()
    assert load_config(EXAMPLE) == defaults
    assert defaults.power_levels == DEFAULT_POWER_LEVELS
    for section, keys in SCHEMA.items():
        for key in keys:
            assert key in EXAMPLE.read_text()
            assert defaults[section][key] == keys[key][0]


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(text)
    return path


def test_flags_override_the_file_which_overrides_defaults(tmp_path):
    path = write(tmp_path, "[engine]\nthreads = 1\nn_batch = 4\n[executive]\nauto_inference = false\n")
    config = load_config(path, {"engine": {"threads": 2}})
    assert (config["engine"]["threads"], config["engine"]["n_batch"], config["executive"]["auto_inference"]) == (2, 4, False)


@pytest.mark.parametrize("text, message", [
    ("[engine]\nthreds = 2\n", "unknown key 'threds' in [engine]"),
    ("[engin]\nthreads = 2\n", "unknown section [engin]"),
    ("[engine]\nthreads = 0\n", "[engine] threads: expected an integer from 1 to 256, got 0"),
    ("[engine]\nthreads = 2.5\n", "[engine] threads: expected an integer"),
    ("[executive]\ntick_hz = nan\n", "[executive] tick_hz: expected a number"),
    ("[executive]\nauto_inference = 1\n", "auto_inference: expected true or false"),
    ("[sensors]\nbackend = \"magic\"\n", "expected one of sim, hil, jetson"),
    ("[link]\nport = \"\"\n", "port: expected a non-empty string"),
    ("engine = 3\n", "[engine] must be a table"),
    ("[engine\n", "is not valid TOML"),
    ("[[power_levels]]\nname = \"A\"\nwatts = 10\ntokens_per_s = 50\n[[power_levels]]\nname = \"B\"\nwatts = 5\n"
     "tokens_per_s = 80\n", "watts and tokens_per_s both increasing"),
    ("[[power_levels]]\nname = \"A\"\nwatts = 10\n", "needs exactly name, watts and tokens_per_s"),
    ("[[power_levels]]\nname = \"A\"\nwatts = -1\ntokens_per_s = 5\n", "above 0"),
])
def test_bad_files_are_one_line_naming_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    assert message in str(err.value) and "\n" not in str(err.value)
    assert str(err.value).startswith(f"config {tmp_path / 'node.toml'}")


def test_missing_file_and_bad_flags(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config .*: No such file"):
        load_config(tmp_path / "absent.toml")
    with pytest.raises(ConfigError, match="^command line: \\[engine\\] n_batch: expected an integer"):
        load_config(None, {"engine": {"n_batch": 0}})


def test_power_levels_from_the_file(tmp_path):
    path = write(tmp_path, "[[power_levels]]\nname = \"15W\"\nwatts = 15\ntokens_per_s = 90\n"
                           "[[power_levels]]\nname = \"MAXN\"\nwatts = 40\ntokens_per_s = 200\n")
    assert [level.name for level in load_config(path).power_levels] == ["15W", "MAXN"]
