"""Every custom registration of a client in one file, and that file registered again (issue 24, item 6).

Works through the public registration methods only (``list_model_registrations``,
``get_model_registration``, ``register_model``, ``unregister_model``), so the same two functions move
registrations between the kernel, our server and a Xinference cluster: export from one, import into
another. The file: ``{"format": "xinference_nb.registrations", "version": 1, "models": [{"model_type",
"model": <the document, as get_model_registration returns it>}, ...]}``.

``Registration`` is the document ``get_model_registration`` returns (a dict shown as JSON).

An import is all or nothing: every document is validated here first (the same rules as a register),
names already registered are refused unless ``overwrite=True`` (a built-in name always is), and if a
register fails part-way the ones done are undone (unregistered, or their earlier documents put back).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Union

from ..errors import FieldIssue, SpecError, XinfError
from ..registry.store import atomic_write_text
from ..model_types import type_names

EXPORT_FORMAT = "xinference_nb.registrations"
EXPORT_VERSION = 1
MAX_IMPORT_BYTES = 64 * 2**20          # an export file larger than this is refused unread


class Registration(dict):
    """What ``get_model_registration`` returns on either client: the document, a plain ``dict`` (index
    it, ``json.dumps`` it, pass it back to ``register_model``) that a notebook shows as JSON: JupyterLab's
    JSON viewer (``application/json``), indented JSON text in a terminal, a ``<pre>`` elsewhere."""

    def __init__(self, document: Any = (), model_type: Optional[str] = None):
        super().__init__(document)
        self.model_type = model_type

    @property
    def title(self) -> str:
        kind = "built-in" if self.get("is_builtin") else "custom"
        return f"{kind} {self.model_type or ''} model {self.get('model_name')!r}".replace("  ", " ")

    def json_text(self) -> str:
        return json.dumps(self, indent=2, ensure_ascii=False, default=str)

    def _repr_json_(self) -> tuple[dict[str, Any], dict[str, Any]]:
        return dict(self), {"expanded": True, "root": self.title}

    def _repr_html_(self) -> str:
        import html

        return (f"<details open><summary>{html.escape(self.title)}</summary>"
                f"<pre>{html.escape(self.json_text())}</pre></details>")

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:   # IPython's text/plain
        p.text(self.json_text())


def export_registrations(client: Any, path: Union[str, Path, None] = None,
                         model_types: Optional[list[str]] = None) -> dict[str, Any]:
    """The custom registrations of ``client`` (all types, or ``model_types``) as one document; also
    written to ``path`` (JSON, atomically) when given. Built-in models are not exported."""
    from ..spec import normalize_model_type

    types = [normalize_model_type(t) for t in model_types] if model_types is not None else type_names()
    models = []
    for name in types:
        for row in client.list_model_registrations(name):
            if row.get("is_builtin"):
                continue
            models.append({"model_type": name, "model": client.get_model_registration(name, row["model_name"])})
    doc = {"format": EXPORT_FORMAT, "version": EXPORT_VERSION, "models": models}
    if path is not None:
        _write(Path(path), doc)
    return doc


def import_registrations(client: Any, source: Union[str, Path, dict[str, Any]], overwrite: bool = False,
                         persist: bool = True) -> list[str]:
    """Registers every model of an export (a path, its JSON text, or the dict) on ``client``; returns
    their names in order. All or nothing: a SpecError naming each bad entry, or each name already
    registered (without ``overwrite=True``), before anything is registered; a failure part-way undoes
    the registrations done."""
    if not isinstance(overwrite, bool) or not isinstance(persist, bool):
        raise SpecError([FieldIssue("overwrite" if not isinstance(overwrite, bool) else "persist",
                                    "must be true or false")])
    entries = _checked_entries(_read(source))
    taken = _refuse_taken(client, entries, overwrite)
    done: list[tuple[str, str, Optional[dict[str, Any]]]] = []   # (type, name, the document it replaced)
    try:
        for model_type, name, document in entries:
            before = client.get_model_registration(model_type, name) if (model_type, name) in taken else None
            client.register_model(model_type, json.dumps(document), persist=persist, overwrite=overwrite)
            done.append((model_type, name, before))
    except BaseException:
        _undo(client, done, persist)
        raise
    return [name for _, name, _ in entries]


# ------------------------------------------------------------------------------------------------
def _write(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(doc, indent=2, ensure_ascii=False) + "\n")


def _read(source: Any) -> Any:
    """The export document of ``source``: a dict as it is, a string that is JSON text, else a path."""
    if isinstance(source, dict):
        return source
    if isinstance(source, str) and source.lstrip().startswith("{"):
        text = source
    elif isinstance(source, (str, Path)):
        path = Path(source)
        try:
            if path.stat().st_size > MAX_IMPORT_BYTES:
                raise SpecError([FieldIssue("source", f"{path} is larger than {MAX_IMPORT_BYTES // 2**20} MiB; "
                                            "an export of registrations is a few KiB a model")])
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise SpecError([FieldIssue("source", f"cannot read {path}: {exc}")]) from None
    else:
        raise SpecError([FieldIssue("source", f"must be a path, JSON text or a dict, got {type(source).__name__}")])
    try:
        return json.loads(text)
    except ValueError as exc:
        raise SpecError([FieldIssue("source", f"is not JSON: {exc}")]) from None


def _checked_entries(doc: Any) -> list[tuple[str, str, dict[str, Any]]]:
    """(model type, model name, document) of each entry, every entry validated; one SpecError listing
    every problem (entry by entry) otherwise."""
    from ..spec import load_spec, normalize_model_type, to_document

    if not isinstance(doc, dict) or doc.get("format") != EXPORT_FORMAT:
        raise SpecError([FieldIssue("format", f"not an export of registrations (expected \"format\": "
                                    f"\"{EXPORT_FORMAT}\"; write one with export_registrations)")])
    if doc.get("version") != EXPORT_VERSION:
        raise SpecError([FieldIssue("version", f"{doc.get('version')!r} is not supported; use {EXPORT_VERSION}")])
    unknown = sorted(set(doc) - {"format", "version", "models"})
    models = doc.get("models")
    if unknown or not isinstance(models, list):
        raise SpecError([FieldIssue(unknown[0] if unknown else "models", "an export has the keys format, "
                                    "version and models (a list of {\"model_type\", \"model\"})")])
    issues, entries, seen = [], [], set()
    for i, item in enumerate(models):
        if not isinstance(item, dict) or set(item) != {"model_type", "model"}:
            issues.append(FieldIssue(f"models[{i}]", "must be {\"model_type\": ..., \"model\": {...}}"))
            continue
        try:
            model_type = normalize_model_type(item["model_type"])
            spec = load_spec(model_type, item["model"])
        except SpecError as exc:
            issues += [FieldIssue(f"models[{i}].{issue.path}".rstrip("."), issue.message) for issue in exc.issues]
            continue
        if (model_type, spec.model_name) in seen:
            issues.append(FieldIssue(f"models[{i}].model_name", f"{spec.model_name!r} appears twice"))
        seen.add((model_type, spec.model_name))
        entries.append((model_type, spec.model_name, to_document(spec)))
    if issues:
        raise SpecError(issues)
    return entries


def _refuse_taken(client: Any, entries: list[tuple[str, str, dict[str, Any]]], overwrite: bool
                  ) -> set[tuple[str, str]]:
    """The (type, name) of the entries already registered as custom models (those ``overwrite``
    replaces); a SpecError listing the names taken (built-in ones always; custom ones without
    ``overwrite``)."""
    issues, taken = [], set()
    for model_type in sorted({t for t, _, _ in entries}):
        rows = {r["model_name"]: r.get("is_builtin", False) for r in client.list_model_registrations(model_type)}
        for t, name, _ in entries:
            if t != model_type or name not in rows:
                continue
            if rows[name]:
                issues.append(FieldIssue("model_name", f"{model_type} {name!r} is a built-in model's name"))
            elif not overwrite:
                issues.append(FieldIssue("model_name", f"{model_type} {name!r} is already registered; pass "
                                         "overwrite=True to replace it"))
            taken.add((model_type, name))
    if issues:
        raise SpecError(issues)
    return taken


def _undo(client: Any, done: list[tuple[str, str, Optional[dict[str, Any]]]], persist: bool) -> None:
    """Takes back the registrations of a failed import, newest first (best effort: the import's own
    error is what the caller sees)."""
    for model_type, name, before in reversed(done):
        try:
            if before is None:
                client.unregister_model(model_type, name)
            else:
                client.register_model(model_type, json.dumps(before), persist=persist, overwrite=True)
        except XinfError:
            pass
