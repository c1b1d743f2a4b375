"""One exception tree for the whole package.

Every error a user can cause says what was wrong, where (a field path or a file) and what to do.
Catch ``XinfError`` to catch them all; the subclasses say which layer refused.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable


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
