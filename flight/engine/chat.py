"""Chat prompt rendering from the GGUF's tokenizer.chat_template (a Jinja template).

The model was trained on prompts rendered by Hugging Face transformers, so the Jinja
environment copies transformers' (chat_template_utils._compile_jinja_template): sandboxed,
trim_blocks/lstrip_blocks on, loopcontrols, its tojson and the raise_exception /
strftime_now globals. Any difference in whitespace would change the tokens the model sees.
"""
from __future__ import annotations

import datetime
import functools
import json
from typing import Any

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

__all__ = ["render_chat", "CHATML_TEMPLATE"]

# Used when the GGUF carries no template. Plain ChatML, no default system prompt: we cannot know
# which one (if any) an arbitrary model expects.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _raise_exception(message: str) -> None:
    # Templates call this to reject conversations they cannot express (e.g. roles out of order).
    raise jinja2.exceptions.TemplateError(message)


def _tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    # Jinja's own tojson HTML-escapes <, >, & and ' which transformers deliberately does not.
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.datetime.now().strftime(fmt)


@functools.lru_cache(maxsize=1)
def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


@functools.lru_cache(maxsize=8)
def _compile(template: str) -> jinja2.Template:
    return _environment().from_string(template)


def _one_line(e: Exception) -> str:
    text = " ".join(str(e).split())
    line = getattr(e, "lineno", None)
    where = f" (template line {line})" if line else ""
    return f"chat template error{where}: {type(e).__name__}: {text}"


def render_chat(messages: list[dict], template: str | None, add_generation_prompt: bool = True,
                **extra: Any) -> str:
    """Render messages ([{"role": ..., "content": ...}, ...]) into the model's prompt text.

    template is the GGUF's tokenizer.chat_template, or None for plain ChatML. extra variables
    (bos_token, eos_token, tools, ...) are passed to the template as transformers would.
    Raises ValueError (one line) when the template does not compile or refuses the messages.
    """
    try:
        compiled = _compile(template if template is not None else CHATML_TEMPLATE)
        return compiled.render(messages=messages, add_generation_prompt=add_generation_prompt, **extra)
    except (jinja2.exceptions.TemplateError, TypeError, KeyError, IndexError, AttributeError) as e:
        raise ValueError(_one_line(e)) from e
