"""The rig's environment: orbit, stations, power, thermal and radiation stepped together.

Simulated time is Unix seconds (UTC). step(dt) advances it in sub-steps of at most 1 s: each
sub-step takes the orbit's illumination and contact at its start (windows precomputed by
orbit.py, so no SGP4 runs in sunlight), charges or drains the battery with the array's power
and the bus plus compute load, and advances the thermal nodes. Upsets falling in the step are
queued for due_upsets(). Units: W, Wh, °C, degrees, seconds.

The defaults (EnvConfig) describe a 6U-class node with an NVIDIA Jetson Orin Nano: deployable
triple-junction arrays of ~0.25 m² of cells (~95 W in full sun when pointed), a 100 Wh Li-ion
pack, an 8 W bus without compute, and a white-painted radiator; the orbit is default.tle (S-NET
D, ~540 km sun-synchronous) and the ground station is KSAT's SvalSat, which sees nearly every
orbit of a polar satellite.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from flight.orbit import Satellite, TleError, parse_tle
from hil.env.orbit import OrbitModel, OrbitSample
from hil.env.power import Battery, SolarArray
from hil.env.radiation import SeuSource, Upset
from hil.env.stations import Station, Window
from hil.env.thermal import ThermalModel, ThermalParams

DEFAULT_TLE = (Path(__file__).with_name("default.tle")).read_text()
DEFAULT_STATION = Station("svalsat", 78.2297, 15.4077, 500.0, 5.0)
MAX_STEP_S = 1.0


@dataclass(frozen=True)
class EnvState:
    t: float                   # simulated time, unix s (UTC)
    illumination: float        # 0..1
    in_eclipse: bool           # umbra or penumbra (illumination < 1)
    eclipse_entry_in_s: float  # s until the next eclipse entry (0 while in eclipse; NO_EVENT_S if none known)
    eclipse_exit_in_s: float   # s until the next eclipse exit
    contact: bool              # some station sees the satellite above its mask
    station: str | None        # the station in contact (the highest pass), else None
    elevation_deg: float       # of the best station (negative when none sees it)
    solar_w: float
    bus_load_w: float
    compute_w: float           # as last reported by the flight
    battery_wh: float
    battery_capacity_wh: float
    battery_floor_wh: float
    soc: float
    board_c: float
    radiator_c: float
    unmet_wh: float = 0.0      # load the empty battery could not serve since the start (brownout)


@dataclass(frozen=True)
class EnvConfig:
    """The [environment] table of a scenario; every field has a documented default."""

    tle: str = DEFAULT_TLE                                  # TLE text (2 or 3 lines)
    stations: tuple[Station, ...] = (DEFAULT_STATION,)
    array_area_m2: float = 0.25                             # cell area, m²
    array_efficiency: float = 0.28                          # cells (29.5 % BOL) times the MPPT
    array_pointing: str = "sun"                             # "sun" (tracked) or "zenith" (body-mounted, nadir-pointing)
    battery_capacity_wh: float = 100.0
    battery_soc0: float = 0.8                               # state of charge at the start, 0..1
    battery_charge_eff: float = 0.95
    battery_discharge_eff: float = 0.95
    battery_floor: float = 0.3                              # state of charge the flight must keep, 0..1
    bus_load_w: float = 8.0                                 # OBC, ADCS, radio receive: all but compute
    board_heat_capacity_j_k: float = 150.0                  # Orin Nano module and heat spreader
    radiator_heat_capacity_j_k: float = 1350.0              # ~1.5 kg of aluminium panel and structure
    conductance_w_k: float = 1.0                            # board to radiator (thermal strap)
    radiator_area_m2: float = 0.1
    emissivity: float = 0.85                                # white paint, infrared
    absorptance: float = 0.2                                # white paint, solar
    sunlit_area_m2: float = 0.06                            # area the Sun heats
    board_c0: float = 20.0
    radiator_c0: float = 10.0
    seu_rate_per_bit_day: float = 1e-6                      # nominal LEO; storms 1e-3 and more
    weights_octets: int = 98_362_432                        # the packaged SmolLM2-135M Q4_1; set to the model flown

    def __post_init__(self) -> None:
        # build every model once, so a bad value is refused here with its one-line message
        self.satellite()
        self.thermal_params()
        SolarArray(self.array_area_m2, self.array_efficiency)
        Battery(self.battery_capacity_wh, self.battery_soc0, self.battery_charge_eff,
                self.battery_discharge_eff, self.battery_floor)
        SeuSource(self.seu_rate_per_bit_day, self.weights_octets)
        if self.array_pointing not in ("sun", "zenith"):
            raise ValueError(f"array_pointing must be 'sun' or 'zenith', not {self.array_pointing!r}")
        if not self.bus_load_w >= 0.0 or not math.isfinite(self.bus_load_w):
            raise ValueError(f"bus_load_w {self.bus_load_w} must be finite and >= 0")
        for name in ("board_c0", "radiator_c0"):
            if not (-100.0 <= getattr(self, name) <= 150.0):
                raise ValueError(f"{name} {getattr(self, name)} is not in [-100, 150] °C")
        if len({s.name for s in self.stations}) != len(self.stations):
            raise ValueError("station names must be unique")

    def satellite(self) -> Satellite:
        return Satellite(parse_tle(self.tle))

    def thermal_params(self) -> ThermalParams:
        return ThermalParams(
            self.board_heat_capacity_j_k, self.radiator_heat_capacity_j_k, self.conductance_w_k,
            self.radiator_area_m2, self.emissivity, self.absorptance, self.sunlit_area_m2,
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EnvConfig":
        """From a scenario's [environment] table. Keys are the fields' names, plus `tle_file`
        (a path, instead of `tle`); stations are a list of tables with name, lat_deg, lon_deg,
        alt_m and mask_deg. Raises ValueError, one line, on an unknown key or a bad value."""
        if not isinstance(d, dict):
            raise ValueError("environment must be a table")
        known = {f.name: f for f in fields(cls)}
        kw: dict[str, Any] = {}
        for key, value in d.items():
            if key == "tle_file":
                if "tle" in d:
                    raise ValueError("environment: give tle or tle_file, not both")
                try:
                    kw["tle"] = Path(value).read_text()
                except (OSError, TypeError, UnicodeDecodeError) as exc:
                    raise ValueError(f"environment: tle_file {value!r} cannot be read: {exc}") from None
            elif key == "stations":
                kw["stations"] = _stations(value)
            elif key not in known:
                raise ValueError(f"environment: unknown key {key!r} (known: {', '.join(sorted([*known, 'tle_file']))})")
            elif known[key].type in ("float", "int"):
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                    raise ValueError(f"environment: {key} must be a finite number, not {value!r}")
                if known[key].type == "int" and value != int(value):
                    raise ValueError(f"environment: {key} must be a whole number, not {value!r}")
                kw[key] = int(value) if known[key].type == "int" else float(value)
            elif not isinstance(value, str):
                raise ValueError(f"environment: {key} must be a string, not {value!r}")
            else:
                kw[key] = value
        try:
            return cls(**kw)
        except TleError as exc:
            raise ValueError(f"environment: tle: {exc}") from None
        except ValueError as exc:
            raise ValueError(f"environment: {exc}") from None


def _stations(value: Any) -> tuple[Station, ...]:
    if not isinstance(value, list) or not value:
        raise ValueError("environment: stations must be a non-empty list of tables")
    out = []
    for i, s in enumerate(value):
        if not isinstance(s, dict) or not {"name", "lat_deg", "lon_deg"} <= s.keys() or \
                not s.keys() <= {"name", "lat_deg", "lon_deg", "alt_m", "mask_deg"}:
            raise ValueError(f"environment: stations[{i}] needs name, lat_deg, lon_deg and optionally alt_m, mask_deg only")
        nums = {k: v for k, v in s.items() if k != "name"}
        if not isinstance(s["name"], str) or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in nums.values()):
            raise ValueError(f"environment: stations[{i}]: name must be a string and the rest numbers")
        try:
            out.append(Station(s["name"], **{k: float(v) for k, v in nums.items()}))
        except ValueError as exc:
            raise ValueError(f"environment: stations[{i}]: {exc}") from None
    return tuple(out)


class Environment:
    """Every model stepped in simulated time; see the module docstring."""

    def __init__(self, config: EnvConfig, start_unix: float, seed: int = 0):
        if not math.isfinite(start_unix):
            raise ValueError("start_unix must be finite")
        self.config = config
        self.t = float(start_unix)
        self.orbit = OrbitModel(config.satellite(), config.stations, self.t)
        self.array = SolarArray(config.array_area_m2, config.array_efficiency)
        self.battery = Battery(config.battery_capacity_wh, config.battery_soc0, config.battery_charge_eff,
                               config.battery_discharge_eff, config.battery_floor)
        self.thermal = ThermalModel(config.thermal_params(), config.board_c0, config.radiator_c0)
        self.seu = SeuSource(config.seu_rate_per_bit_day, config.weights_octets, seed)
        self.bus_load_w = config.bus_load_w
        self.compute_w = 0.0
        self._sample = self.orbit.sample(self.t)
        self._solar_w = self._solar(self._sample, self.t)
        self._upsets: list[Upset] = []
        self._state = self._make_state()

    def set_compute_power(self, watts: float) -> None:
        """The compute power the flight reports (W); it loads the battery and heats the board."""
        if not (watts >= 0.0 and math.isfinite(watts)):
            raise ValueError(f"compute power {watts} W must be finite and >= 0")
        self.compute_w = float(watts)

    def set_seu_rate(self, rate_per_bit_day: float) -> None:
        """A radiation storm starts or ends."""
        self.seu.set_rate(rate_per_bit_day)

    def _solar(self, sample: OrbitSample, t: float) -> float:
        if sample.illumination == 0.0:
            return 0.0
        cos = 1.0 if self.config.array_pointing == "sun" else self.orbit.sun_cosine_zenith(t)
        return self.array.power_w(sample.illumination, cos)

    def step(self, dt_s: float) -> EnvState:
        """Advance simulated time by dt_s (>= 0), in sub-steps of at most 1 s."""
        if not (dt_s >= 0.0 and math.isfinite(dt_s)):
            raise ValueError(f"step {dt_s} s must be finite and >= 0")
        self._upsets.extend(self.seu.draw(self.t, dt_s))
        n = max(1, math.ceil(dt_s / MAX_STEP_S))
        h = dt_s / n
        for _ in range(n):
            # the sub-step runs on the conditions at its start (edges are < 1 s off at most)
            self.battery.step(self._solar_w, self.bus_load_w + self.compute_w, h)
            self.thermal.step(self.compute_w, self.bus_load_w, self._sample.illumination, h)
            self.t += h
            self._sample = self.orbit.sample(self.t)
            self._solar_w = self._solar(self._sample, self.t)
        self._state = self._make_state()
        return self._state

    def _make_state(self) -> EnvState:
        s = self._sample
        if s.contact is not None:
            station: str | None = s.contact.station
            elevation = self.orbit.elevations(self.t)[station]
        else:
            # out of every window: the highest station's elevation, below its mask. Computed
            # once per step() call, not per sub-step, which keeps stepping fast.
            station = None
            elevation = max(self.orbit.elevations(self.t).values())
        b = self.battery
        return EnvState(
            t=self.t, illumination=s.illumination, in_eclipse=s.in_eclipse,
            eclipse_entry_in_s=s.entry_in_s, eclipse_exit_in_s=s.exit_in_s,
            contact=s.contact is not None, station=station, elevation_deg=elevation,
            solar_w=self._solar_w, bus_load_w=self.bus_load_w, compute_w=self.compute_w,
            battery_wh=b.energy_wh, battery_capacity_wh=b.capacity_wh, battery_floor_wh=b.floor_wh,
            soc=b.soc, board_c=self.thermal.board_c, radiator_c=self.thermal.radiator_c,
            unmet_wh=b.ledger.unmet_wh,
        )

    @property
    def state(self) -> EnvState:
        return self._state

    def contact_windows(self, start_unix: float, end_unix: float) -> list[Window]:
        return self.orbit.contact_windows(start_unix, end_unix)

    def due_upsets(self) -> list[Upset]:
        """The upsets that fell in the steps since the last call, in time order; drained."""
        out, self._upsets = self._upsets, []
        return out
