"""Built-in catalog plus custom registrations (persisted or for this session only).

Rules (Xinference's): names are unique per model type; a built-in name can be neither replaced
nor unregistered; a custom LLM's model_family may not be a built-in model's name; registering an
existing custom name needs ``overwrite=True``. A failed register changes nothing.
"""
from __future__ import annotations

import json
import threading
import warnings
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Optional

from ..errors import FieldIssue, ModelNotFound, RegistryError, SpecError
from ..model_types import model_type as lookup_model_type
from ..model_types import type_names
from ..spec import AnySpec, load_spec, normalize_model_type, path_issues, to_document
from .store import SpecStore, nb_home



@lru_cache(maxsize=None)
def builtin_specs(model_type: str) -> dict[str, AnySpec]:
    """name → spec of the shipped catalog for one type (loaded once, on first use)."""
    model_type = normalize_model_type(model_type)
    file = lookup_model_type(model_type).catalog
    if file is None:
        return {}
    try:
        text = resources.files("xinference_nb.registry").joinpath("builtin", file).read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    out: dict[str, AnySpec] = {}
    for doc in json.loads(text):
        doc = dict(doc, is_builtin=True)
        try:
            out[doc["model_name"]] = load_spec(model_type, doc)
        except SpecError as exc:  # a catalog bug must not break the registry
            warnings.warn(f"built-in {model_type} {doc.get('model_name')!r} skipped: {exc}", stacklevel=2)
    return out


def builtin_family(model_family: Optional[str]) -> Optional[AnySpec]:
    """The built-in LLM document named ``model_family`` (None when there is none): where a launched
    LLM without its own chat template or tool parser takes them from (chat.build_chat_format)."""
    return builtin_specs("LLM").get(model_family) if model_family else None


