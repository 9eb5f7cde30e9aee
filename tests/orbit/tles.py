"""TLEs for the orbit tests: a real ISS element set and synthetic ones built with checksums."""
from __future__ import annotations

from datetime import datetime, timezone

from flight.orbit.tle import checksum

# ISS (ZARYA), the element set in the sgp4 package's documentation (epoch 2019-12-09).
ISS = """ISS (ZARYA)
1 25544U 98067A   19343.69339541  .00001764  00000-0  38792-4 0  9991
2 25544  51.6439 211.2001 0007417  17.6667  85.6398 15.50103472202482
"""


def with_checksum(line68: str) -> str:
    assert len(line68) == 68, len(line68)
    return line68 + str(checksum(line68))


def make_tle(
    epoch: datetime,
    inclination: float,
    raan: float,
    mean_motion: float,
    eccentricity: float = 0.0001,
    argp: float = 0.0,
    mean_anomaly: float = 0.0,
    satnum: int = 99999,
    name: str = "TEST",
) -> str:
    """A three-line TLE with valid checksums (drag terms zero)."""
    epoch = epoch.astimezone(timezone.utc)
    start = datetime(epoch.year, 1, 1, tzinfo=timezone.utc)
    day = 1.0 + (epoch - start).total_seconds() / 86400.0
    l1 = f"1 {satnum:05d}U 24001A   {epoch.year % 100:02d}{day:012.8f}  .00000000  00000-0  00000-0 0  999"
    l2 = (
        f"2 {satnum:05d} {inclination:8.4f} {raan % 360:8.4f} {round(eccentricity * 1e7):07d} "
        f"{argp % 360:8.4f} {mean_anomaly % 360:8.4f} {mean_motion:11.8f}    1"
    )
    return f"{name}\n{with_checksum(l1)}\n{with_checksum(l2)}\n"
