"""OpenAI request → ``generate_config``: what /v1/completions and /v1/chat/completions hand the model.

    config, enable_thinking = to_generate_config(body)   # a checked chat.GenerateConfig

No field is dropped silently. OpenAI's bookkeeping fields (``user``, ``metadata``, ``store``, ...:
OPENAI_BOOKKEEPING) are accepted and not acted on; fields that change the output are accepted at the
values that ask for what this server does (OPENAI_DEFAULTS) and refused at any other; every other
key goes into generate_config, which ``chat.GenerateConfig`` checks (once: the handle is given the
checked config and applies it) or refuses. ``max_completion_tokens``
becomes ``max_tokens``; ``chat_template_kwargs: {"enable_thinking": bool}``, ``enable_thinking`` and
``reasoning_effort: "none"`` become the chat call's ``enable_thinking``; /v1/completions' integer
``logprobs`` (its legacy form) becomes ``logprobs: true, top_logprobs: N``; ``n``, ``logprobs``,
``response_format``, vLLM's ``guided_*``, ``tool_choice`` and the rest are generate_config keys. Unset sampling fields (None) are left out, so the model's own
defaults apply. Pure functions: no app, no model. Refusals are ``InferenceError`` (a 400).
"""
from __future__ import annotations

import json
from typing import Any, Mapping, Optional

from ..chat import GenerateConfig
from ..errors import InferenceError
from .bodies import json_kwargs, request_fields

# OpenAI request fields that OpenAI itself defines as bookkeeping (they do not change what the model
# writes): accepted with any value and not acted on; README "OpenAI request fields" lists them
OPENAI_BOOKKEEPING: dict[str, str] = {
    "user": "an end-user id for OpenAI's abuse monitoring",
    "safety_identifier": "an end-user id for OpenAI's abuse monitoring (the successor of user)",
    "metadata": "tags OpenAI stores with the completion",
    "store": "whether OpenAI keeps the completion for its dashboard and evals",
    "prompt_cache_key": "a routing hint for OpenAI's prompt cache; outputs do not depend on it",
}
# OpenAI request fields that change the output: accepted at the values that ask for what this server
# does (None: not sent); any other value is a 400 naming the field and these values. Applied, not
# dropped: tool_choice "none" sends no tools to the chat template, reasoning_effort "none" turns
# thinking off (enable_thinking=False).
OPENAI_DEFAULTS: dict[str, tuple] = {
    "service_tier": (None, "auto", "default"), "echo": (False, None),
    "best_of": (1, None), "suffix": (None, ""), "extra_body": (None, {}), "reasoning_effort": (None, "none"),
}
# fields whose None means "not sent" (OpenAI's clients send some as null): left out of generate_config
# (n, logprobs, response_format, tool_choice, ... are generate_config keys, chat.GenerateConfig checks them)
# declared sampling fields whose None means "not sent": left out of generate_config
UNSET_WHEN_NONE = frozenset({"max_tokens", "temperature", "top_p", "stop", "top_k", "seed", "n", "logprobs",
                             "top_logprobs", "presence_penalty", "frequency_penalty", "logit_bias", "min_p",
                             "response_format", "tool_choice", "parallel_tool_calls"})
THINKING_FIELDS = ("chat_template_kwargs", "enable_thinking", "reasoning_effort")


def is_default(value: Any, allowed: tuple) -> bool:
    """``value`` is one of ``allowed`` with the same type (``true`` is not ``1``, ``0`` is not ``false``)."""
    return any(value is a or (type(value) is type(a) and value == a)
               or (type(value) in (int, float) and type(a) in (int, float) and value == a) for a in allowed)


