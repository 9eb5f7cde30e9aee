"""Shared fixtures: the real model every engine test runs on; the `full` marker and --full.

Tests marked `full` are the long forms (soaks, kill -9 loops): `make test` skips them, saying so,
and `make test-full` runs them with --full.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from flight.engine import default_model_path


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--full", action="store_true", help="also run the long forms (tests marked full)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--full"):
        return
    skip = pytest.mark.skip(reason="long form: runs under `make test-full`")
    for item in items:
        if "full" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def real_model_path() -> Path:
    # make test installs the model; its absence is a broken set-up, not a reason to skip
    return default_model_path()
