"""What a second of onboard compute costs: the node's whole cost (hardware, launch, operations
over its lifetime) spread over the seconds it spends generating tokens.

Pure Python and standard library only: the ground's reports import this same model, so the
figures a result carries and the figures a report recomputes agree.

The model
---------
    total_usd              = hardware_usd + launch_usd + operations_usd_per_year * lifetime_years
    compute_seconds        = lifetime_years * SECONDS_PER_YEAR * duty_cycle
    usd_per_compute_second = total_usd / compute_seconds
    cost_usd(compute_s)    = compute_s * usd_per_compute_second

Every dollar is charged to compute time, because selling tokens is the node's only business:
the time it is not generating (eclipse with a low battery, thermal limits, an empty queue,
commissioning, safe mode) is paid for by the tokens it does generate. duty_cycle is the
fraction of the lifetime spent generating. Its default, 0.5, is a planning guess, not a
measurement: in a ~550 km sun-synchronous orbit roughly a third of each ~95 min orbit is in
eclipse, where the battery allows little compute, and the rest loses some time to thermal
caps, empty queues, contacts and faults. Replace it with the measured fraction (the
housekeeping's compute time over elapsed time) once the node flies. Energy itself costs nothing
at the margin in orbit: the solar array and battery are part of the hardware price, so joules
per token is an efficiency and sizing figure, not a line of the bill.

Defaults and their sources (checked with the project's search tool, 2026; "verified" means the
figure was read in the stored copy of the page named, "unverified" means it was not):

- launch: SpaceX Smallsat Rideshare (Transporter) to SSO, $350 000 for up to 50 kg, then
  $7 000/kg. Official page https://www.spacex.com/rideshare/ (as recorded by a colleague,
  2026; the official page itself was not in the stored corpus). Verified at a secondary source
  quoting that page: newspaceeconomy.ca, "SpaceX Rideshare Pricing as of February 2026"
  (2026-02-27): "$350,000 for up to 50 kg, with additional mass priced at $7,000 per kilogram";
  it also notes that a payload under 50 kg still pays for the whole 50 kg block. Not included:
  the deployer/dispenser and integration services, which are bought separately.
- compute hardware: NVIDIA Jetson Orin Nano Super Developer Kit, $249 (NVIDIA announcement,
  December 2024). Verified only at secondary sources that quote it ("NVIDIA's $249
  generative-AI edge computer", brojogopalsapui.com Jetson Orin Nano Super deep dive, citing
  NVIDIA's Dec 2024 datasheet); NVIDIA's own announcement was not in the stored corpus. A
  flight unit would be the production module on a space-rated carrier board, not the dev kit;
  the dev kit price is the floor.
- bus (structure, EPS with solar array and battery, ADCS, on-board computer, radio, integration
  and test) for a 12U / ~20 kg CubeSat-class satellite able to feed 25 W of compute: $1 000 000.
  UNVERIFIED order of magnitude: no vendor price list (EnduroSat, GomSpace, ISISpace, NASA's
  Small Spacecraft State of the Art report, which lists platforms but not prices) was found in
  the stored corpus. What was found points the same way: a 2015 study for the European
  Commission of European small-satellite carriers priced most 3U CubeSats at about 1 MEUR
  including launch (as summarised at https://tomsegert.com/2022/12/12/i-found-gold/, 2022),
  and Nervold et al., "A Pathway to Small Satellite Market Growth", Advances in Aerospace
  Science and Technology 1(1), 2016, put entry-level COTS CubeSat hardware "in the six-figure
  range". A 12U bus with deployable arrays is several times a 3U's hardware; ask vendors for
  quotes before quoting this number to anyone.
- mass: 20 kg, a 12U CubeSat (the CubeSat specification allows up to 2 kg per unit, so 12U
  is at most 24 kg). Under the 50 kg rideshare block, so launch is the block price.
- operations: ground-station time only, AWS Ground Station on-demand narrowband (contacts of
  40 MHz bandwidth or less), $10 per minute, times passes per day times minutes per pass.
  Billing structure verified (docs.aws.amazon.com/ground-station/latest/ug/contacts.billing.html:
  per minute of antenna time, each contact rounded up to the minute, narrowband <= 40 MHz,
  on-demand or cheaper reserved minutes). The $10/min rate is UNVERIFIED: recalled from
  https://aws.amazon.com/ground-station/pricing/, which was not in the stored corpus. 4 passes a
  day of 10 minutes is a planning guess for one mid-latitude station and a ~550 km SSO. Staff,
  licences and insurance are not counted (other_operations_usd_per_year, default 0).
- lifetime: 5 years. Virtus Solis, "Changing Satellite Design Performance"
  (https://virtussolis.space/blog/changing-satellite-design-performance, from the Union of
  Concerned Scientists satellite database) reports the average design life of LEO satellites
  shortening to about 4 years; 5 years is the upper end for a CubeSat-class bus, and also the
  FCC's post-mission disposal limit for LEO. At 4 years every cost per second rises by about
  a fifth.

The default model, at the flight software's default power levels (compute watts on top of the
bus; tokens/s are rough guesses, see flight/config.py):

    total ~ $2.08 M (hardware $1.00 M, launch $0.35 M, operations $0.73 M over 5 years)
    usd_per_compute_second ~ $0.0264 (duty cycle 0.5: 7.9e7 compute seconds)
    LOW   7 W,  40 tok/s: 0.175 J/token, ~$6.6e-4 per token (~$660 per million tokens)
    MID  15 W,  90 tok/s: 0.167 J/token, ~$2.9e-4 per token (~$290 per million tokens)
    HIGH 25 W, 160 tok/s: 0.156 J/token, ~$1.6e-4 per token (~$165 per million tokens)

Orders of magnitude against the ground (figures from ../shared/REFERENCE.md):

- Energy per token: about 0.12 J/token for an 8B model on an H100 at batch 64 (ML.ENERGY
  leaderboard v3), against ~0.16 J/token here for a 135M model (60 times smaller) on a Jetson.
  Per parameter the datacentre GPU is far more efficient; per token the two are the same order.
- Electricity per token on the ground: 0.12 J x PUE 1.1-1.58 at 4-18.6 cents/kWh is
  ~1.5e-9 to 1e-8 $/token (see ground_electricity_usd_per_token). The orbital node's cost per
  token, ~1e-4 $, is four to five orders of magnitude above the ground's electricity bill: at
  this scale a token's price is set by capital and operations spread over few compute seconds,
  not by energy. Google's Suncatcher study puts parity with ground energy cost at launch prices
  under about $200/kg (mid-2030s), and for much larger, denser compute per kilogram.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

SECONDS_PER_YEAR = 365.25 * 86400.0  # Julian year

# --- Defaults (sources in the module docstring) ---------------------------------------------
DEFAULT_BUS_USD = 1_000_000.0  # 12U bus, integrated and tested: UNVERIFIED order of magnitude
DEFAULT_JETSON_USD = 249.0  # Jetson Orin Nano Super Developer Kit, NVIDIA, Dec 2024
DEFAULT_HARDWARE_USD = DEFAULT_BUS_USD + DEFAULT_JETSON_USD
DEFAULT_MASS_KG = 20.0  # 12U CubeSat class (at most 2 kg per unit)
DEFAULT_LAUNCH_BASE_USD = 350_000.0  # SpaceX rideshare to SSO, 2026: $350k ...
DEFAULT_LAUNCH_BASE_KG = 50.0  # ... for up to 50 kg ...
DEFAULT_LAUNCH_USD_PER_KG = 7_000.0  # ... then $7k per kg above
DEFAULT_LIFETIME_YEARS = 5.0
DEFAULT_DUTY_CYCLE = 0.5  # fraction of the lifetime spent generating (planning guess)
DEFAULT_GROUND_USD_PER_MINUTE = 10.0  # AWS Ground Station narrowband on-demand: UNVERIFIED rate
DEFAULT_PASSES_PER_DAY = 4.0  # one mid-latitude station, ~550 km SSO (planning guess)
DEFAULT_MINUTES_PER_PASS = 10.0
DEFAULT_OTHER_OPERATIONS_USD_PER_YEAR = 0.0  # staff, licences, insurance: not counted

# Ground comparison (../shared/REFERENCE.md, "Cost of a token")
GROUND_H100_J_PER_TOKEN = 0.12  # 8B model, H100, batch 64 (ML.ENERGY leaderboard v3)
GROUND_PUE_AVERAGE = 1.58  # industry average (Uptime Institute 2023); best hyperscale ~1.10
GROUND_USD_PER_KWH = (0.04, 0.066, 0.186)  # Starcloud's case; US industrial 2023 range (EIA)


def rideshare_launch_usd(mass_kg: float, base_usd: float = DEFAULT_LAUNCH_BASE_USD,
                         base_kg: float = DEFAULT_LAUNCH_BASE_KG,
                         usd_per_kg: float = DEFAULT_LAUNCH_USD_PER_KG) -> float:
    """A rideshare price: base_usd buys up to base_kg (a lighter payload still pays the whole
    block), each kilogram above costs usd_per_kg."""
    return base_usd + usd_per_kg * max(0.0, mass_kg - base_kg)


def ground_electricity_usd_per_token(j_per_token: float = GROUND_H100_J_PER_TOKEN,
                                     usd_per_kwh: float = GROUND_USD_PER_KWH[1],
                                     pue: float = GROUND_PUE_AVERAGE) -> float:
    """The electricity bill of one token in a ground datacentre: joules per token at the wall
    (times the PUE) at the given price. The comparison figure for the reports."""
    return j_per_token * pue / 3.6e6 * usd_per_kwh


@dataclass(frozen=True)
class CostModel:
    """One node's costs. The field names are the [cost] configuration keys, so
    CostModel(**config["cost"]) builds it. ValueError for a value out of range."""

    hardware_usd: float = DEFAULT_HARDWARE_USD  # everything built: bus and compute payload, $
    mass_kg: float = DEFAULT_MASS_KG  # launch mass, kg
    launch_base_usd: float = DEFAULT_LAUNCH_BASE_USD  # rideshare price of the base block, $
    launch_base_kg: float = DEFAULT_LAUNCH_BASE_KG  # mass the base block buys, kg
    launch_usd_per_kg: float = DEFAULT_LAUNCH_USD_PER_KG  # each kg above the block, $/kg
    lifetime_years: float = DEFAULT_LIFETIME_YEARS  # operating life the costs are spread over
    duty_cycle: float = DEFAULT_DUTY_CYCLE  # fraction of the lifetime spent generating tokens
    ground_usd_per_minute: float = DEFAULT_GROUND_USD_PER_MINUTE  # ground-station antenna time
    passes_per_day: float = DEFAULT_PASSES_PER_DAY  # contacts bought per day
    minutes_per_pass: float = DEFAULT_MINUTES_PER_PASS  # billed minutes per contact
    other_operations_usd_per_year: float = DEFAULT_OTHER_OPERATIONS_USD_PER_YEAR  # staff etc.
    # A launch price other than the rideshare formula (mass_kg -> $), e.g. a ground report's
    # "what if launch cost $200/kg"; not a configuration key.
    launch_price: Callable[[float], float] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("hardware_usd", "mass_kg", "launch_base_usd", "launch_base_kg",
                     "launch_usd_per_kg", "ground_usd_per_minute", "passes_per_day",
                     "minutes_per_pass", "other_operations_usd_per_year"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"cost model: {name} must be a finite number >= 0, got {value!r}")
        for name in ("lifetime_years", "duty_cycle"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"cost model: {name} must be a finite number > 0, got {value!r}")
        if self.duty_cycle > 1:
            raise ValueError(f"cost model: duty_cycle is a fraction of the lifetime, at most 1, got {self.duty_cycle!r}")

    # --- The parts -----------------------------------------------------------------------
    @property
    def launch_usd(self) -> float:
        if self.launch_price is not None:
            return float(self.launch_price(self.mass_kg))
        return rideshare_launch_usd(self.mass_kg, self.launch_base_usd, self.launch_base_kg,
                                    self.launch_usd_per_kg)

    @property
    def ground_station_usd_per_year(self) -> float:
        return self.ground_usd_per_minute * self.passes_per_day * self.minutes_per_pass * 365.25

    @property
    def operations_usd_per_year(self) -> float:
        return self.ground_station_usd_per_year + self.other_operations_usd_per_year

    @property
    def operations_usd(self) -> float:
        """Operations over the whole lifetime, $."""
        return self.operations_usd_per_year * self.lifetime_years

    @property
    def total_usd(self) -> float:
        return self.hardware_usd + self.launch_usd + self.operations_usd

    @property
    def lifetime_s(self) -> float:
        return self.lifetime_years * SECONDS_PER_YEAR

    @property
    def compute_seconds(self) -> float:
        """Seconds of the lifetime spent generating tokens (lifetime times duty cycle)."""
        return self.lifetime_s * self.duty_cycle

    @property
    def usd_per_compute_second(self) -> float:
        return self.total_usd / self.compute_seconds

    # --- Use -----------------------------------------------------------------------------
    def cost_usd(self, compute_s: float) -> float:
        """The cost of compute_s seconds of compute, $."""
        return compute_s * self.usd_per_compute_second

    def usd_per_token(self, tokens_per_s: float) -> float:
        """$ per token at a steady aggregate throughput (0 tok/s: inf)."""
        return self.usd_per_compute_second / tokens_per_s if tokens_per_s > 0 else math.inf

    def breakdown(self) -> dict[str, float]:
        """The model's figures, for reports: inputs, parts and results, each a plain float."""
        return {
            "hardware_usd": self.hardware_usd,
            "mass_kg": self.mass_kg,
            "launch_usd": self.launch_usd,
            "ground_station_usd_per_year": self.ground_station_usd_per_year,
            "other_operations_usd_per_year": self.other_operations_usd_per_year,
            "operations_usd_per_year": self.operations_usd_per_year,
            "lifetime_years": self.lifetime_years,
            "operations_usd": self.operations_usd,
            "total_usd": self.total_usd,
            "hardware_fraction": self.hardware_usd / self.total_usd if self.total_usd else 0.0,
            "launch_fraction": self.launch_usd / self.total_usd if self.total_usd else 0.0,
            "operations_fraction": self.operations_usd / self.total_usd if self.total_usd else 0.0,
            "duty_cycle": self.duty_cycle,
            "lifetime_s": self.lifetime_s,
            "compute_seconds": self.compute_seconds,
            "usd_per_compute_second": self.usd_per_compute_second,
            "usd_per_compute_hour": self.usd_per_compute_second * 3600.0,
        }


