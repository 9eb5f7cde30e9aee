"""flight.engine.tokenizer against llama.cpp's own tokenization of the default model.

The expected ids come from tests/fixtures/llama_cpp_reference.json (scripts/make_llama_fixtures.py);
the vocabulary comes from the GGUF, read once per session.
"""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flight.engine.tokenizer import StreamDecoder, Tokenizer
from tests._gguf_meta import default_model_path, llama_reference, tokenizer_meta

REF = llama_reference()
TOKENIZE_CASES = REF["tokenization"] if REF else []
PROMPT_CASES = REF["prompts"] if REF else []
CONTROL_TEXTS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<repo_name>", "<file_sep>"]

needs_model = pytest.mark.skipif(default_model_path() is None, reason="default model not installed")


@pytest.fixture(scope="session")
def meta() -> dict:
    if default_model_path() is None:
        pytest.skip("default model not installed")
    return tokenizer_meta()


@pytest.fixture(scope="session")
def tok(meta: dict) -> Tokenizer:
    return Tokenizer(meta["tokens"], meta["merges"], meta["token_types"], meta["bos_id"],
                     meta["eos_id"], model=meta["model"], pre=meta["pre"])


def _id(case: dict) -> str:
    return repr(case.get("name", case["text"]))[:40]


# -- against llama.cpp ----------------------------------------------------------------------------

def test_reference_fixture_present() -> None:
    assert REF is not None, "run scripts/make_llama_fixtures.py to create the llama.cpp fixture"
    assert len(TOKENIZE_CASES) >= 30 and len(PROMPT_CASES) >= 6


@needs_model
def test_reference_is_for_this_model(meta: dict) -> None:
    import hashlib

    h = hashlib.sha256()
    with open(default_model_path(), "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    assert REF is not None and h.hexdigest() == REF["model_sha256"]


@pytest.mark.parametrize("case", TOKENIZE_CASES, ids=_id)
def test_encode_matches_llama_cpp(tok: Tokenizer, case: dict) -> None:
    assert tok.encode(case["text"]) == case["ids"]


@pytest.mark.parametrize("case", TOKENIZE_CASES, ids=_id)
def test_encode_plain_matches_llama_cpp(tok: Tokenizer, case: dict) -> None:
    assert tok.encode(case["text"], special=False) == case["ids_special_false"]


@pytest.mark.parametrize("case", PROMPT_CASES, ids=_id)
def test_prompt_ids_match_llama_cpp(tok: Tokenizer, case: dict) -> None:
    assert tok.encode(case["text"]) == case["ids"]


@pytest.mark.parametrize("case", TOKENIZE_CASES + PROMPT_CASES, ids=_id)
def test_decode_of_llama_ids_is_the_text(tok: Tokenizer, case: dict) -> None:
    # Bytes without a token are dropped by llama.cpp's tokenizer (see NO_TOKEN_BYTES), so for
    # the few cases holding them the text comes back without those bytes.
    kept = bytes(b for b in case["text"].encode() if b not in NO_TOKEN_BYTES)
    assert tok.decode(case["ids"]) == kept.decode("utf-8", errors="replace")


@pytest.mark.parametrize("case", PROMPT_CASES, ids=_id)
def test_decode_of_generated_ids_matches_llama_cpp(tok: Tokenizer, case: dict) -> None:
    assert tok.decode(case["greedy_ids"]) == case["greedy_text"]


# -- round trips and streaming -------------------------------------------------------------------

# SmolLM2's vocabulary has no token for 21 byte values (checked in test_unrepresentable_bytes):
# six ASCII control characters, and 0xF1/0xF2 which lead the unassigned planes 4-11. Text with
# them cannot round-trip (llama.cpp drops them too), so they are left out. Surrogates cannot be
# UTF-8 encoded at all.
NO_TOKEN_BYTES = {0x04, 0x06, 0x13, 0x14, 0x16, 0x1D, 0xC0, 0xC1, 0xF1, 0xF2, *range(0xF5, 0x100)}
any_text = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x04\x06\x13\x14\x16\x1d")
    .filter(lambda c: not 0x40000 <= ord(c) < 0xC0000),
    max_size=200,
)
text_with_controls = st.lists(st.one_of(any_text, st.sampled_from(CONTROL_TEXTS)), max_size=6).map("".join)


@needs_model
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=text_with_controls)
def test_round_trip(tok: Tokenizer, text: str) -> None:
    assert tok.decode(tok.encode(text)) == text
    assert tok.decode(tok.encode(text, special=False)) == text


@needs_model
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=text_with_controls)
def test_stream_decoder_reproduces_decode(tok: Tokenizer, text: str) -> None:
    sd = StreamDecoder(tok)
    pieces = [sd.push(i) for i in tok.encode(text)]
    assert "".join(pieces) + sd.flush() == text
    assert all("\ufffd" not in p for p in pieces) or "\ufffd" in text


@needs_model
def test_stream_decoder_holds_back_split_emoji(tok: Tokenizer) -> None:
    text = "go 🚀 now"
    ids = tok.encode(text)
    rocket = [i for i in ids if tok.token_piece(i) and tok.token_piece(i)[0] >= 0x80]
    assert len(rocket) >= 2, "premise: the emoji is split over several tokens"
    assert tok.decode(rocket[:1]).endswith("\ufffd"), "premise: the first piece alone is not valid UTF-8"
    sd = StreamDecoder(tok)
    out = [sd.push(i) for i in ids]
    assert "".join(out) == text
    assert out[ids.index(rocket[0])] == "", "incomplete UTF-8 must be held back, not emitted"
    assert "🚀" in out[ids.index(rocket[-1])]
    assert sd.flush() == ""


