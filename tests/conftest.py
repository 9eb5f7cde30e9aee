"""Shared fixtures: the real model every engine test runs on."""
from __future__ import annotations

from pathlib import Path

import pytest

from flight.engine import default_model_path


@pytest.fixture(scope="session")
def real_model_path() -> Path:
    # make test installs the model; its absence is a broken set-up, not a reason to skip
    return default_model_path()
