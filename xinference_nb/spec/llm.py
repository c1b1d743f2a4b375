"""LLM documents (Xinference version 2)."""
from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import Field, StrictBool, field_validator

from ..errors import FieldIssue
from .common import SpecModel, VirtualEnvSettings, _NameMixin, check_model_name, check_size

LLM_FORMATS = ("pytorch", "ggufv2", "gptq", "awq", "fp8", "bnb", "mlx")
LLM_ABILITIES = ("generate", "chat", "vision", "tools", "reasoning", "hybrid", "audio", "omni", "embed")


class LLMModelSpec(SpecModel):
    """One way to get the weights: format, size, quantization and where the files are."""

    model_format: Literal["pytorch", "ggufv2", "gptq", "awq", "fp8", "bnb", "mlx"]
    model_size_in_billions: Union[int, float, str]
    quantization: str = "none"
    model_id: Optional[str] = None
    model_hub: str = "huggingface"
    model_uri: Optional[str] = None
    model_revision: Optional[str] = None
    activated_size_in_billions: Optional[Union[int, float, str]] = None
    # ggufv2 in a folder or on a hub: the file name, "{quantization}" is replaced.
    model_file_name_template: Optional[str] = None
    model_file_name_split_template: Optional[str] = None
    quantization_parts: Optional[dict[str, list[str]]] = None
    # ggufv2 vision models: llama.cpp's projector (mmproj) files beside the model file; the launch
    # option multimodal_projector picks one (engines/llama_cpp_vision.py), else the first is used
    multimodal_projectors: Optional[list[str]] = None
    # Xinference 4.1 adds these to the documents it returns
    model_metadata: Optional[dict[str, Any]] = None
    draft_model_id: Optional[str] = None
    draft_quantizations: Optional[list[str]] = None
    draft_model_revision: Optional[str] = None

    _omit_when_unset = frozenset(
        {"model_file_name_template", "model_file_name_split_template", "quantization_parts", "model_metadata",
         "draft_model_id", "draft_quantizations", "draft_model_revision", "multimodal_projectors"}
    )

    @field_validator("model_size_in_billions", mode="before")
    @classmethod
    def _size(cls, value: Any) -> Any:
        return check_size(value)

    @field_validator("activated_size_in_billions", mode="before")
    @classmethod
    def _activated(cls, value: Any) -> Any:
        return None if value is None else check_size(value)

    @field_validator("quantization")
    @classmethod
    def _quantization(cls, value: str) -> str:
        if not value.strip():
            raise ValueError('must not be empty; use "none" for unquantized weights, or "4-bit" / "8-bit" / "Q4_K_M" …')
        return value

    @field_validator("model_file_name_template")
    @classmethod
    def _template(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not name_inside_folder(value):
            raise ValueError(f"{value!r} must be a file name inside the model folder, such as "
                             "'model-{quantization}.gguf' (no absolute path, no '..')")
        return value

    @field_validator("multimodal_projectors")
    @classmethod
    def _projectors(cls, value: Optional[list[str]]) -> Optional[list[str]]:
        for name in value or ():
            if not name.strip() or not name_inside_folder(name):
                raise ValueError(f"{name!r} must be the file name of a projector beside the model file, such as "
                                 "'mmproj-model-f16.gguf' (no absolute path, no '..')")
        return value


def name_inside_folder(name: str) -> bool:
    """A relative name that stays inside the folder it is joined to (no absolute path, no '..')."""
    return not name.startswith(("/", "\\")) and ".." not in name.replace("\\", "/").split("/")


class LLMSpec(_NameMixin):
    version: Literal[2] = 2
    context_length: Optional[int] = 2048
    model_name: str
    model_lang: list[str] = []
    model_ability: list[str] = []
    model_description: Optional[str] = None
    model_family: Optional[str] = None
    model_specs: list[LLMModelSpec]
    chat_template: Optional[str] = None
    stop_token_ids: Optional[list[int]] = None
    stop: Optional[list[str]] = None
    reasoning_start_tag: Optional[str] = None
    reasoning_end_tag: Optional[str] = None
    cache_config: Optional[dict[str, Any]] = None
    virtualenv: Optional[VirtualEnvSettings] = Field(default_factory=VirtualEnvSettings)
    is_builtin: StrictBool = False
    # seen in Xinference's catalogs
    tool_parser: Optional[str] = None
    architectures: Optional[list[str]] = None
    featured: Optional[StrictBool] = None
    updated_at: Optional[int] = None

    _omit_when_unset = frozenset({"tool_parser", "architectures", "featured", "updated_at"})

    @field_validator("context_length")
    @classmethod
    def _context(cls, value: Optional[int]) -> Optional[int]:
        if value is not None and value <= 0:
            raise ValueError(f"must be a positive number of tokens, got {value}")
        return value

    @field_validator("model_ability")
    @classmethod
    def _abilities(cls, value: list[str]) -> list[str]:
        unknown = [a for a in value if a not in LLM_ABILITIES]
        if unknown:
            raise ValueError(f"unknown abilit{'y' if len(unknown) == 1 else 'ies'} {unknown}; "
                             f"use some of {list(LLM_ABILITIES)}")
        return value

    @field_validator("model_specs")
    @classmethod
    def _specs(cls, value: list[LLMModelSpec]) -> list[LLMModelSpec]:
        if not value:
            raise ValueError("needs at least one entry (model_format, model_size_in_billions, quantization, "
                             "and model_uri or model_id)")
        return value

    @field_validator("model_family")
    @classmethod
    def _family(cls, value: Optional[str]) -> Optional[str]:
        if value is not None:
            check_model_name(value)
        return value

    @field_validator("stop_token_ids")
    @classmethod
    def _stop_ids(cls, value: Optional[list[int]]) -> Optional[list[int]]:
        if value and any(v < 0 for v in value):
            raise ValueError(f"token ids are non-negative integers, got {value}")
        return value

    def rules(self) -> list[FieldIssue]:
        """Rules that span fields; builtin documents are trusted."""
        if self.is_builtin:
            return []
        issues = []
        if not self.model_family:
            issues.append(FieldIssue("model_family", "is required for a custom LLM: name your model's family, "
                                     "e.g. \"my-qwen\" (it may not be a built-in model's name)"))
        if "chat" in self.model_ability and not (self.chat_template and self.chat_template.strip()):
            issues.append(FieldIssue("chat_template", "is required when model_ability has \"chat\": copy the Jinja "
                                     "template from the model's chat_template.jinja or the \"chat_template\" key "
                                     "of its tokenizer_config.json (xinference_nb.parse_model fills it for you)"))
        if bool(self.reasoning_start_tag) != bool(self.reasoning_end_tag):
            missing = "reasoning_end_tag" if self.reasoning_start_tag else "reasoning_start_tag"
            issues.append(FieldIssue(missing, "the reasoning tags go together: set both, e.g. \"<think>\" and "
                                     "\"</think>\", or neither"))
        if self.tool_parser is not None:
            # the names live with the parsers (chat/tool_parsers.py imports only the standard library)
            from ..chat.tool_parsers import TOOL_PARSER_NAMES, unknown_tool_parser_message

            if self.tool_parser not in TOOL_PARSER_NAMES:
                issues.append(FieldIssue("tool_parser", unknown_tool_parser_message(self.tool_parser)))
        issues += self._projector_issues()
        for i, spec in enumerate(self.model_specs):
            if not spec.model_uri and not spec.model_id:
                issues.append(FieldIssue(f"model_specs[{i}].model_uri", "is missing and so is model_id: give "
                                         "model_uri (a local path or file:// URI) or model_id (a hub repository)"))
        return issues

    def _projector_issues(self) -> list[FieldIssue]:
        """multimodal_projectors belong to a ggufv2 entry of a model with the vision ability."""
        issues = []
        for i, spec in enumerate(self.model_specs):
            if not spec.multimodal_projectors:
                continue
            at = f"model_specs[{i}].multimodal_projectors"
            if spec.model_format != "ggufv2":
                issues.append(FieldIssue(at, f"names llama.cpp projector (mmproj) files, which only a ggufv2 entry "
                                             f"loads; drop it from this {spec.model_format} entry"))
            elif "vision" not in self.model_ability:
                issues.append(FieldIssue(at, "a projector lets the model see images: add \"vision\" to model_ability "
                                             "(or drop multimodal_projectors to chat in text only)"))
        return issues
