"""The mode machine against the table in the ICD dictionary: every pair of modes, every start,
persistence across a restart (a real onboard database), and the dictionary's own checks."""
import copy
import itertools
import json

import pytest

from flight.executive.modes import BOOT, ModeMachine, ModeRefused
from flight.link.dictionary import DICTIONARY_PATH, Dictionary, DictionaryError, load_dictionary
from flight.store.mode_store import PersistedMode
from flight.store.onboard_db import OnboardDb

D = load_dictionary()
MODES = [m for m in D.enums["MODE"].values if m != BOOT]


class MemoryStore:
    def __init__(self, value=None):
        self.value = value
        self.saves = []

    def load(self):
        return self.value

    def save(self, value):
        self.value = value
        self.saves.append(value)


def machine(store, changes=None):
    return ModeMachine(D, store, lambda old, new, cause: (changes if changes is not None else []).append((old, new, cause)))


def test_the_table_is_the_one_in_the_issue():
    assert D.modes.modes == ("BOOT", "SAFE", "STANDBY", "INFERENCE")
    assert not D.modes.allowed("SAFE", "INFERENCE")  # out of SAFE only through STANDBY
    assert D.modes.after_reboot["INFERENCE"] == "STANDBY"
    assert D.modes.after_reboot["SAFE"] == "SAFE"


@pytest.mark.parametrize("persisted", [None, *MODES])
def test_a_start_enters_the_tables_mode_and_never_inference(persisted):
    store = MemoryStore(None if persisted is None else D.enum_value("MODE", persisted))
    changes = []
    entered = machine(store, changes).start()
    expected = D.modes.first_start if persisted is None else D.modes.after_reboot[persisted]
    assert entered == expected != "INFERENCE"
    assert changes == [(BOOT, expected, "BOOT")]
    assert store.value == D.enum_value("MODE", expected)


@pytest.mark.parametrize("start, target", list(itertools.product(MODES, MODES)))
def test_every_change_is_allowed_exactly_as_the_table_says(start, target):
    store = MemoryStore()
    modes = machine(store)
    modes.start()
    path = {"SAFE": ["SAFE"], "STANDBY": [], "INFERENCE": ["INFERENCE"]}[start]
    for step in path:
        modes.request(step, "COMMAND")
    saves = len(store.saves)
    if start == target:
        modes.request(target, "COMMAND")
        assert len(store.saves) == saves  # nothing to do, nothing written
    elif D.modes.allowed(start, target):
        modes.request(target, "COMMAND")
        assert modes.mode == target and store.value == D.enum_value("MODE", target)
    else:
        with pytest.raises(ModeRefused, match=f"{start} -> {target}"):
            modes.request(target, "COMMAND")
        assert modes.mode == start and len(store.saves) == saves


def test_bad_requests_are_refused_with_a_reason():
    modes = machine(MemoryStore())
    modes.start()
    for target in ("BOOT", "WARP", ""):
        with pytest.raises(ModeRefused):
            modes.request(target, "COMMAND")
    with pytest.raises(ValueError):
        modes.request("SAFE", "WHIM")


def test_mode_persists_across_a_restart_in_the_onboard_database(tmp_path):
    db = OnboardDb(tmp_path / "onboard.sqlite")
    modes = machine(PersistedMode(db))
    assert modes.start() == "STANDBY"
    modes.request("INFERENCE", "AUTO")
    modes.request("SAFE", "FDIR")
    db.close()
    db = OnboardDb(tmp_path / "onboard.sqlite")
    assert machine(PersistedMode(db)).start() == "SAFE"  # a fault's SAFE survives the reboot
    db.close()


def test_unknown_persisted_value_starts_safe():
    assert machine(MemoryStore(value=77)).start() == "SAFE"


RAW = json.loads(DICTIONARY_PATH.read_text())


@pytest.mark.parametrize("mutate, message", [
    (lambda m: m["transitions"].append(["SAFE", "WARP"]), "must join two different modes"),
    (lambda m: m["transitions"].append(["STANDBY", "BOOT"]), "back to BOOT"),
    (lambda m: m["after_reboot"].pop("SAFE"), "after_reboot"),
    (lambda m: m.update(first_start="INFERENCE"), "cannot lead to INFERENCE"),
])
def test_inconsistent_mode_tables_are_refused(mutate, message):
    raw = copy.deepcopy(RAW)
    mutate(raw["modes"])
    with pytest.raises(DictionaryError, match=message):
        Dictionary(raw)
