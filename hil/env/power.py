"""Electrical power: a solar array and a battery feeding the bus load and the compute load.

Solar array: P = S · A · η · illumination · cos θ (W), with S the solar constant at 1 AU
(1361 W/m², Kopp & Lean 2011), A the cell area (m²), η the cell-to-bus efficiency, θ the angle
between the array normal and the Sun (cos θ clipped at 0: no power from behind).

Battery: energy E (Wh) in [0, capacity]. Each step the net power P_net = P_solar - P_load
either charges it (E += P_net · dt · η_charge) or discharges it (E -= |P_net| · dt / η_discharge).
A full battery cannot take the surplus: it is shed (the array is throttled, as a peak-power
tracker does). An empty battery cannot serve the load: the shortfall is unmet (a brownout,
which the rig reports). The floor is the state of charge the flight must not go below; the
battery itself goes down to 0, so the rig can tell when the flight breaks its floor.

Bookkeeping (Wh), which makes every step balance exactly:
    solar_in - load_served = ΔE + losses + shed
where load_served = load - unmet, losses are the charge and discharge inefficiencies, and shed
the surplus a full battery refused.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

SOLAR_CONSTANT_W_M2 = 1361.0


@dataclass(frozen=True)
class SolarArray:
    """Cell area (m²) and cell-to-bus efficiency (0..1)."""

    area_m2: float
    efficiency: float

    def __post_init__(self) -> None:
        if not (0.0 <= self.area_m2 <= 100.0):
            raise ValueError(f"solar array area {self.area_m2} m² is not in [0, 100]")
        if not (0.0 <= self.efficiency <= 1.0):
            raise ValueError(f"solar array efficiency {self.efficiency} is not in [0, 1]")

    def power_w(self, illumination: float, cos_sun: float) -> float:
        return SOLAR_CONSTANT_W_M2 * self.area_m2 * self.efficiency * illumination * max(0.0, cos_sun)


@dataclass
class EnergyLedger:
    """Running totals, Wh, since the battery was made."""

    solar_in_wh: float = 0.0
    load_wh: float = 0.0
    unmet_wh: float = 0.0
    losses_wh: float = 0.0
    shed_wh: float = 0.0


class Battery:
    """Capacity (Wh), initial state of charge (0..1), charge and discharge efficiencies (0..1],
    floor (0..1, as a state of charge)."""

    def __init__(self, capacity_wh: float, soc0: float, charge_eff: float, discharge_eff: float, floor: float):
        if not (capacity_wh > 0.0 and math.isfinite(capacity_wh)):
            raise ValueError(f"battery capacity {capacity_wh} Wh must be finite and > 0")
        for name, v in (("initial state of charge", soc0), ("floor", floor)):
            if not (0.0 <= v <= 1.0):
                raise ValueError(f"battery {name} {v} is not in [0, 1]")
        for name, v in (("charge efficiency", charge_eff), ("discharge efficiency", discharge_eff)):
            if not (0.0 < v <= 1.0):
                raise ValueError(f"battery {name} {v} is not in (0, 1]")
        self.capacity_wh = float(capacity_wh)
        self.energy_wh = soc0 * self.capacity_wh
        self.charge_eff = charge_eff
        self.discharge_eff = discharge_eff
        self.floor_wh = floor * self.capacity_wh
        self.ledger = EnergyLedger()

    @property
    def soc(self) -> float:
        return self.energy_wh / self.capacity_wh

    def step(self, solar_w: float, load_w: float, dt_s: float) -> None:
        """Apply dt_s seconds of solar input and load (both W, >= 0)."""
        if not (solar_w >= 0.0 and load_w >= 0.0 and dt_s >= 0.0):
            raise ValueError("battery step needs solar_w, load_w and dt_s >= 0")
        hours = dt_s / 3600.0
        led = self.ledger
        led.solar_in_wh += solar_w * hours
        led.load_wh += load_w * hours
        net_wh = (solar_w - load_w) * hours
        if net_wh >= 0.0:
            stored = min(net_wh * self.charge_eff, self.capacity_wh - self.energy_wh)
            taken = stored / self.charge_eff  # what the battery absorbed at its terminals
            self.energy_wh += stored
            led.losses_wh += taken - stored
            led.shed_wh += net_wh - taken
        else:
            want = -net_wh / self.discharge_eff  # chemical energy the shortfall needs
            drawn = min(want, self.energy_wh)
            self.energy_wh -= drawn
            delivered = drawn * self.discharge_eff
            led.losses_wh += drawn - delivered
            led.unmet_wh += -net_wh - delivered
        # keep rounding from leaving [0, capacity]
        self.energy_wh = min(max(self.energy_wh, 0.0), self.capacity_wh)
