"""Flexible documents (Xinference version 2): an arbitrary model behind a launcher callable."""
from __future__ import annotations

import json
import re
from typing import Any, Optional, Union

from pydantic import Field, StrictBool, field_validator

from ..errors import FieldIssue
from .common import SingleUriDocument, VirtualEnvSettings

DOTTED_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")


class FlexibleSpec(SingleUriDocument):
    model_description: Optional[str] = None
    model_uri: Optional[str] = None
    launcher: str
    # Xinference writes a JSON string; we also take an object, and write back the form given.
    launcher_args: Union[str, dict[str, Any]] = "{}"
    virtualenv: Optional[VirtualEnvSettings] = Field(default_factory=VirtualEnvSettings)
    is_builtin: StrictBool = False
    device: Optional[str] = None

    _omit_when_unset = frozenset({"device"})

    @field_validator("launcher")
    @classmethod
    def _launcher(cls, value: str) -> str:
        if not DOTTED_PATH.fullmatch(value):
            raise ValueError(f"{value!r} is not a dotted path; write module.function, e.g. "
                             "\"xinference_nb.engines.flexible.transformers_pipeline\"")
        return value

    @field_validator("launcher_args")
    @classmethod
    def _args(cls, value: Union[str, dict]) -> Union[str, dict]:
        if isinstance(value, str):
            try:
                parsed = json.loads(value or "{}")
            except json.JSONDecodeError as exc:
                raise ValueError(f"is not valid JSON ({exc.msg} at position {exc.pos}); write a JSON object such as "
                                 "'{\"task\": \"text-classification\"}'") from None
            if not isinstance(parsed, dict):
                raise ValueError("must be a JSON object such as '{\"task\": \"text-classification\"}'")
        return value

    @field_validator("device")
    @classmethod
    def _device(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not re.match(r"^(cpu|cuda(:\d+)?|mps|auto)$", value):
            raise ValueError(f"{value!r} is not a device; use \"cpu\", \"cuda\", \"cuda:1\", \"mps\" or \"auto\"")
        return value

    @property
    def launcher_kwargs(self) -> dict[str, Any]:
        """launcher_args as a dict, whichever form the document used."""
        if isinstance(self.launcher_args, dict):
            return dict(self.launcher_args)
        return json.loads(self.launcher_args or "{}")

    def rules(self) -> list[FieldIssue]:
        return []
