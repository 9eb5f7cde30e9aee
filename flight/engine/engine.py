"""The onboard LLM engine as the rest of flight/ sees it.

Engine owns one loaded model (the C engine through flight.engine._engine), its tokenizer (built
from the same GGUF metadata the C loader parsed, so the file is read once) and its chat
template. Generation runs entirely in C; text streams back through a callback per token.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from flight.engine._engine import CModel, EngineError
from flight.engine.chat import render_chat
from flight.engine.model_path import default_model_path
from flight.engine.tokenizer import StreamDecoder, Tokenizer

DEFAULT_N_CTX = 2048

# Control tokens that end a turn in common chat formats; llama.cpp treats them as end of
# generation too. Only those present in the vocabulary as control tokens are used.
_END_OF_TURN = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "</s>", "<|end|>")


@dataclass
class Generation:
    """What one generate() call produced, with its timings."""

    prompt_tokens: list[int]
    tokens: list[int]
    text: str
    stop_reason: str
    n_reused: int
    prefill_s: float
    decode_s: float
    first_token_s: float

    @property
    def prefill_tok_s(self) -> float:
        evaluated = len(self.prompt_tokens) - self.n_reused
        return evaluated / self.prefill_s if self.prefill_s > 0 else 0.0

    @property
    def decode_tok_s(self) -> float:
        # the first token comes from the prefill logits; each later one costs one forward
        steps = max(len(self.tokens) - 1, 0)
        return steps / self.decode_s if self.decode_s > 0 and steps else 0.0


@dataclass
class BatchEvent:
    """One token of one sequence from a batched decode step."""

    seq_id: int
    token: int
    stop_reason: str  # "none" while the sequence goes on


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class Engine:
    """A loaded model. Not thread-safe: one call at a time (request_stop excepted)."""

    def __init__(self, model: CModel, path: str) -> None:
        self._m = model
        self.path = path
        self.config: dict = model.config
        tokens = model.meta_array("tokenizer.ggml.tokens")
        self.tokenizer = self._build_tokenizer(tokens)
        self.chat_template: str | None = model.meta_str("tokenizer.chat_template")
        self.eos_ids = self._end_of_generation_ids(tokens)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike | None = None,
        threads: int | None = None,
        n_ctx: int = DEFAULT_N_CTX,
        n_batch: int = 1,
        simd: str = "auto",
    ) -> Engine:
        """Load a llama GGUF (default: the packaged SmolLM2-135M-Instruct Q4_1).

        n_ctx is the KV-cache length of each sequence; n_batch the number of sequences that can
        be decoded together (each gets its own KV-cache slot). Both are allocated here, once.
        """
        resolved = str(path) if path is not None else str(default_model_path())
        n_threads = threads if threads is not None else _cpu_count()
        return cls(CModel(resolved, n_threads, n_ctx, n_batch, simd), resolved)

    def _build_tokenizer(self, tokens: list[str] | None) -> Tokenizer:
        m = self._m
        model = m.meta_str("tokenizer.ggml.model")
        if model is None or tokens is None:
            raise EngineError("the model has no tokenizer (tokenizer.ggml.model/tokens missing)")
        if len(tokens) != self.config["vocab"]:
            raise EngineError(f"tokenizer.ggml.tokens has {len(tokens)} entries for "
                              f"{self.config['vocab']} embedding rows")
        types = m.meta_array("tokenizer.ggml.token_type") or [1] * len(tokens)
        merges = m.meta_array("tokenizer.ggml.merges") or []
        bos = m.meta_int("tokenizer.ggml.bos_token_id")
        eos = m.meta_int("tokenizer.ggml.eos_token_id")
        try:
            return Tokenizer(tokens, merges, types, bos_id=0 if bos is None else bos,
                             eos_id=0 if eos is None else eos, model=model,
                             pre=m.meta_str("tokenizer.ggml.pre"))
        except ValueError as e:
            raise EngineError(str(e)) from None
        except Exception as e:  # the tokenizers library rejects bad merges with its own types
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise EngineError(f"tokenizer metadata is invalid: {first}") from None

    def _end_of_generation_ids(self, tokens: list[str]) -> list[int]:
        ids = [self.tokenizer.eos_id]
        pieces = {tok: i for i, tok in enumerate(tokens) if tok in _END_OF_TURN}
        for tok in _END_OF_TURN:
            i = pieces.get(tok)
            if i is not None and self.tokenizer.is_control(i) and i not in ids:
                ids.append(i)
        return ids[:8]

    # -- facts ----------------------------------------------------------------------------------

    @property
    def simd(self) -> str:
        return self._m.simd

    @property
    def threads(self) -> int:
        return self._m.threads

    @property
    def n_ctx(self) -> int:
        return self._m.n_ctx

    @property
    def n_batch(self) -> int:
        return self._m.n_slots

    @property
    def resident_bytes(self) -> int:
        """Bytes the engine keeps: buffers and KV cache allocated at load plus mapped weights."""
        return self._m.alloc_bytes + self._m.weight_bytes

    @property
    def alloc_bytes(self) -> int:
        return self._m.alloc_bytes

    @property
    def weight_bytes(self) -> int:
        return self._m.weight_bytes

    # -- text -----------------------------------------------------------------------------------

    def tokenize(self, text: str, special: bool = True) -> list[int]:
        return self.tokenizer.encode(text, special=special)

    def detokenize(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(ids)

    def chat_prompt(self, user: str, system: str | None = None) -> str:
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": user}]
        try:
            return render_chat(messages, self.chat_template, add_generation_prompt=True)
        except ValueError as e:
            raise EngineError(str(e)) from None

    # -- inference ------------------------------------------------------------------------------

    def prefill_logits(self, ids: Sequence[int]) -> np.ndarray:
        """float32 logits [vocab] of the last of ids, evaluated as a fresh sequence."""
        return self._m.prefill_logits(list(ids))

    def generate(
        self,
        prompt: str | Sequence[int],
        max_tokens: int = 128,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int = 0,
        on_text: Callable[[str], object] | None = None,
        on_token: Callable[[int], object] | None = None,
    ) -> Generation:
        """Complete prompt (text, completed exactly as given, or token ids) in the C loop.

        on_token/on_text are called as tokens arrive; either returning False stops the loop at
        that token. To resume, call again with prompt ids + the tokens so far: the cached
        prefix is reused and greedy decoding continues exactly as it would have.
        """
        ids = self.tokenize(prompt) if isinstance(prompt, str) else [int(i) for i in prompt]
        if not ids:
            raise EngineError("the prompt is empty")
        stream = StreamDecoder(self.tokenizer) if on_text else None

        def _cb(tok: int) -> bool:
            keep_going = True
            if on_token is not None and on_token(tok) is False:
                keep_going = False
            if stream is not None:
                piece = stream.push(tok)
                if piece and on_text(piece) is False:
                    keep_going = False
            return keep_going

        tokens, st = self._m.generate(ids, max_tokens, temperature, top_k, top_p, seed,
                                      self.eos_ids, _cb if (on_token or on_text) else None)
        if stream is not None:
            tail = stream.flush()
            if tail:
                on_text(tail)
        return Generation(prompt_tokens=ids, tokens=tokens, text=self.detokenize(tokens),
                          stop_reason=st["stop_reason"], n_reused=st["n_reused"],
                          prefill_s=st["prefill_s"], decode_s=st["decode_s"],
                          first_token_s=st["first_token_s"])

    def forget(self) -> None:
        """Drop the cached prefix: the next call evaluates its whole prompt."""
        self._m.forget(0)

    def request_stop(self) -> None:
        """Stop a generate() running in another thread at its next token boundary."""
        self._m.request_stop()

    def batch(self) -> BatchDecoder:
        return BatchDecoder(self)

    def close(self) -> None:
        self._m.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class _Seq:
    prompt: list[int]
    tokens: list[int] = field(default_factory=list)
    stop_reason: str = "none"


class BatchDecoder:
    """Batched decode: sequences join and leave between steps; each step is one forward pass
    over every active sequence, so the weights are read once per step for all of them."""

    def __init__(self, engine: Engine) -> None:
        self._e = engine
        self._by_slot: dict[int, int] = {}
        self.sequences: dict[int, _Seq] = {}
        self._next_id = 0

    def join(self, prompt: str | Sequence[int], max_tokens: int = 128, temperature: float = 0.0,
             top_k: int = 0, top_p: float = 1.0, seed: int = 0) -> int:
        ids = self._e.tokenize(prompt) if isinstance(prompt, str) else [int(i) for i in prompt]
        slot = self._e._m.batch_join(ids, max_tokens, temperature, top_k, top_p, seed,
                                     self._e.eos_ids)
        seq_id = self._next_id
        self._next_id += 1
        self._by_slot[slot] = seq_id
        self.sequences[seq_id] = _Seq(prompt=ids)
        return seq_id

    def step(self) -> list[BatchEvent]:
        events = []
        for slot, tok, stop in self._e._m.batch_step():
            seq_id = self._by_slot[slot]
            seq = self.sequences[seq_id]
            if stop != "eos":
                seq.tokens.append(tok)
            if stop != "none":
                seq.stop_reason = stop
                del self._by_slot[slot]
            events.append(BatchEvent(seq_id, tok, stop))
        return events

    def leave(self, seq_id: int) -> None:
        for slot, sid in list(self._by_slot.items()):
            if sid == seq_id:
                self._e._m.batch_leave(slot)
                del self._by_slot[slot]
                self.sequences[seq_id].stop_reason = "request"

    @property
    def active(self) -> int:
        return len(self._by_slot)
