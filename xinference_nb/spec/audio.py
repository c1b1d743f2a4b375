"""Audio documents (Xinference version 2)."""
from __future__ import annotations

from typing import Any, Optional

from pydantic import Field, StrictBool, field_validator

from ..errors import FieldIssue
from .common import SingleUriDocument, VirtualEnvSettings

AUDIO_ABILITIES = (
    "text2audio", "audio2text", "text2audio_voice_cloning", "text2audio_zero_shot", "text2audio_voice_design",
    "text2audio_emotion_control", "text2music", "speaker_embedding", "audio2audio",
)


class AudioSpec(SingleUriDocument):
    model_family: str
    multilingual: StrictBool = False
    language: Optional[list[str]] = None
    model_ability: Optional[list[str]] = None
    default_model_config: Optional[dict[str, Any]] = None
    default_transcription_config: Optional[dict[str, Any]] = None
    engine: Optional[str] = None
    virtualenv: Optional[VirtualEnvSettings] = Field(default_factory=VirtualEnvSettings)
    model_uri: Optional[str] = None
    is_builtin: StrictBool = False
    model_description: Optional[str] = None
    featured: Optional[StrictBool] = None
    updated_at: Optional[int] = None
    # Xinference 4.1 adds these to the documents it returns
    model_lang: Optional[list[str]] = None
    model_format: Optional[str] = None
    quantization: Optional[str] = None
    cache_name: Optional[str] = None

    _omit_when_unset = frozenset({"model_description", "featured", "updated_at", "model_lang", "model_format",
                                  "quantization", "cache_name"})
    ABILITIES = AUDIO_ABILITIES

    @field_validator("model_family")
    @classmethod
    def _family(cls, value: str) -> str:
        if not value or not value.strip():
            raise ValueError("must name the audio family, e.g. \"whisper\", \"ChatTTS\" or \"MeloTTS\"")
        return value

    def rules(self) -> list[FieldIssue]:
        return self.location_issues("the model's folder")
