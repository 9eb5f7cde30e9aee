"""Print every benchmark's extra_info (tok/s, memory...) after pytest-benchmark's table, which
shows times only; --benchmark-json saves the same figures."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

_REPORTED: list[tuple[str, dict]] = []


@pytest.fixture(autouse=True)
def _collect_extra_info(request: pytest.FixtureRequest) -> Iterator[None]:
    # take the benchmark fixture while the test is set up; read what it gathered once it ran
    bench = request.getfixturevalue("benchmark") if "benchmark" in request.fixturenames else None
    yield
    if bench is not None and bench.enabled and bench.extra_info:
        _REPORTED.append((request.node.name, dict(bench.extra_info)))


@pytest.hookimpl(trylast=True)  # after pytest-benchmark's own table
def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _REPORTED:
        return
    terminalreporter.write_sep("-", "benchmark figures (extra_info)")
    width = max(len(name) for name, _ in _REPORTED)
    for name, info in _REPORTED:
        terminalreporter.write_line(f"{name:<{width}}  " + "  ".join(f"{k}={v}" for k, v in info.items()))
