"""Thermal: two lumped nodes, the board (Jetson module with its GPU) and the radiator.

    C_b dT_b/dt = P_compute - G (T_b - T_r)
    C_r dT_r/dt = P_bus + α A_abs S · illumination + G (T_b - T_r) - ε σ A_rad (T_r⁴ - T_space⁴)

T in kelvin inside (°C at the interface), C heat capacities (J/K), G the board-to-radiator
conductance (W/K), P_compute the compute power the flight reports (W; all of it ends as heat in
the board), P_bus the rest of the bus load (W, dissipated in the structure the radiator is part
of), α the solar absorptance, A_abs the area facing the Sun (m²), S the solar constant (W/m²),
ε the infrared emissivity, A_rad the radiating area (m²), σ Stefan–Boltzmann, T_space 3 K.
Earth's infrared and albedo are left out: a cold-biased simplification.

Integration: backward Euler with the radiation term linearised about the current temperature
(one Newton step), sub-stepped at ≤ 1 s, so it stays stable and free of overshoot at the few
seconds per step the rig may use.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from hil.env.power import SOLAR_CONSTANT_W_M2

STEFAN_BOLTZMANN = 5.670374419e-8  # W m⁻² K⁻⁴ (CODATA 2018, exact)
T_SPACE_K = 3.0
KELVIN = 273.15
MAX_SUBSTEP_S = 1.0


@dataclass(frozen=True)
class ThermalParams:
    board_heat_capacity_j_k: float
    radiator_heat_capacity_j_k: float
    conductance_w_k: float
    radiator_area_m2: float
    emissivity: float
    absorptance: float
    sunlit_area_m2: float

    def __post_init__(self) -> None:
        for name in ("board_heat_capacity_j_k", "radiator_heat_capacity_j_k", "conductance_w_k", "radiator_area_m2"):
            v = getattr(self, name)
            if not (v > 0.0 and math.isfinite(v)):
                raise ValueError(f"thermal {name} {v} must be finite and > 0")
        for name in ("emissivity", "absorptance"):
            v = getattr(self, name)
            if not (0.0 < v <= 1.0 if name == "emissivity" else 0.0 <= v <= 1.0):
                raise ValueError(f"thermal {name} {v} is not in [0, 1]")
        if not (0.0 <= self.sunlit_area_m2 <= 100.0):
            raise ValueError(f"thermal sunlit_area_m2 {self.sunlit_area_m2} is not in [0, 100]")


class ThermalModel:
    def __init__(self, params: ThermalParams, board_c: float, radiator_c: float):
        self.p = params
        self.tb = board_c + KELVIN
        self.tr = radiator_c + KELVIN

    @property
    def board_c(self) -> float:
        return self.tb - KELVIN

    @property
    def radiator_c(self) -> float:
        return self.tr - KELVIN

    def step(self, compute_w: float, bus_w: float, illumination: float, dt_s: float) -> None:
        if dt_s <= 0.0:
            return
        n = math.ceil(dt_s / MAX_SUBSTEP_S)
        h = dt_s / n
        p = self.p
        q_r = bus_w + p.absorptance * p.sunlit_area_m2 * SOLAR_CONSTANT_W_M2 * illumination
        k = p.emissivity * STEFAN_BOLTZMANN * p.radiator_area_m2
        for _ in range(n):
            # radiation k(T⁴ - Ts⁴) ≈ k(T0⁴ - Ts⁴) + 4kT0³ (T - T0); solve the 2x2 linear system
            #   (C_b/h + G) Tb - G Tr = C_b/h Tb0 + P_c
            #   -G Tb + (C_r/h + G + 4kT0³) Tr = C_r/h Tr0 + q_r - k(T0⁴ - Ts⁴) + 4kT0³ T0
            t0 = self.tr
            lin = 4.0 * k * t0**3
            a11 = p.board_heat_capacity_j_k / h + p.conductance_w_k
            a22 = p.radiator_heat_capacity_j_k / h + p.conductance_w_k + lin
            g = p.conductance_w_k
            b1 = p.board_heat_capacity_j_k / h * self.tb + compute_w
            b2 = p.radiator_heat_capacity_j_k / h * t0 + q_r - k * (t0**4 - T_SPACE_K**4) + lin * t0
            det = a11 * a22 - g * g
            self.tb = (b1 * a22 + g * b2) / det
            self.tr = (a11 * b2 + g * b1) / det
