"""Fixtures of the ground tests."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from flight.link.keys import write_new_key_file
from ground.client import GroundClient


@pytest.fixture
def client(tmp_path: Path) -> Iterator[GroundClient]:
    keys = tmp_path / "keys.json"
    write_new_key_file(keys)
    ground = GroundClient("loop://", keys=keys, archive=tmp_path / "ground.sqlite")
    ground.open_archive()  # no port: packets are fed to it directly
    yield ground
    ground.archive.close()
