"""flight.engine.chat: rendering of the GGUF chat template the way transformers renders it."""
from __future__ import annotations

import pytest

from flight.engine.chat import render_chat
from tests._gguf_meta import default_model_path, llama_reference, tokenizer_meta

SMOLLM_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
USER = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="session")
def smol_template() -> str:
    if default_model_path() is None:
        pytest.skip("default model not installed")
    template = tokenizer_meta()["chat_template"]
    assert template, "the default model carries a chat template"
    return template


def test_default_system_prompt_added_without_system_message(smol_template: str) -> None:
    out = render_chat(USER, smol_template)
    assert out == (f"<|im_start|>system\n{SMOLLM_SYSTEM}<|im_end|>\n"
                   "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
                   "<|im_start|>assistant\n")


def test_no_default_system_prompt_with_system_message(smol_template: str) -> None:
    msgs = [{"role": "system", "content": "You are a flight computer."}, *USER]
    out = render_chat(msgs, smol_template)
    assert SMOLLM_SYSTEM not in out
    assert out.startswith("<|im_start|>system\nYou are a flight computer.<|im_end|>\n<|im_start|>user\n")
    assert out.count("<|im_start|>system") == 1


def test_generation_prompt_flag(smol_template: str) -> None:
    msgs = [*USER, {"role": "assistant", "content": "Paris."}]
    without = render_chat(msgs, smol_template, add_generation_prompt=False)
    assert without.endswith("<|im_start|>assistant\nParis.<|im_end|>\n")
    assert render_chat(msgs, smol_template) == without + "<|im_start|>assistant\n"


def test_rendered_prompt_is_the_one_llama_cpp_was_given(smol_template: str) -> None:
    ref = llama_reference()
    if ref is None:
        pytest.skip("llama.cpp fixture not generated")
    chat = next(p for p in ref["prompts"] if p["name"] == "chat_system")
    assert render_chat(USER, smol_template) == chat["text"]


def test_chatml_fallback_without_template() -> None:
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    assert render_chat(msgs, None) == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"
    assert render_chat(msgs, None, add_generation_prompt=False).endswith("U<|im_end|>\n")


def test_whitespace_control_as_transformers() -> None:
    # transformers compiles with trim_blocks and lstrip_blocks: the newline after a block tag and
    # the indentation before one vanish. Many templates are written relying on that.
    template = "{% for m in messages %}\n    {% if m.role == 'user' %}\n[{{ m.content }}]\n    {% endif %}\n{% endfor %}"
    assert render_chat(USER, template) == "[What is the capital of France?]\n"


def test_tojson_does_not_html_escape() -> None:
    out = render_chat([{"role": "user", "content": "<a & 'b'> é"}], "{{ messages[0] | tojson }}")
    assert out == '{"role": "user", "content": "<a & \'b\'> é"}'


def test_loop_controls_available() -> None:
    template = "{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}{{ m.content }}{% endfor %}"
    assert render_chat([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], template) == "a"


def test_extra_variables_reach_template() -> None:
    assert render_chat(USER, "{{ bos_token }}x", bos_token="<s>") == "<s>x"


def test_raise_exception_becomes_one_line_value_error() -> None:
    template = "{% if messages[0].role != 'system' %}{{ raise_exception('System message\nrequired') }}{% endif %}"
    with pytest.raises(ValueError, match="System message required") as e:
        render_chat(USER, template)
    assert "\n" not in str(e.value)


def test_syntax_error_becomes_value_error() -> None:
    with pytest.raises(ValueError, match="chat template error") as e:
        render_chat(USER, "{% for m in messages %}{{ m.content }")
    assert "\n" not in str(e.value)


def test_sandbox_blocks_attribute_escape() -> None:
    # The template comes from a model file: it must not reach Python internals.
    with pytest.raises(ValueError):
        render_chat(USER, "{{ messages.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(ValueError):
        render_chat(USER, "{{ messages.append(1) }}")  # immutable sandbox: no mutation
