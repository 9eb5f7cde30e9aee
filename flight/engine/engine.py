"""The onboard LLM engine as the rest of flight/ sees it.

Engine owns one loaded model (the C engine through flight.engine._engine), its tokenizer (built
from the same GGUF metadata the C loader parsed, so the file is read once) and its chat
template. Generation runs entirely in C; text streams back through a callback per token.

Exact resume. A job interrupted after k tokens (preempted, or the node restarted) continues with
exactly the tokens it would have produced uninterrupted, greedy or sampled, given three things
saved with its progress: the prompt ids, the k tokens, and the sampler's RNG state after the k-th
(Generation.rng_state, the on_progress callback's second argument, BatchEvent.rng_state):

    g = engine.generate(prompt_ids, max_tokens=N, temperature=0.8, seed=s,
                        resume_tokens=tokens_so_far, rng_state=saved_state)
    # g.tokens == the uninterrupted run's N tokens (tokens_so_far included)

Prompt + tokens so far are re-evaluated in one prefill; the engine computes every row of a
forward pass the same way whatever the other rows are, so those logits are bit-identical to the
ones the one-token decode steps produced, and the restored RNG makes the same draws.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from flight.engine._engine import CModel, CScrub, EngineError, rng_state_from_seed
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
    # the sampler's RNG state after the last token: saved with the tokens, it resumes the run
    rng_state: int = 0
    # of tokens, how many a resumed call was given (resume_tokens) rather than generated
    n_resumed: int = 0

    @property
    def prefill_tok_s(self) -> float:
        # a resumed call prefills the prompt and the resumed tokens
        evaluated = len(self.prompt_tokens) + self.n_resumed - self.n_reused
        return evaluated / self.prefill_s if self.prefill_s > 0 else 0.0

    @property
    def decode_tok_s(self) -> float:
        # the first new token comes from the prefill logits; each later one costs one forward
        steps = max(len(self.tokens) - self.n_resumed - 1, 0)
        return steps / self.decode_s if self.decode_s > 0 and steps else 0.0


@dataclass
class BatchEvent:
    """One token of one sequence from a batched decode step."""

    seq_id: int
    token: int
    stop_reason: str  # "none" while the sequence goes on
    rng_state: int = 0  # the sampler's RNG state after token: what resuming after it needs


def _resume_args(ids: list[int], resume_tokens: Sequence[int], rng_state: int | None,
                 max_tokens: int, temperature: float, top_k: int, n_ctx: int) -> list[int]:
    """Check a resume request; returns resume_tokens as ints. The checks keep a resume that
    could not be exact from running silently, and make a finished job an error, not a no-op."""
    resumed = [int(i) for i in resume_tokens]
    if not resumed:
        return resumed
    # the C sampler draws once per token unless greedy (temperature <= 0 or top-k 1); a drawing
    # run restarted from its seed would repeat the first draws, not continue after the k-th
    if temperature > 0 and top_k != 1 and rng_state is None:
        raise EngineError("resuming a sampled generation needs the rng_state saved with its tokens")
    if len(resumed) >= max_tokens:
        raise EngineError(f"nothing to resume: {len(resumed)} tokens already reach max tokens "
                          f"{max_tokens}")
    if len(ids) + len(resumed) > n_ctx:
        raise EngineError(f"nothing to resume: the prompt ({len(ids)}) and {len(resumed)} tokens "
                          f"already fill the context of {n_ctx}")
    return resumed


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
        """float32 logits [vocab] of the last of ids on slot 0. A prefix the slot already holds
        is reused; that gives the same bits as evaluating it afresh (forget() forces that),
        since a row's arithmetic does not depend on the other rows of its forward pass."""
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
        *,
        resume_tokens: Sequence[int] = (),
        rng_state: int | None = None,
        on_progress: Callable[[int, int], object] | None = None,
    ) -> Generation:
        """Complete prompt (text, completed exactly as given, or token ids) in the C loop.

        on_token/on_text are called as tokens arrive; on_progress(token, rng_state) too, with
        the RNG state after that token (a checkpoint: tokens so far + that state resume the
        run). Any of them returning False stops the loop at that token.

        Exact resume: resume_tokens are the tokens an interrupted run of this same request
        (prompt, sampling parameters, seed) produced, rng_state the RNG state saved after the
        last of them (None: seed from seed, right for greedy runs and for k = 0). The call then
        produces what the uninterrupted run would have: max_tokens counts resume_tokens (the
        job's whole budget), Generation.tokens starts with them (the job's whole output) and
        n_resumed says how many; callbacks see the new tokens only. A sampled run with
        resume_tokens but no rng_state, or one already complete, is refused.

        Calling again with prompt ids + the tokens so far as the prompt also continues exactly
        when greedy (the cached prefix is reused either way).
        """
        ids = self.tokenize(prompt) if isinstance(prompt, str) else [int(i) for i in prompt]
        if not ids:
            raise EngineError("the prompt is empty")
        resumed = _resume_args(ids, resume_tokens, rng_state, max_tokens, temperature, top_k,
                               self.n_ctx)
        stream = StreamDecoder(self.tokenizer) if on_text else None
        if stream is not None:
            # prime the decoder: a character split across the interruption comes out whole
            for tok in resumed:
                stream.push(tok)

        def _cb(tok: int, state: int) -> bool:
            keep_going = True
            if on_token is not None and on_token(tok) is False:
                keep_going = False
            if on_progress is not None and on_progress(tok, state) is False:
                keep_going = False
            if stream is not None:
                piece = stream.push(tok)
                if piece and on_text(piece) is False:
                    keep_going = False
            return keep_going

        want_cb = on_token is not None or on_text is not None or on_progress is not None
        new, st = self._m.generate(ids + resumed, max_tokens - len(resumed), temperature, top_k,
                                   top_p, seed, self.eos_ids, _cb if want_cb else None,
                                   rng_state=rng_state, with_state=True)
        if stream is not None:
            tail = stream.flush()
            if tail:
                on_text(tail)
        tokens = resumed + new
        return Generation(prompt_tokens=ids, tokens=tokens, text=self.detokenize(tokens),
                          stop_reason=st["stop_reason"], n_reused=st["n_reused"],
                          prefill_s=st["prefill_s"], decode_s=st["decode_s"],
                          first_token_s=st["first_token_s"], rng_state=st["rng_state"],
                          n_resumed=len(resumed))

    @staticmethod
    def rng_state_for_seed(seed: int) -> int:
        """The RNG state a generation seeded with seed starts from: a job's state before its
        first token, for a checkpoint format that always stores one."""
        return rng_state_from_seed(seed)

    def forget(self) -> None:
        """Drop the cached prefix: the next call evaluates its whole prompt."""
        self._m.forget(0)

    def request_stop(self) -> None:
        """Stop a generate() running in another thread at its next token boundary."""
        self._m.request_stop()

    def batch(self) -> BatchDecoder:
        return BatchDecoder(self)

    def scrub(self, crc32c: Sequence[int], block_octets: int) -> CScrub:
        """The C scrubber over this engine's live weights, checking blocks of block_octets
        against crc32c (a manifest's; see flight/engine/scrubber.py). EngineError if the
        manifest does not fit the model or the file cannot be reopened for repair."""
        return CScrub(self._m, self.path, list(crc32c), block_octets)

    def close(self) -> None:
        self._m.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class _Seq:
    prompt: list[int]
    tokens: list[int] = field(default_factory=list)  # resumed tokens first, then new ones
    stop_reason: str = "none"
    rng_state: int = 0  # the RNG state after the last of tokens (see Engine.generate)
    n_resumed: int = 0


