"""Byte-level BPE tokenizer built from the vocabulary lists stored in a GGUF file.

The C engine parses the GGUF and hands us plain lists, so nothing here reads the model file.
The heavy lifting is done by the `tokenizers` library (Rust); this module only has to set it
up the way llama.cpp tokenizes, which the tests check against ids recorded from llama.cpp.
"""
from __future__ import annotations

import codecs
import threading
from collections.abc import Sequence

from tokenizers import AddedToken, Regex
from tokenizers import Tokenizer as _HFTokenizer
from tokenizers import models, pre_tokenizers

__all__ = ["Tokenizer", "StreamDecoder"]

# GGUF tokenizer.ggml.token_type values (llama.cpp's llama_token_type).
TOKEN_NORMAL = 1
TOKEN_UNKNOWN = 2
TOKEN_CONTROL = 3
TOKEN_USER_DEFINED = 4
TOKEN_UNUSED = 5
TOKEN_BYTE = 6


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table; vocab strings are written in it."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in keep}
    n = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + n)
            n += 1
    return table


_BYTE_CHARS = "".join(_bytes_to_unicode().values())

# str.translate + latin-1 encode maps a vocab string to its bytes without a per-char Python loop.
_TO_LATIN1 = str.maketrans({c: chr(b) for b, c in _bytes_to_unicode().items()})


def _pre_tokenizer(pre: str | None, no_token: str) -> pre_tokenizers.PreTokenizer:
    # llama.cpp picks its split regex from tokenizer.ggml.pre. Only the variants we can check
    # against llama.cpp are accepted: a guessed regex would tokenize differently from what the
    # model was trained on, silently, which is worse than refusing to load.
    steps: list[pre_tokenizers.PreTokenizer]
    if pre in (None, "default", "gpt2"):
        steps = []
    elif pre == "smollm":
        # llama.cpp: "\p{N}" first (every digit its own word), then the GPT-2 regex.
        steps = [pre_tokenizers.Digits(individual_digits=True)]
    else:
        raise ValueError(f"unsupported tokenizer pre-tokenizer {pre!r} (supported: default, gpt2, smollm)")
    steps.append(pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True))
    if no_token:
        # A byte with no token of its own (SmolLM2 lacks 21) is dropped by both libraries, but
        # llama.cpp keeps it in the word while merging, so nothing merges across it, whereas
        # tokenizers drops it first and may merge its neighbours. Isolating it restores the wall.
        cls = "".join("\\" + c if c in "\\]^-[" else c for c in no_token)
        steps.append(pre_tokenizers.Split(Regex(f"[{cls}]"), behavior="isolated"))
    return steps[0] if len(steps) == 1 else pre_tokenizers.Sequence(steps)