class Registry:
    """The registrations visible from this process under one home folder."""

    def __init__(self, home: Optional[Path] = None):
        self.store = SpecStore(home or nb_home())
        self._session: dict[str, dict[str, AnySpec]] = {t: {} for t in type_names()}
        self._lock = threading.RLock()
        self.store.clean_stale_tmp()   # temp files of writers that were killed before their rename

    # ------------------------------------------------------------------ reading
    def builtin(self, model_type: str) -> dict[str, AnySpec]:
        return builtin_specs(normalize_model_type(model_type))

    def custom(self, model_type: str) -> dict[str, AnySpec]:
        """name → spec of custom registrations: persisted ones (re-read from disk, so another
        process's registrations show up) overlaid by this session's."""
        model_type = normalize_model_type(model_type)
        out: dict[str, AnySpec] = {}
        for name, (file, doc) in self.store.read_all(model_type).items():
            try:
                out[name] = load_spec(model_type, doc)
            except SpecError as exc:
                warnings.warn(f"skipping invalid registration {file}: {exc}", stacklevel=2)
        with self._lock:
            out.update(self._session[model_type])
        return out

    def list(self, model_type: str, detailed: bool = False) -> list[dict[str, Any]]:
        """Xinference's list shape: [{"model_name", "is_builtin"}], whole documents when detailed."""
        model_type = normalize_model_type(model_type)
        rows = []
        for is_builtin, specs in ((True, self.builtin(model_type)), (False, self.custom(model_type))):
            for name, spec in specs.items():
                row = to_document(spec) if detailed else {}
                row.update(model_name=name, is_builtin=is_builtin)
                rows.append(row)
        rows.sort(key=lambda r: (r["model_name"].lower(), not r["is_builtin"]))
        return rows

    def get(self, model_type: str, model_name: str) -> AnySpec:
        model_type = normalize_model_type(model_type)
        with self._lock:
            if model_name in self._session[model_type]:
                return self._session[model_type][model_name]
        doc = self.store.read(model_type, model_name) if _safe_name(model_name) else None
        if doc is not None:
            return load_spec(model_type, doc)
        spec = self.builtin(model_type).get(model_name)
        if spec is not None:
            return spec
        raise ModelNotFound(self._not_found(model_type, model_name))

    def find(self, model_name: str, model_type: Optional[str] = None) -> tuple[str, AnySpec]:
        """(type, spec) for a name; with no type, every type is searched, LLM first."""
        types = [normalize_model_type(model_type)] if model_type else type_names()
        for t in types:
            try:
                return t, self.get(t, model_name)
            except ModelNotFound:
                continue
        if model_type:
            raise ModelNotFound(self._not_found(types[0], model_name))
        raise ModelNotFound(f"no model named {model_name!r} is registered (built-in or custom) for any type; "
                            "register it first with register_model(...) or check the name with "
                            "list_model_registrations(model_type)")

    def is_builtin(self, model_type: str, model_name: str) -> bool:
        return model_name in self.builtin(model_type)

    def _not_found(self, model_type: str, model_name: str) -> str:
        names = [r["model_name"] for r in self.list(model_type)]
        close = _close_matches(model_name, names)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        return (f"no {model_type} model named {model_name!r} is registered{hint} "
                f"(list them with list_model_registrations({model_type!r}))")

    # ------------------------------------------------------------------ writing
    def register(self, model_type: str, model: Any, persist: bool = False, overwrite: bool = False,
                 check_paths: bool = True) -> AnySpec:
        model_type = normalize_model_type(model_type)
        spec = load_spec(model_type, model)
        issues: list[FieldIssue] = []
        if spec.is_builtin:
            issues.append(FieldIssue("is_builtin", "a custom registration must have \"is_builtin\": false"))
        if model_type == "LLM" and spec.model_family in self.builtin("LLM"):
            issues.append(FieldIssue("model_family", f"{spec.model_family!r} is the name of a built-in model; a custom "
                                     "LLM's family needs its own name, e.g. \"my-" + spec.model_family + "\" "
                                     "(to launch the built-in family from your files, use "
                                     "launch_model(model_name=..., model_path=...) without registering)"))
        if check_paths:
            issues += path_issues(spec)
        if issues:
            raise SpecError(issues, model_type=model_type)
        name = spec.model_name
        if name in self.builtin(model_type):
            raise RegistryError(f"model_name: {name!r} is a built-in {model_type} model and cannot be replaced; "
                                "choose another name, e.g. \"my-" + name + "\"")
        doc = to_document(spec)
        # a session-only registration needs no writable store (read-only home): the lock is optional
        with self._lock, self.store.locked(optional=not persist) as lock_error:
            on_disk = self.store.exists(model_type, name)
            if (name in self._session[model_type] or on_disk) and not overwrite:
                raise RegistryError(f"model_name: {name!r} is already registered as a custom {model_type} model; "
                                    "pass overwrite=True to replace it, or unregister it first")
            # the store first: if it fails (RegistryError naming the path), nothing has changed
            if persist:
                self.store.write(model_type, name, doc)
                self._session[model_type].pop(name, None)
            else:
                if on_disk:
                    if lock_error is not None:
                        raise lock_error
                    self.store.delete(model_type, name)
                self._session[model_type][name] = spec
        return spec

    def unregister(self, model_type: str, model_name: str) -> None:
        model_type = normalize_model_type(model_type)
        if model_name in self.builtin(model_type):
            raise RegistryError(f"model_name: {model_name!r} is a built-in {model_type} model; only custom "
                                "registrations can be unregistered")
        with self._lock, self.store.locked(optional=True) as lock_error:
            # the store first: if it fails (RegistryError naming the path), nothing has changed
            on_disk = _safe_name(model_name) and self.store.exists(model_type, model_name)
            if on_disk:
                if lock_error is not None:
                    raise lock_error
                self.store.delete(model_type, model_name)
            in_session = self._session[model_type].pop(model_name, None) is not None
        if not (in_session or on_disk):
            raise ModelNotFound(self._not_found(model_type, model_name))


def _safe_name(name: str) -> bool:
    return isinstance(name, str) and bool(name) and "/" not in name and "\\" not in name and ".." not in name


def _close_matches(name: str, names: list[str]) -> list[str]:
    import difflib

    if not isinstance(name, str):
        return []
    return difflib.get_close_matches(name, names, n=3, cutoff=0.75)


_registries: dict[Path, Registry] = {}
_registries_lock = threading.Lock()


def get_registry() -> Registry:
    """The process-wide registry of the current XINFERENCE_NB_HOME."""
    home = nb_home().resolve()
    with _registries_lock:
        reg = _registries.get(home)
        if reg is None:
            reg = _registries[home] = Registry(home)
        return reg
