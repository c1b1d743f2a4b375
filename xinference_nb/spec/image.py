"""Image documents (Xinference version 2)."""
from __future__ import annotations

from typing import Any, Optional

from pydantic import Field, StrictBool, field_validator

from ..errors import FieldIssue
from .common import SingleUriDocument, VirtualEnvSettings, check_model_name

IMAGE_ABILITIES = ("text2image", "image2image", "inpainting", "ocr", "image_edit", "docanalyze")


class ImageSpec(SingleUriDocument):
    model_family: str
    model_ability: Optional[list[str]] = None
    controlnet: Optional[list[dict[str, Any]]] = Field(default_factory=list)
    default_model_config: Optional[dict[str, Any]] = Field(default_factory=dict)
    default_generate_config: Optional[dict[str, Any]] = Field(default_factory=dict)
    gguf_model_id: Optional[str] = None
    gguf_quantizations: Optional[list[str]] = None
    gguf_model_file_name_template: Optional[str] = None
    lightning_model_id: Optional[str] = None
    lightning_versions: Optional[list[str]] = None
    lightning_model_file_name_template: Optional[str] = None
    virtualenv: Optional[VirtualEnvSettings] = Field(default_factory=VirtualEnvSettings)
    model_uri: Optional[str] = None
    is_builtin: StrictBool = False
    model_description: Optional[str] = None
    featured: Optional[StrictBool] = None
    updated_at: Optional[int] = None

    _omit_when_unset = frozenset({"model_description", "featured", "updated_at"})
    ABILITIES = IMAGE_ABILITIES

    @field_validator("model_family")
    @classmethod
    def _family(cls, value: str) -> str:
        return check_model_name(value)

    def rules(self) -> list[FieldIssue]:
        return self.location_issues("the pipeline's folder")
