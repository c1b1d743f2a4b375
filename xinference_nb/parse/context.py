"""The state of one parse (where each field came from, warnings, the fallback family) and the steps
every model type shares: the spec's location fields, the language list, the final validation."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..errors import ParseError, SpecError
from ..metadata import hf
from .locate import Located
from .result import ParsedModel

ASSUMED = "assumed"
FAMILY_DEFAULT = "family default"


@dataclass
class Ctx:
    loc: Located
    model_type: str
    sources: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    family: Optional[str] = None
    family_spec: Any = None          # the spec whose facts are the fallback
    family_label: str = ""           # "family default (qwen2.5-instruct)"
    special_tokens: dict[str, str] = field(default_factory=dict)
    template_opens_reasoning: bool = False

    def src(self, path: str, text: str) -> None:
        self.sources[path] = text

    def warn(self, text: str) -> None:
        if text not in self.warnings:
            self.warnings.append(text)


def finish(ctx: Ctx, doc: dict) -> ParsedModel:
    """Validate the document into a spec and wrap it with what the parse learned."""
    from ..spec import load_spec

    try:
        spec = load_spec(ctx.model_type, doc)
    except SpecError as exc:
        raise ParseError(f"{ctx.loc.path}: the values read do not make a valid {ctx.model_type} spec:\n"
                         + "\n".join(f"  - {i}" for i in exc.issues)) from None
    return ParsedModel(spec=spec, model_type=ctx.model_type, path=ctx.loc.path, sources=dict(ctx.sources),
                       warnings=list(ctx.warnings), family=ctx.family if ctx.family_spec is not None else None,
                       template_opens_reasoning=ctx.template_opens_reasoning,
                       special_tokens=dict(ctx.special_tokens), facts=dict(ctx.facts))


def set_first(ctx: Ctx, doc: dict, field_name: str, *choices: tuple[Any, str]) -> bool:
    """``doc[field_name]`` = the first of ``choices`` ((value, where) pairs, in order of trust) whose
    value is set, its where into the sources; False when none is."""
    for value, where in choices:
        if value:
            doc[field_name] = value
            ctx.src(field_name, where)
            return True
    return False


def uri(path: Path) -> str:
    """``file://`` + the absolute path, as Xinference's documents write it; percent-encoded only when
    the path has a character a URI reader would take for something else (% # ?)."""
    text = str(path)
    if any(c in text for c in "%#?"):
        return path.as_uri()
    return "file://" + text


def location_fields(ctx: Ctx, entry: dict, prefix: str) -> None:
    """model_uri, model_id and model_revision of a spec entry (or of the document for image/audio)."""
    entry["model_uri"] = uri(ctx.loc.path)
    ctx.src(f"{prefix}model_uri", "the parsed " + ("file" if ctx.loc.kind == "gguf" else "folder"))
    if ctx.loc.repo_id:
        entry["model_id"] = ctx.loc.repo_id
        ctx.src(f"{prefix}model_id", "Hugging Face cache layout (models--Org--Name)"
                if "hub id" not in ctx.loc.how else "hub id argument")
        if ctx.loc.revision:
            entry["model_revision"] = ctx.loc.revision
            ctx.src(f"{prefix}model_revision", "Hugging Face cache snapshot folder")


# ------------------------------------------------------------------------------------------------
# Languages
# ------------------------------------------------------------------------------------------------

_LANG_TOKENS = {"en": "en", "zh": "zh", "chinese": "zh", "english": "en", "multilingual": "multilingual",
                "ja": "ja", "ko": "ko", "de": "de", "fr": "fr", "es": "es", "ru": "ru"}


def languages(ctx: Ctx, folder: Optional[Path], field_name: str, *, stated: Optional[list[str]] = None,
              stated_where: str = "", family_value: Optional[list[str]] = None,
              use_name: bool = False) -> list[str]:
    """The language list: what the files state, else the model card's, else the family's, else (when
    ``use_name``) languages the name states, else ["en"] with a warning."""
    if stated:
        ctx.src(field_name, stated_where)
        return stated
    langs = hf.readme_languages(folder) if folder is not None else None
    if langs:
        ctx.src(field_name, "README.md front matter language")
        return langs
    if family_value:
        ctx.src(field_name, ctx.family_label)
        return list(family_value)
    if use_name:
        tokens = re.split(r"[-_ .]", ctx.loc.name_hint.lower())
        found = list(dict.fromkeys(_LANG_TOKENS[t] for t in tokens if t in _LANG_TOKENS))
        if found:
            ctx.src(field_name, f"the name {ctx.loc.name_hint!r}")
            return found
    ctx.src(field_name, ASSUMED)
    ctx.warn(f"no language stated (model card, family): {field_name} assumed [\"en\"]")
    return ["en"]
