"""The `sim` sensor backend: deliberately minimal models, enough for the scheduler to see energy
and heat change as it computes. The physical models of the HIL rig (orbit from sgp4, conical
shadow, battery chemistry) live in hil/; flight/ never imports hil/.

- eclipse: a square wave, eclipse_s of every period_s (a 95-minute LEO orbit spends about 35
  minutes in Earth's shadow), starting in sunlight at t = 0;
- battery: linear, energy += (solar - load) * dt, clipped to [0, capacity];
- thermal: one first-order node, dT/dt = (T_env + R * P_compute - T) / tau.

State is integrated on each read over the time since the previous one, with the compute power
reported in between; time comes from an injected clock, so tests drive it.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from math import exp
from typing import Callable

from flight.sensors.reading import SensorReading


@dataclass(frozen=True)
class SimConfig:
    period_s: float = 95 * 60.0
    eclipse_s: float = 35 * 60.0
    solar_w: float = 60.0  # in sunlight
    base_load_w: float = 12.0  # bus, radio, computer idle
    battery_capacity_wh: float = 100.0
    battery_start_wh: float = 80.0
    ambient_c: float = 20.0  # the node's temperature with no compute load
    thermal_resistance_c_per_w: float = 2.0  # steady-state rise per compute watt
    thermal_time_constant_s: float = 300.0

    def __post_init__(self) -> None:
        if not 0 <= self.eclipse_s < self.period_s:
            raise ValueError("eclipse_s must be from 0 to less than period_s")
        if not 0 <= self.battery_start_wh <= self.battery_capacity_wh or self.battery_capacity_wh <= 0:
            raise ValueError("need 0 <= battery_start_wh <= battery_capacity_wh, capacity above 0")
        if min(self.solar_w, self.base_load_w, self.thermal_resistance_c_per_w) < 0 or self.thermal_time_constant_s <= 0:
            raise ValueError("powers and thermal resistance must be 0 or more, the time constant above 0")


class Eclipse:
    """Square-wave eclipse: sunlight for period - eclipse, then eclipse, repeating."""

    def __init__(self, period_s: float, eclipse_s: float):
        self.period_s = period_s
        self.eclipse_s = eclipse_s
        self.sunlit_s = period_s - eclipse_s

    def at(self, t: float) -> tuple[bool, float, float]:
        """(in eclipse, s to the next entry, s to the next exit) at time t."""
        phase = t % self.period_s
        if self.eclipse_s and phase >= self.sunlit_s:
            return True, 0.0, self.period_s - phase
        return False, self.sunlit_s - phase, self.sunlit_s - phase + self.eclipse_s

    def sunlit_seconds(self, t0: float, t1: float) -> float:
        """Seconds of sunlight in [t0, t1]."""
        def sunlit_before(t: float) -> float:  # sunlight in [0, t]
            whole, phase = divmod(t, self.period_s)
            return whole * self.sunlit_s + min(phase, self.sunlit_s)
        return sunlit_before(t1) - sunlit_before(t0)


class SimSensors:
    def __init__(self, config: SimConfig | None = None, clock: Callable[[], float] = time.monotonic):
        self.config = config or SimConfig()
        self._clock = clock
        self._eclipse = Eclipse(self.config.period_s, self.config.eclipse_s)
        self._t0 = clock()
        self._then = 0.0  # s since start, at the last integration
        self._battery_wh = self.config.battery_start_wh
        self._temperature_c = self.config.ambient_c
        self._compute_w = 0.0
        self._lock = threading.Lock()

    def report_compute_power(self, watts: float) -> None:
        if not watts >= 0:  # also refuses NaN
            raise ValueError(f"compute power must be 0 W or more, got {watts!r}")
        with self._lock:
            self._integrate()
            self._compute_w = watts

    def read(self) -> SensorReading:
        with self._lock:
            now = self._integrate()
            c = self.config
            in_eclipse, entry, exit_ = self._eclipse.at(now)
            return SensorReading(
                time_s=now, battery_wh=self._battery_wh, battery_capacity_wh=c.battery_capacity_wh,
                solar_w=0.0 if in_eclipse else c.solar_w, load_w=c.base_load_w + self._compute_w,
                compute_w=self._compute_w,
                in_eclipse=in_eclipse, eclipse_entry_in_s=entry, eclipse_exit_in_s=exit_,
                board_temperature_c=self._temperature_c)

    def _integrate(self) -> float:
        """Bring battery and temperature up to now (exact for constant power over the step)."""
        c = self.config
        now = max(self._then, self._clock() - self._t0)  # a clock that steps back never un-does time
        dt = now - self._then
        solar_j = c.solar_w * self._eclipse.sunlit_seconds(self._then, now)
        load_j = (c.base_load_w + self._compute_w) * dt
        self._battery_wh = min(c.battery_capacity_wh, max(0.0, self._battery_wh + (solar_j - load_j) / 3600.0))
        steady = c.ambient_c + c.thermal_resistance_c_per_w * self._compute_w
        self._temperature_c = steady + (self._temperature_c - steady) * exp(-dt / c.thermal_time_constant_s)
        self._then = now
        return now