def _thinking(key: str, value: Any, current: Optional[bool]) -> Optional[bool]:
    """The chat's enable_thinking after one of THINKING_FIELDS; a 400 when two of them disagree."""
    if key == "chat_template_kwargs":
        kw = json_kwargs(value) if isinstance(value, str) else value
        if kw in (None, {}):
            return current
        if not isinstance(kw, dict) or set(kw) != {"enable_thinking"}:
            raise InferenceError("chat_template_kwargs: only {\"enable_thinking\": bool} is supported")
        value = kw["enable_thinking"]
    elif key == "reasoning_effort":
        value = False if value == "none" else None
    if value is not None and current is not None and value != current:
        raise InferenceError(f"{key} asks for enable_thinking={value}, another field of the request for {current}; "
                             "send one of chat_template_kwargs, enable_thinking and reasoning_effort")
    return current if value is None else value


def generate_config(fields: Mapping[str, Any], skip: tuple[str, ...] = (), chat: bool = True
                    ) -> tuple[dict[str, Any], Optional[bool]]:
    """``(generate_config, enable_thinking)`` from a request's fields (``bodies.request_fields``);
    ``skip`` names the fields the route passes otherwise (model, prompt, messages, tools). Every
    field is applied, refused, or (OPENAI_BOOKKEEPING) accepted as OpenAI's bookkeeping; a
    completion (``chat=False``) refuses the thinking fields, which only a chat template reads."""
    cfg: dict[str, Any] = {}
    enable_thinking = None
    for key, value in fields.items():
        if key in skip or key in OPENAI_BOOKKEEPING:
            continue
        if key in THINKING_FIELDS:
            if key == "reasoning_effort":
                _check_default(key, value)
            enable_thinking = _thinking(key, value, enable_thinking)
        elif key == "max_completion_tokens":
            if value is not None and fields.get("max_tokens") not in (None, value):
                raise InferenceError(f"max_completion_tokens={value!r} and max_tokens={fields['max_tokens']!r} "
                                     "disagree; send one of them")
            if value is not None:
                cfg["max_tokens"] = value
        elif key in OPENAI_DEFAULTS:
            _check_default(key, value)
        elif key == "stream_options":
            if value is not None:
                cfg[key] = value            # checked by chat.GenerateConfig
        elif key == "logprobs" and not chat and type(value) is int:
            # the legacy completions field: how many alternatives per token (0 to 5), the chosen token's too
            cfg["logprobs"], cfg["top_logprobs"] = True, value
        elif not (value is None and key in UNSET_WHEN_NONE):
            cfg[key] = value                # chat.GenerateConfig refuses keys it does not know
    if enable_thinking is not None and not isinstance(enable_thinking, bool):
        raise InferenceError("enable_thinking must be true or false")
    if enable_thinking is not None and not chat:
        raise InferenceError("chat_template_kwargs / enable_thinking / reasoning_effort: a completion has no chat "
                             "template to turn thinking on or off; use /v1/chat/completions")
    return cfg, enable_thinking


def to_generate_config(body: Any) -> tuple[GenerateConfig, Optional[bool]]:
    """``(config, enable_thinking)`` of a completions or chat body (``bodies.CompletionBody`` /
    ``ChatBody``): its OpenAI fields mapped (``generate_config``), then checked once as a
    ``chat.GenerateConfig``; every refusal an ``InferenceError`` naming the field (a 400)."""
    cfg, enable_thinking = generate_config(request_fields(body), body.call_fields, chat=body.chat)
    return GenerateConfig.check(cfg), enable_thinking


def _check_default(key: str, value: Any) -> None:
    allowed = OPENAI_DEFAULTS[key]
    if not is_default(value, allowed):
        accepted = ", ".join(json.dumps(a) for a in allowed if a is not None)
        raise InferenceError(f"{key}={value!r:.80} is not supported by this server; it accepts {accepted} "
                             "(or leave the field out)")


def single_prompt(prompt: Any) -> Any:
    """/v1/completions' ``prompt``: a string, or a list of exactly one string."""
    if isinstance(prompt, list):
        if len(prompt) != 1:
            raise InferenceError("prompt: send one prompt per request (a string or a list of one string)")
        return prompt[0]
    return prompt