class BatchDecoder:
    """Batched decode: sequences join and leave between steps; each step is one forward pass
    over every active sequence, so the weights are read once per step for all of them."""

    def __init__(self, engine: Engine) -> None:
        self._e = engine
        self._by_slot: dict[int, int] = {}
        self.sequences: dict[int, _Seq] = {}
        self._next_id = 0

    def join(self, prompt: str | Sequence[int], max_tokens: int = 128, temperature: float = 0.0,
             top_k: int = 0, top_p: float = 1.0, seed: int = 0, *,
             resume_tokens: Sequence[int] = (), rng_state: int | None = None) -> int:
        """Add a sequence; returns its id. resume_tokens/rng_state resume an interrupted one
        exactly, as in Engine.generate (max_tokens counts resume_tokens; its tokens start with
        them; the other sequences of the batch do not change its bits)."""
        ids = self._e.tokenize(prompt) if isinstance(prompt, str) else [int(i) for i in prompt]
        if not ids:
            raise EngineError("the prompt is empty")
        resumed = _resume_args(ids, resume_tokens, rng_state, max_tokens, temperature, top_k,
                               self._e.n_ctx)
        slot = self._e._m.batch_join(ids + resumed, max_tokens - len(resumed), temperature, top_k,
                                     top_p, seed, self._e.eos_ids, rng_state=rng_state)
        seq_id = self._next_id
        self._next_id += 1
        self._by_slot[slot] = seq_id
        self.sequences[seq_id] = _Seq(prompt=ids, tokens=list(resumed), n_resumed=len(resumed),
                                      rng_state=self._e._m.rng_state(slot))
        return seq_id

    def step(self) -> list[BatchEvent]:
        events = []
        for slot, tok, stop, state in self._e._m.batch_step():
            seq_id = self._by_slot[slot]
            seq = self.sequences[seq_id]
            if stop != "eos":
                seq.tokens.append(tok)
            seq.rng_state = state
            if stop != "none":
                seq.stop_reason = stop
                del self._by_slot[slot]
            events.append(BatchEvent(seq_id, tok, stop, state))
        return events

    def logits(self, seq_id: int) -> np.ndarray:
        """float32 logits the sequence's latest token was sampled from (after join: its first
        token's, the prefill's), readable until the next step or join overwrites them."""
        for slot, sid in self._by_slot.items():
            if sid == seq_id:
                return self._e._m.slot_logits(slot)
        raise EngineError(f"sequence {seq_id} is not in the batch")

    def leave(self, seq_id: int) -> None:
        for slot, sid in list(self._by_slot.items()):
            if sid == seq_id:
                self._e._m.batch_leave(slot)
                del self._by_slot[slot]
                self.sequences[seq_id].stop_reason = "request"

    @property
    def active(self) -> int:
        return len(self._by_slot)