class Tokenizer:
    """Tokenizer for GGUF models with tokenizer.ggml.model == "gpt2" (byte-level BPE)."""

    def __init__(
        self,
        tokens: list[str],
        merges: list[str],
        token_types: list[int],
        bos_id: int,
        eos_id: int,
        model: str = "gpt2",
        pre: str | None = None,
    ) -> None:
        if model != "gpt2":
            raise ValueError(f"unsupported tokenizer model {model!r} (only 'gpt2' byte-level BPE is supported)")
        if len(token_types) != len(tokens):
            raise ValueError(f"token_types has {len(token_types)} entries for {len(tokens)} tokens")
        n = len(tokens)
        for name, value in (("bos_id", bos_id), ("eos_id", eos_id)):
            if not 0 <= value < n:
                raise ValueError(f"{name} {value} outside vocabulary of {n} tokens")

        self._tokens = list(tokens)
        self._types = [int(t) for t in token_types]
        self._bos_id = int(bos_id)
        self._eos_id = int(eos_id)
        self._pieces: list[bytes] | None = None  # built on first decode; encode-only users skip it

        vocab = {tok: i for i, tok in enumerate(self._tokens)}
        if len(vocab) != n:
            raise ValueError("duplicate token strings in vocabulary")
        # Byte-level tokens never contain a plain space (it is written 'Ġ'), so one split is exact.
        pairs = [tuple(m.split(" ", 1)) for m in merges]
        hf = _HFTokenizer(models.BPE(vocab=vocab, merges=pairs, ignore_merges=False))
        no_token = "".join(c for c in _BYTE_CHARS if c not in vocab)
        hf.pre_tokenizer = _pre_tokenizer(pre, no_token)
        # llama.cpp matches control/unknown tokens in text only with parse_special=true, but
        # user-defined ones always; tokenizers' special vs plain added tokens mirror that split.
        odd = [i for i, t in enumerate(self._types) if t != TOKEN_NORMAL]  # one pass over 49k
        special = [AddedToken(self._tokens[i], special=True, normalized=False)
                   for i in odd if self._types[i] in (TOKEN_CONTROL, TOKEN_UNKNOWN)]
        plain = [AddedToken(self._tokens[i], special=False, normalized=False)
                 for i in odd if self._types[i] == TOKEN_USER_DEFINED]
        if special:
            hf.add_special_tokens(special)
        if plain:
            hf.add_tokens(plain)
        self._hf = hf
        # encode_special_tokens is tokenizer-wide state; encode() flips it per call.
        self._lock = threading.Lock()

    # -- properties -------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return len(self._tokens)

    @property
    def bos_id(self) -> int:
        return self._bos_id

    @property
    def eos_id(self) -> int:
        return self._eos_id

    def is_control(self, token_id: int) -> bool:
        return self._types[self._check(token_id)] == TOKEN_CONTROL

    def _check(self, token_id: int) -> int:
        # Negative ids would silently index from the end of the tables.
        if not 0 <= token_id < len(self._tokens):
            raise IndexError(f"token id {token_id} outside vocabulary of {len(self._tokens)}")
        return token_id

    # -- encode / decode --------------------------------------------------------------------
    def encode(self, text: str, special: bool = True) -> list[int]:
        """Token ids for text, no BOS added (the model's add_bos is false; callers add it if needed).

        special=True turns control tokens written in the text (e.g. "<|im_start|>") into their
        ids; special=False tokenizes them as ordinary characters, as for untrusted user text.
        """
        if not text:
            return []
        with self._lock:
            self._hf.encode_special_tokens = not special
            return self._hf.encode(text, add_special_tokens=False).ids

    def token_piece(self, token_id: int) -> bytes:
        """Raw bytes of one token. Control tokens give their text (e.g. b"<|im_end|>")."""
        return self._piece_table()[self._check(token_id)]

    def decode(self, ids: Sequence[int], skip_special: bool = False) -> str:
        """Text for ids; invalid UTF-8 (e.g. a cut multibyte char) becomes U+FFFD.

        Control tokens are kept as text by default so decode(encode(s)) == s holds; pass
        skip_special=True for user-facing output.
        """
        table = self._piece_table()
        n = len(table)
        if any(not 0 <= i < n for i in ids):
            raise IndexError(f"token id outside vocabulary of {n} in {list(ids)[:16]}")
        if skip_special:
            ids = [i for i in ids if self._types[i] != TOKEN_CONTROL]
        return b"".join(table[i] for i in ids).decode("utf-8", errors="replace")

    def _piece_table(self) -> list[bytes]:
        if self._pieces is None:
            self._pieces = [self._to_bytes(tok, typ) for tok, typ in zip(self._tokens, self._types)]
        return self._pieces

    @staticmethod
    def _to_bytes(tok: str, typ: int) -> bytes:
        if typ in (TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNKNOWN):
            return tok.encode("utf-8")  # stored verbatim, not in the byte alphabet
        try:
            return tok.translate(_TO_LATIN1).encode("latin-1")
        except UnicodeEncodeError:
            # Not in the byte alphabet (a malformed vocab): keep the text rather than fail.
            return tok.encode("utf-8")


class StreamDecoder:
    """Turns ids arriving one at a time into text, never emitting half a UTF-8 character.

    A token can end in the middle of a multibyte character (emoji are often 2+ tokens); the
    incremental codec holds those bytes back until the rest arrives. Bytes that can never
    become valid UTF-8 come out as U+FFFD instead of stalling the stream.
    """

    def __init__(self, tokenizer: Tokenizer, skip_special: bool = False) -> None:
        self._tok = tokenizer
        self._skip_special = skip_special
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        """Feed one id; returns the text completed by it (possibly "")."""
        if self._skip_special and self._tok.is_control(token_id):
            return ""
        return self._utf8.decode(self._tok.token_piece(token_id))

    def flush(self) -> str:
        """End of stream: anything still held back is incomplete and comes out as U+FFFD."""
        out = self._utf8.decode(b"", final=True)
        self._utf8.reset()
        return out

    def reset(self) -> None:
        self._utf8.reset()
