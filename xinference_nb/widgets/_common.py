"""Shared bits of the widgets: the client, field editors, status lines."""
from __future__ import annotations

import html
import json
from typing import Any, Optional

import ipywidgets as W

from ..display._html import esc


def default_client(client: Any = None) -> Any:
    if client is not None:
        return client
    from ..client import Client

    return Client()


def status_html(text: str, level: str = "info") -> str:
    color = {"error": "#c0392b", "ok": "#2e7d32", "warning": "#b26a00"}.get(level, "inherit")
    icon = {"error": "✗ ", "ok": "✓ ", "warning": "⚠ "}.get(level, "")
    return f"<div style='color:{color};white-space:pre-wrap'>{icon}{html.escape(str(text), quote=False)}</div>"


LIST_FIELDS = {"model_lang", "model_ability", "language", "stop", "stop_token_ids", "architectures"}
INT_FIELDS = {"context_length", "dimensions", "max_tokens"}
LONG_TEXT = {"chat_template", "model_description"}


class FieldEditor:
    """One editable field of a document: a widget, a "from config.json" hint and an inline error."""

    def __init__(self, path: str, value: Any, source: Optional[str] = None):
        self.path = path
        self.original = value
        self.source = source   # where the value came from ("config.json", "the registration 'x'"), or None
        key = path.rsplit(".", 1)[-1]
        if isinstance(value, bool):
            self.kind = "bool"
        elif key in INT_FIELDS or (isinstance(value, int) and not isinstance(value, bool)):
            self.kind = "int"
        elif key == "model_size_in_billions" or key == "activated_size_in_billions":
            self.kind = "size"
        elif isinstance(value, float):
            self.kind = "float"
        elif key in LIST_FIELDS or isinstance(value, list):
            self.kind = "list"
        elif isinstance(value, dict):
            self.kind = "json"
        else:
            self.kind = "str"
        layout = W.Layout(width="auto", flex="1 1 auto")
        if self.kind == "bool":
            self.widget = W.Checkbox(value=bool(value), indent=False, layout=layout)
        elif key in LONG_TEXT or self.kind == "json":
            self.widget = W.Textarea(value=self._to_text(value), layout=W.Layout(width="auto", flex="1 1 auto",
                                                                                    height="7em"))
        else:
            self.widget = W.Text(value=self._to_text(value), layout=layout)
        self.label = W.HTML(f"<code>{esc(path)}</code>", layout=W.Layout(width="260px", min_width="200px"))
        self.hint = W.HTML(self._hint_html(source), layout=W.Layout(width="auto"))
        self.error = W.HTML("")
        self.box = W.VBox([W.HBox([self.label, self.widget], layout=W.Layout(width="100%")),
                           W.HBox([W.HTML("", layout=W.Layout(width="260px", min_width="200px")),
                                   W.VBox([self.hint, self.error])])],
                          layout=W.Layout(margin="0 0 4px 0"))

    @staticmethod
    def _hint_html(source: Optional[str]) -> str:
        return f"<span style='font-size:11px;opacity:.65'>from {esc(source)}</span>" if source else ""

    @property
    def source_hint(self) -> str:
        return self.hint.value

    def _to_text(self, value: Any) -> str:
        if value is None:
            return ""
        if self.kind in ("list", "json"):
            return json.dumps(value, ensure_ascii=False)
        return str(value)

    @property
    def value(self) -> Any:
        """The typed value (ValueError with a readable message when the text does not parse)."""
        if self.kind == "bool":
            return bool(self.widget.value)
        text = self.widget.value
        if text.strip() == "":
            return "" if self.original == "" else None
        if self.kind == "int":
            try:
                return int(text.strip())
            except ValueError:
                raise ValueError(f"{text!r} is not a whole number") from None
        if self.kind == "float":
            try:
                return float(text.strip())
            except ValueError:
                raise ValueError(f"{text!r} is not a number") from None
        if self.kind == "size":
            if "_" in text:  # Xinference's "0_5" form (int("0_5") would read 5)
                return text.strip()
            for conv in (int, float):
                try:
                    return conv(text.strip())
                except ValueError:
                    pass
            return text.strip()
        if self.kind == "list":
            try:
                value = json.loads(text)
            except ValueError:
                value = [part.strip() for part in text.split(",") if part.strip()]
            if not isinstance(value, list):
                value = [value]
            return value
        if self.kind == "json":
            try:
                return json.loads(text)
            except ValueError as exc:
                raise ValueError(f"is not valid JSON: {exc}") from None
        return text

    @value.setter
    def value(self, new: Any) -> None:
        if self.kind == "bool":
            self.widget.value = bool(new)
        else:
            self.widget.value = self._to_text(new)

    def set_error(self, message: Optional[str]) -> None:
        self.error.value = (f"<span style='color:#c0392b;font-size:12px'>{html.escape(message, quote=False)}</span>" if message else "")

    @property
    def error_text(self) -> str:
        return self.error.value


# ---------------------------------------------------------------------------------------------- remote
# where a path is parsed is parse logic (parse/where.py); re-exported for the forms
from ..parse.where import PARSE_WHERE, ServerParsed, is_remote, parse_where, parse_with, path_is_local  # noqa: E402,F401


def where(client: Any) -> str:
    """Where a client's models run, for labels: its endpoint, or "kernel"."""
    return str(client.endpoint) if is_remote(client) else "kernel"

