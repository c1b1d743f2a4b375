"""Embedding documents (Xinference version 2)."""
from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import Field, StrictBool, field_validator

from ..errors import FieldIssue
from .common import SpecModel, VirtualEnvSettings, _NameMixin


class TextModelSpec(SpecModel):
    """Where an embedding or rerank model's files are."""

    model_format: Literal["pytorch", "ggufv2", "onnx", "openvino"] = "pytorch"
    model_hub: str = "huggingface"
    model_id: Optional[str] = None
    model_uri: Optional[str] = None
    model_revision: Optional[str] = None
    quantization: str = "none"
    model_file_name_template: Optional[str] = None

    _omit_when_unset = frozenset({"model_file_name_template"})


def _positive(value: Optional[int], what: str) -> Optional[int]:
    if value is not None and value <= 0:
        raise ValueError(f"must be a positive number of {what}, got {value}")
    return value


def non_empty_specs(value: list[TextModelSpec]) -> list[TextModelSpec]:
    if not value:
        raise ValueError("needs at least one entry (model_format and model_uri or model_id)")
    return value


def spec_location_issues(specs: list[TextModelSpec], is_builtin: bool) -> list[FieldIssue]:
    if is_builtin:
        return []
    return [
        FieldIssue(f"model_specs[{i}].model_uri", "is missing and so is model_id: give model_uri (a local path or "
                   "file:// URI) or model_id (a hub repository)")
        for i, s in enumerate(specs) if not s.model_uri and not s.model_id
    ]


class TextDocument(_NameMixin):
    """What embedding and rerank documents share: max_tokens > 0, at least one model_specs entry, each
    with a model_uri or a model_id (the fields themselves are declared by each type, in its order)."""

    @field_validator("max_tokens", check_fields=False)
    @classmethod
    def _max(cls, value: Optional[int]) -> Optional[int]:
        return _positive(value, "tokens")

    @field_validator("model_specs", check_fields=False)
    @classmethod
    def _specs(cls, value: list[TextModelSpec]) -> list[TextModelSpec]:
        return non_empty_specs(value)

    def rules(self) -> list[FieldIssue]:
        return spec_location_issues(self.model_specs, self.is_builtin)


class EmbeddingSpec(TextDocument):
    version: Literal[2] = 2
    model_name: str
    dimensions: int
    max_tokens: int
    language: list[str] = []
    model_specs: list[TextModelSpec]
    cache_config: Optional[dict[str, Any]] = None
    virtualenv: Optional[VirtualEnvSettings] = Field(default_factory=VirtualEnvSettings)
    is_builtin: StrictBool = False
    model_ability: Optional[list[str]] = None
    model_description: Optional[str] = None
    featured: Optional[StrictBool] = None
    updated_at: Optional[int] = None

    _omit_when_unset = frozenset({"model_ability", "model_description", "featured", "updated_at"})

    @field_validator("dimensions")
    @classmethod
    def _dims(cls, value: int) -> int:
        return _positive(value, "vector components")
