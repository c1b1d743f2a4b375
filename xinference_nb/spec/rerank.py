"""Rerank documents (Xinference version 2)."""
from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import Field, StrictBool, field_validator

from .common import VirtualEnvSettings
from .embedding import TextDocument, TextModelSpec

RERANK_TYPES = ("normal", "LLM-based", "LLM-based layerwise", "unknown")


class RerankSpec(TextDocument):
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
