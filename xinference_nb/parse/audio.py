"""Audio models: speech recognition and speech / music synthesis folders (config.json model_type or
architecture); languages from Whisper's generation config or the tokenizer's."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from ..errors import ParseError
from ..metadata import hf
from .context import ASSUMED, Ctx, languages, location_fields, set_first
from .detect import AUDIO_ARCH, AUDIO_TYPES, architectures
from .names import choose_model_name, family_of

# ISO 639-2/3 codes tokenizers write → the two-letter codes Xinference's documents use
ISO3 = {"eng": "en", "cmn": "zh", "zho": "zh", "chi": "zh", "fra": "fr", "fre": "fr", "deu": "de", "ger": "de",
        "spa": "es", "jpn": "ja", "kor": "ko", "rus": "ru", "ita": "it", "por": "pt", "ara": "ar", "hin": "hi"}


def audio_from_dir(ctx: Ctx, folder: Path, names: set[str], config: dict, model_family: Optional[str],
                   model_name: Optional[str], **_: Any) -> dict:
    mtype = str(config.get("model_type") or "")
    archs = architectures(config)
    ctx.facts.update(architectures=archs, config_model_type=mtype)
    fam = family_of(ctx, model_family)
    name = choose_model_name(ctx, model_name)
    doc: dict[str, Any] = {"version": 2, "model_name": name}
    known = _known_audio_model(mtype, archs)
    if not set_first(ctx, doc, "model_family", (fam.model_family if fam is not None else None, ctx.family_label),
                     (ctx.family, "model_family argument"),
                     (known[0] if known else None, f"config.json model_type {mtype!r}")):
        raise ParseError(f"{folder / 'config.json'}: model_type {mtype or None!r} is not a speech model we know; "
                         "pass model_family=... (e.g. 'whisper')")
    if fam is not None and fam.model_ability:
        doc["model_ability"] = list(fam.model_ability)
        ctx.src("model_ability", ctx.family_label)
    elif known:
        doc["model_ability"] = known[1]
        ctx.src("model_ability", f"config.json model_type {mtype!r}" if mtype in AUDIO_TYPES else
                f"config.json architectures {archs}")
    gen = hf.maybe_json(folder, "generation_config.json") or {}
    tok = hf.maybe_json(folder, "tokenizer_config.json") or {}
    langs, lang_where = _stated_languages(gen, tok)
    multilingual = None
    if name.lower().endswith(".en") or ctx.loc.name_hint.lower().endswith(".en"):
        multilingual, mwhere = False, f"the name {ctx.loc.name_hint!r} ends with .en"
        langs, lang_where = ["en"], f"the name {ctx.loc.name_hint!r}"
    elif isinstance(gen.get("is_multilingual"), bool):
        multilingual, mwhere = gen["is_multilingual"], "generation_config.json is_multilingual"
    elif langs is not None:
        multilingual, mwhere = len(langs) > 1, lang_where
    elif fam is not None:
        multilingual, mwhere = fam.multilingual, ctx.family_label
    else:
        multilingual, mwhere = False, ASSUMED
    doc["multilingual"] = multilingual
    ctx.src("multilingual", mwhere)
    doc["language"] = languages(ctx, folder, "language", stated=langs, stated_where=lang_where,
                                 family_value=fam.language if fam is not None else None)
    if fam is not None:
        for key in ("default_model_config", "default_transcription_config", "engine"):
            value = getattr(fam, key, None)
            if value:
                doc[key] = value
                ctx.src(key, ctx.family_label)
    location_fields(ctx, doc, "")
    return doc


def _known_audio_model(mtype: str, archs: list[str]) -> Optional[tuple[str, list[str]]]:
    """(family, abilities) of a speech model_type we know, else of a speech architecture (a CTC or
    speech-to-text head recognizes, anything else synthesizes), else None."""
    known = AUDIO_TYPES.get(mtype)
    if known is None:
        arch = next((a for a in archs if AUDIO_ARCH.search(a)), "")
        if arch:
            known = (mtype or arch, ["audio2text"] if arch.endswith(("ForCTC", "ForSpeechSeq2Seq")) else ["text2audio"])
    return known


def _stated_languages(gen: dict, tok: dict) -> tuple[Optional[list[str]], str]:
    """(languages, where) from Whisper's generation_config.json lang_to_id or the tokenizer's
    language; (None, "") when neither states one."""
    lang_to_id = gen.get("lang_to_id")
    if isinstance(lang_to_id, dict) and lang_to_id:
        # in token-id order: Whisper's own language order (en, zh, de, es, …)
        ordered = sorted(lang_to_id.items(), key=lambda kv: kv[1] if isinstance(kv[1], int) else 1 << 60)
        return [k.strip("<|>") for k, _ in ordered], "generation_config.json lang_to_id"
    if isinstance(tok.get("language"), str) and tok["language"]:
        code = tok["language"].lower()
        return [ISO3.get(code, code)], "tokenizer_config.json language"
    return None, ""
