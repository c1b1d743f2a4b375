"""Audio documents (Xinference version 2)."""
from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import Field, field_validator

from ..errors import FieldIssue
from .common import VirtualEnvSettings, _NameMixin

AUDIO_ABILITIES = (
    "text2audio", "audio2text", "text2audio_voice_cloning", "text2audio_zero_shot", "text2audio_voice_design",
    "text2audio_emotion_control", "text2music", "speaker_embedding", "audio2audio",
)


class AudioSpec(_NameMixin):
    model_name: str
    model_id: Optional[str] = None
    model_revision: Optional[str] = None
    model_hub: str = "huggingface"
    cache_config: Optional[dict[str, Any]] = None
    version: Literal[2] = 2
    model_family: str
    multilingual: bool = False
    language: Optional[list[str]] = None
    model_ability: Optional[list[str]] = None
    default_model_config: Optional[dict[str, Any]] = None
    default_transcription_config: Optional[dict[str, Any]] = None
    engine: Optional[str] = None
    virtualenv: Optional[VirtualEnvSettings] = Field(default_factory=VirtualEnvSettings)
    model_uri: Optional[str] = None
    is_builtin: bool = False
    model_description: Optional[str] = None
    featured: Optional[bool] = None
    updated_at: Optional[int] = None

    _omit_when_unset = frozenset({"model_description", "featured", "updated_at"})

    @field_validator("model_family")
    @classmethod
    def _family(cls, value: str) -> str:
        if not value or not value.strip():
            raise ValueError("must name the audio family, e.g. \"whisper\", \"ChatTTS\" or \"MeloTTS\"")
        return value

    @field_validator("model_ability")
    @classmethod
    def _abilities(cls, value: Optional[list[str]]) -> Optional[list[str]]:
        unknown = [a for a in value or [] if a not in AUDIO_ABILITIES]
        if unknown:
            raise ValueError(f"unknown abilities {unknown}; use some of {list(AUDIO_ABILITIES)}")
        return value

    def rules(self) -> list[FieldIssue]:
        if self.is_builtin or self.model_uri or self.model_id:
            return []
        return [FieldIssue("model_uri", "is missing and so is model_id: give model_uri (the model's folder) or "
                           "model_id (a hub repository)")]
