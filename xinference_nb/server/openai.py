"""OpenAI request → ``generate_config``: what /v1/completions and /v1/chat/completions hand the model.

    cfg, enable_thinking = generate_config(request_fields(body), skip=("model", "messages", "tools"))

OpenAI keys that mean nothing to us at their default value are dropped (the handle refuses unknown
generate_config keys); any other value of them is refused. ``max_completion_tokens`` becomes
``max_tokens``; ``chat_template_kwargs: {"enable_thinking": bool}`` and ``enable_thinking`` become
the chat call's ``enable_thinking``. Unset sampling fields (None) are left out, so the model's own
defaults apply. Pure functions: no app, no model. Refusals are ``InferenceError`` (a 400).
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

from ..errors import InferenceError
from .bodies import json_kwargs

# OpenAI request keys that carry no meaning for us at their default value; dropped before the handle
# (which refuses unknown generate_config keys). Any other value of them is a 400. "*": any value.
OPENAI_DEFAULTS: dict[str, tuple] = {
    "n": (1, None), "user": ("*",), "logprobs": (False, None), "top_logprobs": (None, 0),
    "presence_penalty": (0, 0.0, None), "frequency_penalty": (0, 0.0, None), "logit_bias": (None, {}),
    "response_format": (None, {"type": "text"}), "parallel_tool_calls": ("*",), "tool_choice": (None, "auto", "none"),
    "store": (None, False), "metadata": ("*",), "service_tier": ("*",), "echo": (False, None), "best_of": (1, None),
    "suffix": (None, ""), "stream_options": ("*",), "request_id": ("*",), "extra_body": (None, {}),
    "prompt_cache_key": ("*",), "safety_identifier": ("*",), "reasoning_effort": ("*",),
}
# declared sampling fields whose None means "not sent": left out of generate_config
UNSET_WHEN_NONE = frozenset({"max_tokens", "temperature", "top_p", "stop", "top_k", "seed"})


def is_default(value: Any, allowed: tuple) -> bool:
    """``value`` is one of ``allowed`` with the same type (``true`` is not ``1``, ``0`` is not ``false``)."""
    return any(value is a or (type(value) is type(a) and value == a)
               or (type(value) in (int, float) and type(a) in (int, float) and value == a) for a in allowed)


def generate_config(fields: Mapping[str, Any], skip: tuple[str, ...] = ()) -> tuple[dict[str, Any], Optional[bool]]:
    """``(generate_config, enable_thinking)`` from a request's fields (``bodies.request_fields``);
    ``skip`` names the fields the route passes otherwise (model, prompt, messages, tools)."""
    cfg: dict[str, Any] = {}
    enable_thinking = None
    for key, value in fields.items():
        if key in skip:
            continue
        if key == "max_completion_tokens":
            if value is not None:
                cfg["max_tokens"] = value
        elif key == "chat_template_kwargs":
            kw = json_kwargs(value) if isinstance(value, str) else value
            if isinstance(kw, dict) and "enable_thinking" in kw:
                enable_thinking = kw.get("enable_thinking")
            elif kw not in (None, {}):
                raise InferenceError("chat_template_kwargs: only {\"enable_thinking\": bool} is supported")
        elif key == "enable_thinking":
            enable_thinking = value
        elif key in OPENAI_DEFAULTS:
            allowed = OPENAI_DEFAULTS[key]
            if not ("*" in allowed or is_default(value, allowed)):
                raise InferenceError(f"{key}={value!r} is not supported by this server")
            if key == "stream_options" and value:
                cfg[key] = value
        elif not (value is None and key in UNSET_WHEN_NONE):
            cfg[key] = value
    if enable_thinking is not None and not isinstance(enable_thinking, bool):
        raise InferenceError("enable_thinking must be true or false")
    return cfg, enable_thinking


def single_prompt(prompt: Any) -> Any:
    """/v1/completions' ``prompt``: a string, or a list of exactly one string."""
    if isinstance(prompt, list):
        if len(prompt) != 1:
            raise InferenceError("prompt: send one prompt per request (a string or a list of one string)")
        return prompt[0]
    return prompt