@needs_model
def test_stream_decoder_flush_reports_truncated_char(tok: Tokenizer) -> None:
    ids = tok.encode("🚀")
    sd = StreamDecoder(tok)
    assert "".join(sd.push(i) for i in ids[:-1]) == ""
    assert sd.flush() == "\ufffd"


@needs_model
def test_skip_special(tok: Tokenizer) -> None:
    ids = tok.encode("<|im_start|>assistant\nHi<|im_end|>")
    assert tok.decode(ids, skip_special=True) == "assistant\nHi"
    sd = StreamDecoder(tok, skip_special=True)
    assert "".join(sd.push(i) for i in ids) == "assistant\nHi"


@needs_model
def test_unrepresentable_bytes(tok: Tokenizer) -> None:
    have = {tok.token_piece(i) for i in range(tok.vocab_size)}
    assert {b for b in range(256) if bytes([b]) not in have} == NO_TOKEN_BYTES
    # No token for them, no <unk> in a byte-level vocabulary: they are dropped, the rest kept.
    assert tok.decode(tok.encode("a\x04b\x16c")) == "abc"


@needs_model
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.lists(st.one_of(
    st.text(st.characters(max_codepoint=0xFFFF, blacklist_categories=("Cs",)), max_size=40),
    st.text(" \t\n'sdlmtvreSDLMTVRE0123456789.,!?", max_size=20),
    st.sampled_from(CONTROL_TEXTS + ["🚀", "🛰️", "👨‍👩‍👧", "don't", "  ", "\n\n"])), max_size=8).map("".join),
    special=st.booleans())
def test_encode_matches_live_llama_cpp(tok: Tokenizer, llama_vocab, text: str, special: bool) -> None:
    # Beyond the fixture strings, when llama-cpp-python happens to be installed. The BMP only:
    # for code points assigned in recent Unicode versions (16+) llama.cpp's character tables
    # and the regex engine of `tokenizers` disagree on the category, so splits can differ.
    assert tok.encode(text, special=special) == llama_vocab.tokenize(text.encode(), add_bos=False, special=special)


@pytest.fixture(scope="session")
def llama_vocab():
    llama_cpp = pytest.importorskip("llama_cpp")
    if default_model_path() is None:
        pytest.skip("default model not installed")
    return llama_cpp.Llama(model_path=default_model_path(), vocab_only=True, verbose=False)


# -- API details ---------------------------------------------------------------------------------

@needs_model
def test_special_flag_changes_control_token_handling(tok: Tokenizer) -> None:
    text = "<|im_start|>user\nHi<|im_end|>"
    with_special = tok.encode(text, special=True)
    plain = tok.encode(text, special=False)
    assert with_special[0] == tok.bos_id == 1 and with_special[-1] == tok.eos_id == 2
    assert not any(tok.is_control(i) for i in plain)
    assert len(plain) > len(with_special)
    # The flag is per call, not sticky.
    assert tok.encode(text) == with_special


@needs_model
def test_properties_and_pieces(tok: Tokenizer, meta: dict) -> None:
    assert tok.vocab_size == len(meta["tokens"]) == 49152
    assert tok.is_control(1) and tok.is_control(2) and not tok.is_control(tok.encode("hello")[0])
    assert tok.token_piece(1) == b"<|im_start|>"
    (the,) = tok.encode(" the")
    assert tok.token_piece(the) == b" the"
    (nl,) = tok.encode("\n")
    assert tok.token_piece(nl) == b"\n"
    assert tok.encode("") == [] and tok.decode([]) == ""
    for bad in (tok.vocab_size, -1):
        with pytest.raises(IndexError):
            tok.token_piece(bad)
        with pytest.raises(IndexError):
            tok.decode([5, bad])


@needs_model
def test_unsupported_model_is_rejected(meta: dict) -> None:
    with pytest.raises(ValueError, match="llama") as e:
        Tokenizer(meta["tokens"], meta["merges"], meta["token_types"], 1, 2, model="llama")
    assert "\n" not in str(e.value)


def test_unsupported_pre_is_rejected() -> None:
    with pytest.raises(ValueError, match="qwen2"):
        Tokenizer(["a", "b", "ab"], ["a b"], [1, 1, 1], 0, 1, pre="qwen2")


def test_tiny_vocab_merges_and_digits() -> None:
    # Independent of the model: checks merge order and smollm's one-digit-per-token split.
    tokens = ["a", "b", "c", "1", "2", "ab", "abc", "Ġ", "Ġa", "<s>"]
    merges = ["a b", "ab c", "Ġ a"]
    t = Tokenizer(tokens, merges, [1] * 9 + [3], bos_id=9, eos_id=9, pre="smollm")
    assert t.encode("abc") == [6]
    assert t.encode("ab a") == [5, 8]
    assert t.encode("12") == [3, 4]
    assert t.encode("<s>abc") == [9, 6]
    assert t.decode([9, 6, 8]) == "<s>abc a"
