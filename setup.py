"""Build tokensat: the Cython wrappers around the portable C engine in csrc/.

The C sources carry their own SIMD paths (AVX2/FMA via function target attributes with a
run-time CPU check on x86-64, NEON on aarch64) and a scalar fallback, so one build runs on
any machine of its architecture; no -march flag is needed here.
"""
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, find_packages, setup

CSRC = Path("csrc")
SCHED_C = {"tk_sched.c"}  # the scheduler is an extension of its own (flight.executive._sched)
CRC_C = "tk_crc32c.c"  # also in the engine (for its scrubber) and alone in flight.engine._crc32c
engine_sources = ["flight/engine/_engine.pyx"] + sorted(
    str(p) for p in CSRC.glob("*.c")
    if p.name != "tk_run.c" and p.name not in SCHED_C  # tk_run.c: the standalone runner's main()
)
C_FLAGS = ["-O3", "-std=c11", "-fno-strict-aliasing", "-ffp-contract=off", "-Wall", "-Wno-unused-function"]

extensions = [
    Extension(
        "flight.engine._engine",
        sources=engine_sources,
        include_dirs=[str(CSRC)],
        extra_compile_args=C_FLAGS,
        extra_link_args=["-lpthread", "-lm"],
    ),
    # -ffp-contract=off matters here too: no FMA, so the decision's arithmetic is the same on
    # every build and matches the Python reference model of tests/executive/test_scheduler.py
    Extension(
        "flight.executive._sched",
        sources=["flight/executive/_sched.pyx"] + [str(CSRC / name) for name in sorted(SCHED_C)],
        include_dirs=[str(CSRC)],
        extra_compile_args=C_FLAGS,
        extra_link_args=["-lm"],
    ),
    Extension(
        "flight.engine._crc32c",
        sources=["flight/engine/_crc32c.pyx", str(CSRC / CRC_C)],
        include_dirs=[str(CSRC)],
        extra_compile_args=C_FLAGS,
        extra_link_args=["-lpthread"],
    ),
]

setup(
    name="tokensat",
    version="0.1.0",
    description="Flight software for an orbital AI-inference node",
    packages=find_packages(include=["flight*", "ground*", "hil*"]),
    package_data={"flight": ["*.json", "*.yaml", "*.toml"], "flight.link": ["*.json", "*.yaml", "*.toml"]},
    ext_modules=cythonize(extensions, language_level=3),
    python_requires=">=3.10",
    entry_points={
        "console_scripts": [
            "flight = flight.cli:main",
            "ground = ground.cli:main",
            "hil = hil.cli:main",
        ]
    },
)