# The [cost] configuration section: key -> (default, meaning). flight/config.py's SCHEMA adds
# the range checks; the keys are CostModel's fields.
CONFIG_KEYS: dict[str, tuple[float, str]] = {
    "hardware_usd": (DEFAULT_HARDWARE_USD, "satellite hardware: bus (structure, EPS, ADCS, radio, integration) plus compute, $"),
    "mass_kg": (DEFAULT_MASS_KG, "launch mass, kg"),
    "launch_base_usd": (DEFAULT_LAUNCH_BASE_USD, "rideshare price of the base mass block, $ (SpaceX SSO 2026: 350000)"),
    "launch_base_kg": (DEFAULT_LAUNCH_BASE_KG, "mass the base block buys; a lighter satellite pays the whole block, kg"),
    "launch_usd_per_kg": (DEFAULT_LAUNCH_USD_PER_KG, "price of each kg above the base block, $/kg"),
    "lifetime_years": (DEFAULT_LIFETIME_YEARS, "operating life the costs are spread over, years"),
    "duty_cycle": (DEFAULT_DUTY_CYCLE, "fraction of the lifetime spent generating tokens (0-1]; all costs are charged to that time"),
    "ground_usd_per_minute": (DEFAULT_GROUND_USD_PER_MINUTE, "ground-station antenna time, $/minute"),
    "passes_per_day": (DEFAULT_PASSES_PER_DAY, "ground-station contacts bought per day"),
    "minutes_per_pass": (DEFAULT_MINUTES_PER_PASS, "billed minutes per contact"),
    "other_operations_usd_per_year": (DEFAULT_OTHER_OPERATIONS_USD_PER_YEAR, "other operations (staff, licences, insurance), $/year"),
}
