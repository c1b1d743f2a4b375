"""What parse_model returns: a :class:`ParsedModel` (the spec, where each field came from, warnings)
and its preview, rendered by the runtime's own chat template renderer."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..errors import ParseError, shorten

SAMPLE_MESSAGES: list[dict] = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "The capital of France is Paris."},
    {"role": "user", "content": "And what is the weather like there today?"},
]

SAMPLE_TOOLS: list[dict] = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "The city, e.g. Paris"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}]


@dataclass
class ParsedModel:
    """A spec made from a model's files, with the origin of each field.

    ``sources`` maps a field path (``context_length``, ``model_specs[0].model_size_in_billions``…) to
    where the value came from: ``"<file> <key>"``, ``"family default (<family>)"`` or ``"assumed"``.
    ``warnings`` lists what a user should check before registering.
    """

    spec: Any
    model_type: str
    path: Path
    sources: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    family: Optional[str] = None              # the family whose facts were the fallback
    template_opens_reasoning: bool = False    # the generation prompt itself opens the reasoning block
    special_tokens: dict[str, str] = field(default_factory=dict)   # bos_token / eos_token … texts
    facts: dict[str, Any] = field(default_factory=dict)            # raw facts read (architecture, parameters…)

    # ------------------------------------------------------------------ documents
    def to_dict(self) -> dict:
        """The document (what register_model takes), as a dict."""
        from ..spec import to_document

        return to_document(self.spec)

    def to_json(self, indent: Optional[int] = 2) -> str:
        """The document as JSON text, ready for ``register_model(model_type, model=..., persist=...)``."""
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    def source_of(self, field_path: str) -> str:
        if field_path in self.sources:
            return self.sources[field_path]
        return "default"

    def table(self) -> list[tuple[str, Any, str]]:
        """(field, value, source) rows of the fields a user should look at, in document order."""
        doc = self.to_dict()
        rows: list[tuple[str, Any, str]] = [("model_type", self.model_type, self.source_of("model_type"))]
        skip = {"version", "virtualenv", "is_builtin", "cache_config"}
        for key, value in doc.items():
            if key in skip:
                continue
            if key == "model_specs" and isinstance(value, list):
                for i, entry in enumerate(value):
                    for sub, subval in entry.items():
                        path = f"model_specs[{i}].{sub}"
                        if subval is None and path not in self.sources:
                            continue
                        rows.append((path, subval, self.source_of(path)))
                continue
            if value is None and key not in self.sources:
                continue
            if value in ({}, []) and key not in self.sources:
                continue
            rows.append((key, value, self.source_of(key)))
        return rows

    # ------------------------------------------------------------------ preview
    def preview(self, messages: Optional[list[dict]] = None, tools: Optional[list[dict]] = None,
                add_generation_prompt: bool = True, **variables: Any) -> str:
        """The prompt the effective chat template makes from ``messages`` (default: system, user,
        assistant, user; plus a sample tool when the model has the tools ability)."""
        template = getattr(self.spec, "chat_template", None)
        if self.model_type != "LLM" or not template:
            raise ParseError(f"{self.path}: this {self.model_type} model has no chat template to preview"
                             + ("; give it one (chat_template) to enable chat" if self.model_type == "LLM" else ""))
        default = messages is None
        if default:
            messages = [dict(m) for m in SAMPLE_MESSAGES]
            if tools is None and "tools" in (self.spec.model_ability or []):
                tools = SAMPLE_TOOLS
        env = {k: v for k, v in self.special_tokens.items() if v is not None}
        env.update(variables)
        try:
            return render_chat(template, messages, tools, add_generation_prompt, env)
        except Exception as exc:  # noqa: BLE001 - jinja2 TemplateError and friends from the template
            if default and messages and messages[0]["role"] == "system":
                try:
                    text = render_chat(template, messages[1:], tools, add_generation_prompt, env)
                except Exception:  # noqa: BLE001
                    pass
                else:
                    note = (f"the chat template refuses a system message ({exc}); the preview leaves it out, "
                            "and so must your chats")
                    if note not in self.warnings:
                        self.warnings.append(note)
                    return text
            raise ParseError(f"{self.sources.get('chat_template', 'the chat template')}: failed to render "
                             f"({type(exc).__name__}: {exc})") from None

    # ------------------------------------------------------------------ display
    def __repr__(self) -> str:
        name = getattr(self.spec, "model_name", "?")
        lines = [f"ParsedModel({self.model_type} {name!r} from {self.path})"]
        for fld, value, source in self.table():
            text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
            text = shorten(text.replace("\n", "\\n"), 60)
            lines.append(f"  {fld:<40} {text:<60}  ← {source}")
        for w in self.warnings:
            lines.append(f"  ! {w}")
        return "\n".join(lines)


def render_chat(template: str, messages: list[dict], tools: Optional[list[dict]], add_generation_prompt: bool,
                 variables: dict) -> str:
    """Render with the runtime renderer, so the preview is exactly the prompt a launched model gets."""
    from ..chat import render_chat_template

    return render_chat_template(template, messages, tools=tools, add_generation_prompt=add_generation_prompt,
                                **variables)
