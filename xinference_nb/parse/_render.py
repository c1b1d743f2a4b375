"""A small chat-template renderer with transformers' semantics, for previews and for checking what a
template does (does its generation prompt open a reasoning block?). The runtime renderer lives in
``xinference_nb.chat``; this one is used when that module is not there."""
from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from typing import Any, Optional


def _raise_exception(message: str) -> None:
    from jinja2.exceptions import TemplateError

    raise TemplateError(message)


def _tojson(x: Any, ensure_ascii: bool = False, indent: Optional[int] = None, separators: Any = None,
            sort_keys: bool = False) -> str:
    # transformers' tojson: no HTML escaping, non-ASCII kept
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


@lru_cache(maxsize=1)
def _environment():
    from jinja2 import nodes
    from jinja2.ext import Extension
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class GenerationTag(Extension):
        """``{% generation %}…{% endgeneration %}`` (assistant-mask markers): rendered as its body."""

        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return nodes.Scope(body, lineno=lineno)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=["jinja2.ext.loopcontrols", GenerationTag])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


@lru_cache(maxsize=32)
def compile_template(template: str):
    return _environment().from_string(template)


def render(template: str, messages: list[dict], *, tools: Optional[list[dict]] = None,
           add_generation_prompt: bool = True, **variables: Any) -> str:
    """Render ``template`` like ``tokenizer.apply_chat_template(..., tokenize=False)``. Template errors
    (``raise_exception``, syntax) propagate as jinja2 exceptions."""
    compiled = compile_template(template)
    return compiled.render(messages=messages, tools=tools, add_generation_prompt=add_generation_prompt,
                           **variables)
