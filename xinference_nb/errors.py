"""One exception tree for the whole package.

Every error a user can cause says what was wrong, where (a field path or a file) and what to do.
Catch ``XinfError`` to catch them all; the subclasses say which layer refused. How a message
quotes a value (``kind_of``, ``shorten``, ``short_value``) is here too, for every layer.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable


class XinfError(Exception):
    """Base of every error raised by xinference_nb on purpose."""


@dataclass(frozen=True)
class FieldIssue:
    """One problem with one field of a document: ``path`` is a JSON path such as
    ``model_specs[0].model_uri`` ("" for the document itself)."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class SpecError(XinfError, ValueError):
    """A model document is invalid. ``issues`` lists every bad field, not only the first."""

    def __init__(self, issues: Iterable[FieldIssue] | str, *, model_type: str | None = None):
        if isinstance(issues, str):
            issues = [FieldIssue("", issues)]
        self.issues: list[FieldIssue] = list(issues)
        self.model_type = model_type
        what = f"{model_type} model document" if model_type else "model document"
        lines = [f"Invalid {what} ({len(self.issues)} problem{'s' if len(self.issues) != 1 else ''}):"]
        lines += [f"  - {issue}" for issue in self.issues]
        super().__init__("\n".join(lines))

    @property
    def fields(self) -> list[str]:
        """The JSON paths of the bad fields, in order."""
        return [issue.path for issue in self.issues]


class RegistryError(XinfError):
    """A registration clashes with an existing one, names a built-in, or the store failed."""


class ModelNotFound(XinfError, LookupError):
    """No registration or running model has that name or uid."""


class ParseError(XinfError):
    """A model's files could not be read into a spec; the message names the file."""


class LaunchError(XinfError):
    """A model could not be launched; anything it loaded has been freed."""


class EngineUnavailable(LaunchError):
    """The backend an engine needs is not installed. ``install`` is the pip command that fixes it."""

    def __init__(self, message: str, *, package: str, extra: str | None = None):
        self.package = package
        self.extra = extra
        self.install = f'pip install "xinference-nb[{extra}]"' if extra else f"pip install {package}"
        super().__init__(f"{message} Install it with: {self.install}")


class InferenceError(XinfError, ValueError):
    """A call on a launched model had bad arguments (unknown generate_config key, wrong type...)."""


class CacheError(XinfError):
    """A cached model could not be listed or removed: no cached model has that name, a running model
    uses its files, or deleting would reach outside the Hugging Face cache or a registration's own
    model_uri. Nothing was deleted."""


class LaunchOptionError(SpecError, LaunchError):
    """An argument of launch_model has the wrong type, or no part of the chosen engine takes it.
    It is both a SpecError (``issues`` names each option) and a LaunchError (nothing was launched)."""

    def __init__(self, issues: Iterable[FieldIssue] | str, *, engine: str | None = None):
        if isinstance(issues, str):
            issues = [FieldIssue("", issues)]
        self.issues = list(issues)
        self.model_type = None
        self.engine = engine
        where = f" for the {engine} engine" if engine else ""
        n = len(self.issues)
        lines = [f"Invalid launch_model argument{'s' if n != 1 else ''}{where} ({n} problem{'s' if n != 1 else ''}):"]
        lines += [f"  - {issue}" for issue in self.issues]
        Exception.__init__(self, "\n".join(lines))


# ------------------------------------------------------------------------------------------------
# Over the wire: the one table the REST server and RemoteClient share
# ------------------------------------------------------------------------------------------------

#: The classes an error travels as over REST, most specific first, with the HTTP status it is
#: answered with. The server names the first class here an exception is an instance of in the
#: ``X-Xinf-Error`` header (a LaunchOptionError travels as a SpecError with its issues, a
#: LaunchCancelled as a LaunchError); ``RemoteClient`` raises the class the header names, so
#: ``except SpecError`` catches the same errors in and out of the kernel. Any other error travels as
#: ``XinfError`` (``WIRE_FALLBACK``), which RemoteClient raises as its ``RemoteError``.
WIRE_ERRORS: tuple[tuple[type[XinfError], int], ...] = (
    (SpecError, 400), (RegistryError, 400), (ModelNotFound, 400), (ParseError, 400),
    (EngineUnavailable, 400), (LaunchError, 400), (InferenceError, 400), (CacheError, 400),
)
WIRE_FALLBACK = "XinfError"


def wire_error(exc: BaseException | type) -> tuple[str, int]:
    """``(X-Xinf-Error name, HTTP status)`` of an error of ours (an instance or a class)."""
    cls = exc if isinstance(exc, type) else type(exc)
    for known, status in WIRE_ERRORS:
        if issubclass(cls, known):
            return known.__name__, status
    return WIRE_FALLBACK, 400


def error_class(name: str | None) -> type[XinfError] | None:
    """The class an ``X-Xinf-Error`` name stands for; None for ``XinfError`` and names of no class here."""
    for known, _status in WIRE_ERRORS:
        if known.__name__ == name:
            return known
    return None


# ----------------------------------------------------------------------------------------------
# quoting a value in a message (every module's messages and reprs use these)
# ----------------------------------------------------------------------------------------------

def kind_of(value: Any) -> str:
    """The type a message names for a value: "null" for None (as JSON writes it), else its class name."""
    return "null" if value is None else type(value).__name__


def shorten(text: str, limit: int = 40, ellipsis: str = "...") -> str:
    """``text`` when it has at most ``limit`` characters, else its start and ``ellipsis``, ``limit`` in all."""
    return text if len(text) <= limit else text[:max(0, limit - len(ellipsis))] + ellipsis


def short_value(value: Any, limit: int = 40, *, as_json: bool = False) -> str:
    """How an error message quotes a bad value, at most ``limit`` characters: its repr (a string with
    its quotes), or with ``as_json`` (a document's values) JSON, a string still in quotes."""
    text = repr(value) if isinstance(value, str) or not as_json else json.dumps(value, default=str)
    return shorten(text, limit)
