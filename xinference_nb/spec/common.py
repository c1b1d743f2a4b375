"""Pieces shared by every model type's schema: the base model, the name rule, virtualenv and
cache settings, model_uri handling, and the conversion of pydantic errors into field-named issues."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, ClassVar, Literal, Optional, Union
from urllib.parse import unquote, urlparse

from pydantic import BaseModel, ConfigDict, StrictBool, ValidationError, field_validator, model_serializer

from ..errors import FieldIssue, SpecError, short_value

# Xinference 4.1 refuses only "", ".", "..", whitespace and + \ / ? % # & = ; its docs say
# letters, digits, "_" and "-". We take the union that keeps names safe as file names: a letter or
# digit first, then letters, digits, "_", "-" and "." (its own examples use dots), never "..".
# matched with fullmatch: "$" would also accept a trailing newline ("abc\n")
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
MAX_NAME_LENGTH = 200


def check_model_name(name: str, field: str = "model_name") -> str:
    """Return ``name`` if it is a valid model name, else raise ValueError saying how to fix it."""
    if not isinstance(name, str) or not name:
        raise ValueError("must be a non-empty string such as 'my-model'")
    if ".." in name:
        raise ValueError(f"{name!r} contains '..'; the name becomes a file name, use letters, digits, '_', '-' or a single '.'")
    if len(name) > MAX_NAME_LENGTH:
        raise ValueError(f"is {len(name)} characters long; use at most {MAX_NAME_LENGTH}")
    if not NAME_PATTERN.fullmatch(name):
        bad = sorted({c for c in name if not (c.isascii() and (c.isalnum() or c in "_.-"))})
        if not (name[0].isascii() and name[0].isalnum()):
            why = f"must start with a letter or digit, not {name[0]!r}"
        else:
            why = "may not contain " + ", ".join(repr(c) for c in bad)
        raise ValueError(f"{name!r} {why}; use letters, digits, '_', '-' and '.' (e.g. 'my-model-1.5')")
    return name


class SpecModel(BaseModel):
    """Base of every schema: unknown keys are errors, and fields whose names start with ``model_``
    are allowed (pydantic reserves that prefix by default)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), validate_assignment=False)

    # Fields that are not in Xinference's published templates for the type but that its catalogs or
    # later versions use: accepted, and written back only when the document had them.
    _omit_when_unset: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _drop_unset_extras(self, handler):
        data = handler(self)
        if self._omit_when_unset and isinstance(data, dict):
            for key in self._omit_when_unset:
                if key not in self.model_fields_set and data.get(key) is None:
                    data.pop(key, None)
        return data


class VirtualEnvSettings(SpecModel):
    """Per-model virtual environment: packages to install and how pip should reach them."""

    packages: list[str] = []
    inherit_pip_config: StrictBool = True
    index_url: Optional[str] = None
    extra_index_url: Optional[Union[str, list[str]]] = None
    find_links: Optional[Union[str, list[str]]] = None
    trusted_host: Optional[Union[str, list[str]]] = None
    no_build_isolation: Optional[StrictBool] = None
    index_strategy: Optional[str] = None

    _omit_when_unset = frozenset({"index_strategy"})





# --------------------------------------------------------------------------------------------
# model_uri handling
# --------------------------------------------------------------------------------------------

def uri_to_path(uri: str) -> Path:
    """Turn a ``file://`` URI or a plain absolute path into a Path (no existence check).

    Raises ValueError for relative paths and for remote schemes, which we cannot read.
    """
    if not isinstance(uri, str) or not uri.strip():
        raise ValueError("must be a non-empty path or file:// URI")
    uri = uri.strip()
    if uri.startswith("file://"):
        parsed = urlparse(uri)
        if parsed.netloc not in ("", "localhost"):
            raise ValueError(f"{uri!r} names host {parsed.netloc!r}; write file:///absolute/path")
        path = unquote(parsed.path)
    elif re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", uri):
        scheme = uri.split("://", 1)[0]
        raise ValueError(f"{uri!r} uses the {scheme}:// scheme; only local paths and file:// URIs are supported "
                         "(use model_id and model_hub for hub repositories)")
    else:
        path = os.path.expanduser(uri)
    if not os.path.isabs(path):
        raise ValueError(f"{uri!r} is a relative path; write an absolute path or a file:/// URI")
    return Path(path)


def resolve_hf_cache_folder(path: Path) -> Path:
    """A Hugging Face cache folder (``…/models--Org--Name``) resolves to its snapshot: the revision
    that ``refs/main`` names, else the newest snapshot. Any other path is returned unchanged."""
    if not path.name.startswith("models--"):
        return path
    from ..hub import snapshot_of   # the one reader of the cache's refs and snapshots

    return snapshot_of(path) or path


def local_path_of(uri: str) -> Path:
    """The directory or file a model_uri points at, with HF cache folders resolved."""
    return resolve_hf_cache_folder(uri_to_path(uri))


# --------------------------------------------------------------------------------------------
# model_size_in_billions: int, float, or Xinference's "0_5" string form (kept as written)
# --------------------------------------------------------------------------------------------

SIZE_STRING = re.compile(r"^\d+(_\d+)?$")
ZERO_SIZE = re.compile(r"^0+(_0+)?$")


