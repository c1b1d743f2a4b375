"""Where a model's files are parsed when the client drives a server: here (this kernel's
parse_model) when the path exists on this machine, else on the server through its auto-parse
route, which reads the files where they are. The client is duck-typed (an in-kernel Client or a
RemoteClient), so parse/ imports nothing above it."""
from __future__ import annotations

import json
from typing import Any, Optional

from ..errors import XinfError


def is_remote(client: Any) -> bool:
    return bool(getattr(client, "endpoint", None))


def flatten_document(doc: dict) -> dict[str, Any]:
    """{"a": 1, "model_specs": [{"b": 2}]} → {"a": 1, "model_specs[0].b": 2} (other nesting kept whole)."""
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if key == "model_specs" and isinstance(value, list):
            for i, spec in enumerate(value):
                for k, v in (spec or {}).items():
                    out[f"model_specs[{i}].{k}"] = v
        else:
            out[key] = value
    return out


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
        from . import parse_model

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
