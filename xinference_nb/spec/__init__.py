"""Version-2 model documents, validated with pydantic v2, byte-compatible with Xinference's.

    spec = load_spec("LLM", json_text_or_dict)      # SpecError lists every bad field
    spec.model_dump_json()                           # the same document back

``load_spec`` checks the structure and the cross-field rules; ``path_issues`` checks that local
model_uri paths exist and have the right kind (a ggufv2 uri is a file, a pytorch uri a folder),
which the registry does before it registers.
"""
from __future__ import annotations

import json
from typing import Any, Union

from pydantic import BaseModel, ValidationError

from ..errors import FieldIssue, SpecError
from ..model_types import MODEL_TYPE_TABLE
from ..model_types import model_type as lookup_model_type
from .audio import AudioSpec
from .common import (
    check_model_name,
    float_to_size,
    issues_from_validation_error,
    local_path_of,
    resolve_hf_cache_folder,
    same_size,
    size_to_float,
    uri_to_path,
)
from .embedding import EmbeddingSpec, TextModelSpec
from .flexible import FlexibleSpec
from .image import ImageSpec
from .llm import LLM_ABILITIES, LLM_FORMATS, LLMModelSpec, LLMSpec
from .rerank import RerankSpec

# type name → document class, from the one model-type table (xinference_nb.model_types)
MODEL_TYPES: dict[str, type[BaseModel]] = {t.name: t.spec_class() for t in MODEL_TYPE_TABLE}

AnySpec = Union[LLMSpec, EmbeddingSpec, RerankSpec, ImageSpec, AudioSpec, FlexibleSpec]

__all__ = [
    "MODEL_TYPES", "AnySpec", "LLMSpec", "LLMModelSpec", "EmbeddingSpec", "RerankSpec", "TextModelSpec",
    "ImageSpec", "AudioSpec", "FlexibleSpec", "LLM_FORMATS", "LLM_ABILITIES", "normalize_model_type",
    "load_spec", "path_issues", "model_type_of", "to_document", "check_model_name", "size_to_float",
    "float_to_size", "same_size", "uri_to_path", "local_path_of", "resolve_hf_cache_folder",
]


def normalize_model_type(model_type: str) -> str:
    """"llm" → "LLM", "Embedding" → "embedding"; anything else is a SpecError listing the types."""
    return lookup_model_type(model_type).name


def model_type_of(spec: BaseModel) -> str:
    for name, cls in MODEL_TYPES.items():
        if isinstance(spec, cls):
            return name
    raise TypeError(f"{type(spec).__name__} is not a model spec")


def _as_dict(model: Any, model_type: str) -> dict:
    if isinstance(model, (bytes, bytearray)):
        model = model.decode("utf-8", errors="replace")
    if isinstance(model, str):
        if not model.strip():
            raise SpecError([FieldIssue("", "the document is empty; pass a JSON object such as the templates in "
                                        "Xinference's custom-model docs")], model_type=model_type)
        try:
            model = json.loads(model)
        except json.JSONDecodeError as exc:
            raise SpecError([FieldIssue("", f"is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}; "
                                        "pass a JSON object (or a dict)")], model_type=model_type) from None
    if not isinstance(model, dict):
        raise SpecError([FieldIssue("", f"must be a JSON object, got {type(model).__name__}")], model_type=model_type)
    if not model:
        raise SpecError([FieldIssue("", "the document is an empty object; it needs at least model_name and "
                                    "model_specs (or model_uri)")], model_type=model_type)
    return model


def load_spec(model_type: str, model: Any) -> AnySpec:
    """Validate a document (JSON text, dict or spec object) of ``model_type`` into its spec object."""
    model_type = normalize_model_type(model_type)
    cls = MODEL_TYPES[model_type]
    if isinstance(model, BaseModel):
        if not isinstance(model, cls):
            raise SpecError([FieldIssue("model_type", f"got a {model_type_of(model)} spec where a {model_type} "
                                        "spec was expected")], model_type=model_type)
        model = model.model_dump(mode="json")
    data = _as_dict(model, model_type)
    version = data.get("version", 2)
    if version != 2:
        raise SpecError([FieldIssue("version", f"{version!r} is not supported; documents are version 2 "
                                    "(Xinference ≥ 1.0): set \"version\": 2 and use model_specs")],
                        model_type=model_type)
    try:
        spec = cls.model_validate(data)
    except ValidationError as err:
        raise SpecError(issues_from_validation_error(err, cls), model_type=model_type) from None
    issues = spec.rules() + uri_form_issues(spec)
    if issues:
        raise SpecError(issues, model_type=model_type)
    return spec


def to_document(spec: BaseModel) -> dict:
    """The JSON-ready document of a spec (what Xinference's get_model_registration returns)."""
    return spec.model_dump(mode="json")


def _uris(spec: BaseModel) -> list[tuple[str, str, str]]:
    """(field path, uri, expected kind: "file" | "dir" | "any") for each local uri in the spec."""
    out = []
    if lookup_model_type(model_type_of(spec)).has_model_specs:
        for i, s in enumerate(spec.model_specs):
            if s.model_uri:
                if s.model_format == "ggufv2":
                    kind = "any" if s.model_file_name_template else "file"
                else:
                    kind = "dir"
                out.append((f"model_specs[{i}].model_uri", s.model_uri, kind))
    elif getattr(spec, "model_uri", None):
        out.append(("model_uri", spec.model_uri, "any"))
    return out


def uri_form_issues(spec: BaseModel) -> list[FieldIssue]:
    """Relative paths and remote schemes are refused whatever the file system holds."""
    from ..engines.options import check_path_value

    issues = []
    for path, uri, _ in _uris(spec):
        problem = check_path_value(uri, path)   # NUL bytes, names too long for any file system
        if problem:
            issues.append(FieldIssue(path, problem))
            continue
        try:
            uri_to_path(uri)
        except ValueError as exc:
            issues.append(FieldIssue(path, str(exc)))
    return issues


def path_issues(spec: BaseModel) -> list[FieldIssue]:
    """Local model_uri paths that are missing or of the wrong kind."""
    issues = []
    for path, uri, kind in _uris(spec):
        try:
            local = local_path_of(uri)
            exists = local.exists()
        except (ValueError, OSError) as exc:   # OSError: ENAMETOOLONG and the like
            issues.append(FieldIssue(path, str(exc)))
            continue
        if not exists:
            issues.append(FieldIssue(path, f"{local} does not exist; point it at the model's "
                                     f"{'file' if kind == 'file' else 'folder'}"))
        elif kind == "file" and local.is_dir():
            issues.append(FieldIssue(path, f"{local} is a directory, but a ggufv2 model_uri names the .gguf file "
                                     "itself (or set model_file_name_template to pick a file in the folder)"))
        elif kind == "dir" and not local.is_dir():
            issues.append(FieldIssue(path, f"{local} is a file, but this format's model_uri is the folder holding "
                                     "config.json and the weights"))
    return issues
