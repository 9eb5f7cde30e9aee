"""The executive's mode machine: BOOT → SAFE ↔ STANDBY ↔ INFERENCE, by the table in the ICD
dictionary (Dictionary.modes), which is the only place the allowed changes are written down.

A change is persisted before it takes effect and reported, with its cause, to on_change (the
node wires that to an event and a housekeeping channel). A start is BOOT, then the mode the
table gives for the one persisted at the last stop or death.
"""
from __future__ import annotations

import threading
from typing import Callable, Protocol

from flight.link.dictionary import Dictionary

BOOT = "BOOT"


class ModeStore(Protocol):
    def load(self) -> int | None:
        """The MODE value persisted last, or None before the first start."""

    def save(self, value: int) -> None:
        """Persist (durably) a MODE value."""


class ModeRefused(ValueError):
    """A mode change the table does not allow; the message names it."""


# on_change(previous mode, new mode, cause): cause is a MODE_CAUSE name.
ModeListener = Callable[[str, str, str], None]


class ModeMachine:
    def __init__(self, dictionary: Dictionary, store: ModeStore, on_change: ModeListener):
        self._table = dictionary.modes
        self._mode_enum = dictionary.enums["MODE"]
        self._causes = dictionary.enums["MODE_CAUSE"].values
        self._store = store
        self._on_change = on_change
        self._lock = threading.Lock()
        self._mode = BOOT

    @property
    def mode(self) -> str:
        return self._mode

    def start(self) -> str:
        """Leave BOOT for the mode the table gives after a reboot; returns it."""
        persisted = self._store.load()
        if persisted is None:
            target = self._table.first_start
        else:
            # An unknown value (a store written by a newer dictionary) is taken as a fault: SAFE.
            target = self._table.after_reboot.get(self._mode_enum.name_of(persisted), "SAFE")
        self._change(target, "BOOT")
        return target

    def request(self, target: str, cause: str) -> None:
        """Change to target for cause (a MODE_CAUSE name); ModeRefused if the table forbids it.
        Asking for the current mode is allowed and changes nothing."""
        if target not in self._mode_enum.values or target == BOOT:
            raise ModeRefused(f"{target} is not a mode one can change to")
        if cause not in self._causes:
            raise ValueError(f"unknown mode change cause {cause!r}")
        self._change(target, cause)

    def _change(self, target: str, cause: str) -> None:
        with self._lock:  # check, persist and switch as one step: two requests never both pass
            previous = self._mode
            if target == previous:
                return
            if not self._table.allowed(previous, target):
                raise ModeRefused(f"{previous} -> {target} is not an allowed mode change")
            self._store.save(self._mode_enum.values[target])
            self._mode = target
        self._on_change(previous, target, cause)
