"""The current value of each telemetry channel; a housekeeping packet is a snapshot of it."""
from __future__ import annotations

import threading
from typing import Any

from flight.link.dictionary import Dictionary, ValueCheckError

_COUNTER_MODULO = {"u8": 1 << 8, "u16": 1 << 16, "u32": 1 << 32, "u64": 1 << 64}


class Telemetry:
    def __init__(self, dictionary: Dictionary):
        self._dictionary = dictionary
        self._values: dict[str, Any] = {}
        self._lock = threading.Lock()

    def set(self, name: str, value: Any) -> None:
        """Set a channel; raises KeyError for an unknown channel, ValueCheckError for a bad value."""
        channel = self._dictionary.channel_by_name[name]
        self._dictionary.check_channel_map({channel.id: value})
        with self._lock:
            self._values[name] = value

    def add(self, name: str, delta: int = 1) -> None:
        """Increment a counter channel, wrapping like the unsigned integer it is."""
        channel = self._dictionary.channel_by_name[name]
        if channel.type not in _COUNTER_MODULO:
            raise ValueCheckError(f"{name} is not a counter")
        with self._lock:
            self._values[name] = (self._values.get(name, 0) + delta) % _COUNTER_MODULO[channel.type]

    def get(self, name: str) -> Any:
        with self._lock:
            return self._values.get(name)

    def zero(self, names: list[str]) -> None:
        with self._lock:
            for name in names:
                self._values[name] = 0

    def snapshot(self) -> dict[int, Any]:
        by_name = self._dictionary.channel_by_name
        with self._lock:
            return {by_name[name].id: value for name, value in self._values.items()}
