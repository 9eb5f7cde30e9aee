"""What every sensor backend reports, and what the executive may tell it.

The executive reads one SensorReading per tick and hands the energy and thermal parts to the
scheduler; it reports the compute power it is drawing (report_compute_power) so that a
simulated backend can integrate it (a measuring backend ignores it).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class SensorReading:
    time_s: float  # onboard time of the reading, s
    battery_wh: float  # stored energy, Wh
    battery_capacity_wh: float  # Wh
    solar_w: float  # input from the arrays now, W
    load_w: float  # everything the bus draws now (base load + compute), W
    compute_w: float  # of that, what compute draws (measured; the sim's is what it was told), W
    in_eclipse: bool
    eclipse_entry_in_s: float  # s until the next eclipse entry (0 while in eclipse)
    eclipse_exit_in_s: float  # s until the next eclipse exit (from the coming eclipse if in sunlight)
    board_temperature_c: float  # °C

    @property
    def state_of_charge(self) -> float:
        return self.battery_wh / self.battery_capacity_wh


class SensorBackend(Protocol):
    def read(self) -> SensorReading:
        """The state now."""

    def report_compute_power(self, watts: float) -> None:
        """The power the engine draws from now on (a simulation integrates it; a measurement ignores it)."""