def check_size(value: Any) -> Union[int, float, str]:
    if isinstance(value, bool):
        raise ValueError("must be a number of billions such as 7, 0.5 or \"0_5\", not a boolean")
    if isinstance(value, (int, float)):
        if value <= 0:
            raise ValueError(f"must be positive, got {value}")
        return value
    if isinstance(value, str):
        if SIZE_STRING.fullmatch(value) and not ZERO_SIZE.fullmatch(value):   # "7\n" is not a size
            return value
        raise ValueError(f"{value!r} is not a size; write 7, 0.5 or Xinference's string form \"0_5\"")
    raise ValueError("must be a number of billions such as 7, 0.5 or \"0_5\"")


def size_to_float(value: Union[int, float, str, None]) -> Optional[float]:
    """7 → 7.0, "0_5" → 0.5, "1_5" → 1.5, None → None."""
    if value is None:
        return None
    if isinstance(value, str):
        return float(value.replace("_", "."))
    return float(value)


def float_to_size(billions: float) -> Union[int, str]:
    """Xinference's written form of a size: whole numbers as int, others as "0_5" (every digit kept:
    0.00017 → "0_00017"); the one rule is :func:`xinference_nb.metadata.sizes.size_form`."""
    from ..metadata.sizes import size_form

    return size_form(billions)


def same_size(a: Any, b: Any) -> bool:
    fa, fb = size_to_float(a), size_to_float(b)
    return fa is not None and fb is not None and abs(fa - fb) < 1e-9


# --------------------------------------------------------------------------------------------
# Errors: pydantic → field-named issues with a fix
# --------------------------------------------------------------------------------------------

def format_loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


_TYPE_HINTS = {
    "int_type": "expected an integer",
    "int_parsing": "expected an integer",
    "int_from_float": "expected a whole number",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "string_type": "expected a string",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "list_type": "expected a list",
    "dict_type": "expected an object",
    "model_type": "expected an object",
    "model_attributes_type": "expected an object",
}


def issues_from_validation_error(err: ValidationError, model_cls: type[BaseModel]) -> list[FieldIssue]:
    issues = []
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        # pydantic appends the union member tried ("int", "str", …) to the location; drop those.
        loc = tuple(p for p in loc if p not in {"int", "float", "str", "list[str]", "dict[str,any]", "bool"})
        path = format_loc(loc)
        kind = e["type"]
        given = e.get("input")
        if kind == "missing":
            msg = "is required but missing; add it to the document"
        elif kind == "extra_forbidden":
            parent = format_loc(loc[:-1])
            allowed = _allowed_keys(model_cls, loc[:-1])
            msg = "unknown field; remove it or fix its spelling"
            if allowed:
                msg += f" (fields{' of ' + parent if parent else ''}: {', '.join(allowed)})"
        elif kind in ("value_error", "assertion_error"):
            msg = str(e["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
        elif kind == "literal_error":
            msg = f"{given!r} is not allowed; {e['msg'].lower()}"
        elif kind in _TYPE_HINTS:
            msg = f"{_TYPE_HINTS[kind]}, got {type(given).__name__} {short_value(given, as_json=True)}"
        else:
            msg = e["msg"]
        issues.append(FieldIssue(path, msg))
    # one issue per path and message, in order
    seen, unique = set(), []
    for issue in issues:
        if (issue.path, issue.message) not in seen:
            seen.add((issue.path, issue.message))
            unique.append(issue)
    return unique


def _allowed_keys(model_cls: type[BaseModel], loc: tuple) -> list[str]:
    """Field names of the sub-model at ``loc`` (best effort, for the error message)."""
    cls: Any = model_cls
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(cls, "model_fields", {}).get(part)
        if field is None:
            return []
        cls = _inner_model(field.annotation)
        if cls is None:
            return []
    return sorted(getattr(cls, "model_fields", {}))


def _inner_model(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


class _NameMixin(SpecModel):
    model_name: str

    @field_validator("model_name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        return check_model_name(value)


class SingleUriDocument(_NameMixin):
    """Leading fields shared by the types whose files sit at one top-level model_uri / model_id
    (image, audio, flexible), in the order Xinference's templates write them."""

    model_name: str
    model_id: Optional[str] = None
    model_revision: Optional[str] = None
    model_hub: str = "huggingface"
    cache_config: Optional[dict[str, Any]] = None
    version: Literal[2] = 2
    ABILITIES: ClassVar[tuple[str, ...]] = ()   # the model_ability values a type accepts (when it has them)

    @field_validator("model_ability", check_fields=False)
    @classmethod
    def _abilities(cls, value: Optional[list[str]]) -> Optional[list[str]]:
        unknown = [a for a in value or [] if a not in cls.ABILITIES]
        if unknown:
            raise ValueError(f"unknown abilities {unknown}; use some of {list(cls.ABILITIES)}")
        return value

    def location_issues(self, folder_words: str) -> list[FieldIssue]:
        if self.is_builtin or self.model_uri or self.model_id:
            return []
        return [FieldIssue("model_uri", f"is missing and so is model_id: give model_uri ({folder_words}) or "
                           "model_id (a hub repository)")]


def raise_spec_error(issues: list[FieldIssue], model_type: str) -> None:
    if issues:
        raise SpecError(issues, model_type=model_type)
