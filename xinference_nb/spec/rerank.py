"""Rerank documents (Xinference version 2)."""
from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import Field, StrictBool, field_validator

from ..errors import FieldIssue
from .common import VirtualEnvSettings, _NameMixin
from .embedding import TextModelSpec, _positive, non_empty_specs, spec_location_issues

RERANK_TYPES = ("normal", "LLM-based", "LLM-based layerwise", "unknown")


class RerankSpec(_NameMixin):
    version: Literal[2] = 2
    model_name: str
    model_specs: list[TextModelSpec]
    language: list[str] = []
    type: str = "unknown"
    max_tokens: Optional[int] = None
    virtualenv: Optional[VirtualEnvSettings] = Field(default_factory=VirtualEnvSettings)
    is_builtin: StrictBool = False
    cache_config: Optional[dict[str, Any]] = None
    model_ability: Optional[list[str]] = None
    model_description: Optional[str] = None
    featured: Optional[StrictBool] = None
    updated_at: Optional[int] = None

    _omit_when_unset = frozenset({"cache_config", "model_ability", "model_description", "featured", "updated_at"})

    @field_validator("type")
    @classmethod
    def _type(cls, value: str) -> str:
        if value not in RERANK_TYPES:
            raise ValueError(f"{value!r} is not a rerank type; use one of {list(RERANK_TYPES)}")
        return value

    @field_validator("max_tokens")
    @classmethod
    def _max(cls, value: Optional[int]) -> Optional[int]:
        return _positive(value, "tokens")

    @field_validator("model_specs")
    @classmethod
    def _specs(cls, value: list[TextModelSpec]) -> list[TextModelSpec]:
        return non_empty_specs(value)

    def rules(self) -> list[FieldIssue]:
        return spec_location_issues(self.model_specs, self.is_builtin)
