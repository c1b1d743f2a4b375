"""Shared bits of the widgets: the client, field editors, status lines."""
from __future__ import annotations

import html
import json
from typing import Any, Optional

import ipywidgets as W

from ..display._html import esc
from ..errors import XinfError


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
def is_remote(client: Any) -> bool:
    """True for a client that drives a server (RemoteClient: ``endpoint`` is its URL)."""
    return bool(getattr(client, "endpoint", None))


def where(client: Any) -> str:
    """Where a client's models run, for labels: its endpoint, or "kernel"."""
    return str(client.endpoint) if is_remote(client) else "kernel"


def path_is_local(path: str) -> bool:
    """The path (or file:// URI) names something on this machine."""
    from pathlib import Path

    text = path[7:] if path.startswith("file://") else path
    try:
        return Path(text).expanduser().exists()
    except OSError:
        return False


class ServerParsed:
    """What the server's auto-parse route returned, shaped like a ParsedModel for the forms: an LLM
    document (possibly partial), every field marked as read on the server."""

    model_type = "LLM"
    spec = None

    def __init__(self, document: dict, endpoint: str, path: str):
        from ..display import flatten_document

        self.document = dict(document or {})
        self.endpoint, self.path = endpoint, path
        self.sources = {key: f"the server (auto-parse of {path})" for key in flatten_document(self.document)}
        self.warnings: list[str] = []

    def to_json(self) -> str:
        return json.dumps(self.document, ensure_ascii=False)


PARSE_WHERE = ("auto", "here", "server")


def parse_where(client: Any, path: str, where_: str = "auto") -> str:
    """Where a path is parsed: "here" (this kernel's parse_model) or "server" (the client's
    auto-parse route). ``auto``: here when the path exists on this machine or the client is
    in-kernel, else on the server (the files are there)."""
    if where_ not in PARSE_WHERE:
        raise ValueError(f"parse on {where_!r}: use one of {', '.join(PARSE_WHERE)}")
    if where_ == "server" and not hasattr(client, "parse_model"):
        raise XinfError("this client runs models in the kernel: there is no server to parse on; parse here")
    if where_ != "auto":
        return where_
    if not is_remote(client) or not hasattr(client, "parse_model") or path_is_local(path):
        return "here"
    return "server"


def parse_with(client: Any, path: str, model_type: Optional[str] = None, model_family: Optional[str] = None,
               model_name: Optional[str] = None, where_: str = "auto") -> Any:
    """parse_model where the files are (see ``parse_where``). Returns a ParsedModel, or a
    ServerParsed for a parse on the server (LLMs only: that is what the route parses)."""
    if parse_where(client, path, where_) == "here":
        from ..parse import parse_model

        return parse_model(path, model_type=model_type, model_family=model_family, model_name=model_name)
    if model_type not in (None, "LLM"):
        raise XinfError(f"{path}: the server's auto-parse route reads LLMs only, not {model_type} models; "
                        "parse it where the files are readable from this kernel, or write the document by hand")
    doc = client.parse_model(path, model_family)
    if not isinstance(doc, dict):
        raise XinfError(f"{path}: the server at {client.endpoint} answered the parse with {type(doc).__name__}, "
                        "not a model document")
    if model_name:
        doc["model_name"] = model_name
    if model_family and not doc.get("model_family"):
        doc["model_family"] = model_family
    return ServerParsed(doc, client.endpoint, path)
