"""LLMs: the two readers (a Hugging Face folder, a GGUF header) each turn a model's files into one
:class:`LLMFacts`, and :func:`llm_document` builds the spec document from those facts, the
same way whichever reader read them: the family rule, the context-length fallbacks, the template →
reasoning → abilities → stops sequence, the size."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..errors import ParseError
from ..metadata import hf, quant, weights
from ..metadata.estimate import estimate_parameters, gguf_config
from ..metadata.gguf import GGUFInfo, read_gguf, split_siblings, vision_projectors
from ..metadata.quant import gguf_name_quantization
from ..metadata.sizes import size_form
from .context import ASSUMED, Ctx, languages, location_fields
from .detect import architectures
from .names import activated_size, builtins_of, choose_model_name, choose_size, family_of, family_sizes, sizes_in_name
from .result import render_chat

DEFAULT_CONTEXT = 2048


@dataclass
class LLMFacts:
    """What an LLM's files say, in the reader's words (each value with where it was read)."""

    name_candidates: list[tuple[str, str]] = field(default_factory=list)  # beyond the hub id and file name
    architectures: list[str] = field(default_factory=list)                # config.json (written into the spec)
    context: Optional[tuple[int, str]] = None
    no_context: str = ""                      # the warning when neither the files nor a family state one
    special_tokens: dict[str, str] = field(default_factory=dict)
    template: Optional[tuple[str, str]] = None
    vision: Optional[str] = None
    audio: Optional[str] = None
    languages: Optional[list[str]] = None
    languages_where: str = ""
    card_folder: Optional[Path] = None        # where a README.md model card may state languages
    stop_groups: list[tuple[list[int], str]] = field(default_factory=list)
    token_texts: dict[int, Optional[str]] = field(default_factory=dict)
    eos_text: Optional[tuple[str, str]] = None
    entry: dict[str, Any] = field(default_factory=dict)          # model_format, quantization
    entry_sources: dict[str, str] = field(default_factory=dict)
    parameters: Optional[int] = None
    counted_from: str = ""
    size_hint: str = ""                       # the name whose stated size is believed
    warnings: list[str] = field(default_factory=list)             # about the weights, given with the size


# ------------------------------------------------------------------------------------------------
# Reader: a Hugging Face folder
# ------------------------------------------------------------------------------------------------

_VISION_KEYS = ("vision_config", "vision_tower", "mm_vision_tower", "visual", "vit_config", "vision_encoder")


def facts_from_dir(ctx: Ctx, folder: Path, names: set[str], config: dict) -> LLMFacts:
    if not config:
        raise ParseError(f"{folder}: no config.json: this is not a transformers model folder")
    facts = LLMFacts(card_folder=folder)
    archs = architectures(config)
    facts.architectures = archs
    ctx.facts["architectures"] = archs
    ctx.facts["config_model_type"] = config.get("model_type")
    name_or_path = config.get("_name_or_path")
    facts.name_candidates = [(name_or_path if isinstance(name_or_path, str) else "", "config.json _name_or_path")]
    tok_cfg = hf.maybe_json(folder, "tokenizer_config.json")
    special_map = hf.maybe_json(folder, "special_tokens_map.json")
    gen_cfg = hf.maybe_json(folder, "generation_config.json")

    # ---- context length
    found = hf.context_length(config)
    if found is None and tok_cfg and isinstance(tok_cfg.get("model_max_length"), int) \
            and 0 < tok_cfg["model_max_length"] < hf.SENTINEL_CONTEXT:
        found = tok_cfg["model_max_length"], "tokenizer_config.json model_max_length"
    facts.context = found
    facts.no_context = "no context length in config.json or tokenizer_config.json: context_length assumed 2048"

    _tokens_from_dir(facts, folder, config, tok_cfg, special_map, gen_cfg)

    # ---- template, modalities, languages
    facts.template = hf.chat_template(folder, tok_cfg)
    facts.vision = _vision_from_dir(folder, names, config)
    facts.audio = "config.json audio_config" if isinstance(config.get("audio_config"), dict) else None
    if isinstance(config.get("language"), str):
        facts.languages, facts.languages_where = [config["language"]], "config.json language"

    # ---- format, quantization and size
    _quantization_from_dir(ctx, facts, folder, config)
    return facts


def _tokens_from_dir(facts: LLMFacts, folder: Path, config: dict, tok_cfg: Optional[dict],
                     special_map: Optional[dict], gen_cfg: Optional[dict]) -> None:
    """Sets the special tokens, the eos id groups (generation config, config, the tokenizer's eos
    token) and the texts of those ids."""
    has_tokenizer = bool(tok_cfg) or (folder / "tokenizer.json").is_file()
    table = hf.TokenTable(folder, tok_cfg)
    eos_tok = hf.special_token("eos_token", tok_cfg, special_map)
    bos_tok = hf.special_token("bos_token", tok_cfg, special_map)
    special = facts.special_tokens
    for key in ("bos_token", "eos_token", "pad_token", "unk_token"):
        tok = hf.special_token(key, tok_cfg, special_map)
        if tok:
            special[key] = tok[0]
    if bos_tok is None and isinstance(config.get("bos_token_id"), int):
        text = table.text(config["bos_token_id"]) if has_tokenizer else None
        if text:
            special["bos_token"] = text
    text_cfg = config.get("text_config") if isinstance(config.get("text_config"), dict) else None
    groups = [(hf.eos_ids(gen_cfg), "generation_config.json eos_token_id"),
              (hf.eos_ids(config) or hf.eos_ids(text_cfg), "config.json eos_token_id")]
    if eos_tok is not None:
        eos_id = table.id_of(eos_tok[0])
        if eos_id is not None:
            groups.append(([eos_id], f"{eos_tok[1]} eos_token {eos_tok[0]!r}"))
    all_ids = [i for g, _ in groups for i in g]
    texts = {i: table.text(i) for i in all_ids} if has_tokenizer else {}
    if eos_tok is not None and "eos_token" not in special:
        special["eos_token"] = eos_tok[0]
    if "eos_token" not in special and all_ids and texts.get(all_ids[0]):
        special["eos_token"] = texts[all_ids[0]]
    facts.stop_groups, facts.token_texts, facts.eos_text = groups, texts, eos_tok


def _vision_from_dir(folder: Path, names: set[str], config: dict) -> Optional[str]:
    """Where the folder says the model sees images (a vision key of config.json, an image processor),
    or None."""
    vision = next((f"config.json {k}" for k in _VISION_KEYS if config.get(k)), None)
    if vision is None:
        for fname in ("preprocessor_config.json", "processor_config.json"):
            if fname in names:
                blob = json.dumps(hf.maybe_json(folder, fname) or {})
                if "image_processor" in blob or "image_mean" in blob or "ImageProcessor" in blob:
                    return f"{fname} (an image processor)"
    return vision


def _quantization_from_dir(ctx: Ctx, facts: LLMFacts, folder: Path, config: dict) -> None:
    p = "model_specs[0]."
    entry, srcs = facts.entry, facts.entry_sources
    mlx = config.get("quantization") if isinstance(config.get("quantization"), dict) else None
    if mlx is not None and not (isinstance(mlx.get("bits"), int) and "group_size" in mlx):
        mlx = None
    q = None if mlx is not None else quant.quantization_of(config, folder)
    if q is not None:
        ctx.facts["quantization_method"] = q.method
        if q.model_format is None:
            facts.warnings.append(f"quantization method {q.method!r} (config.json quantization_config) is not one "
                                  "Xinference names; model_format set to pytorch, check that your engine can load it")
            entry["model_format"], entry["quantization"] = "pytorch", q.quantization
        else:
            entry["model_format"], entry["quantization"] = q.model_format, q.quantization
        srcs[p + "model_format"] = srcs[p + "quantization"] = q.source
    elif mlx is not None:   # mlx_lm writes {"group_size": 64, "bits": 4} as "quantization" (and _config)
        entry["model_format"], entry["quantization"] = "mlx", f"{mlx['bits']}bit"
        srcs[p + "model_format"] = "config.json quantization (an MLX export)"
        srcs[p + "quantization"] = f"config.json quantization.bits={mlx['bits']}"
        q = quant.Quantization("mlx", "mlx", f"{mlx['bits']}bit", mlx["bits"], "config.json quantization")
    else:
        entry["model_format"], entry["quantization"] = "pytorch", "none"
        srcs[p + "model_format"] = srcs[p + "quantization"] = "no quantization_config in config.json"
    found = weights.weight_info(folder, config, q)
    facts.warnings += found.warnings
    facts.parameters, facts.counted_from = found.parameters, found.source
    if facts.parameters is None:
        facts.parameters = estimate_parameters(config)
        facts.counted_from = "an estimate from the architecture in config.json (no weight files)"
        if facts.parameters is not None:
            facts.warnings.append(f"no weight files in the folder: model_size_in_billions is estimated "
                                  f"(~{facts.parameters / 1e9:.3g}B parameters) from the architecture in config.json "
                                  "(hidden size, layers, heads, MLP or experts, vocabulary), not counted")
    ctx.facts["weight_files"] = found.files
    facts.size_hint = ctx.loc.name_hint


# ------------------------------------------------------------------------------------------------
# Reader: a GGUF header
# ------------------------------------------------------------------------------------------------

def gguf_parameters(info: GGUFInfo) -> tuple[int, str, list[str]]:
    """(parameters, counted from, warnings) of a GGUF, all parts of a split one counted."""
    params, counted_from, warns = info.parameters, "the GGUF tensor shapes", []
    if info.split_count > 1:
        siblings = split_siblings(info.path)
        present = [s for s in siblings if s.is_file()]
        if len(present) < len(siblings):
            warns.append(f"{info.path.name} is part 1 of a {info.split_count}-file split GGUF and "
                         f"{len(siblings) - len(present)} part(s) are missing")
        params += sum(read_gguf(s).parameters for s in present if s != info.path)
        counted_from += f" of {len(present)} split files"
    return params, counted_from, warns


def facts_from_gguf(ctx: Ctx, info: GGUFInfo) -> LLMFacts:
    facts = LLMFacts(name_candidates=[(info.name or "", "GGUF general.name")])
    arch = info.architecture or "?"
    if isinstance(info.context_length, int) and info.context_length > 0:
        facts.context = info.context_length, f"GGUF {arch}.context_length"
    facts.no_context = "the GGUF header has no context_length: assumed 2048"
    for key, tid in (("bos_token", info.bos_token_id), ("eos_token", info.eos_token_id)):
        text = info.token_text(tid)
        if text is not None:
            facts.special_tokens[key] = text
    if info.chat_template:
        facts.template = info.chat_template, "GGUF tokenizer.chat_template"
    facts.languages, facts.languages_where = info.languages, "GGUF general.languages"
    facts.stop_groups = [([tid], f"GGUF tokenizer.ggml.{key}_token_id") for key, tid in info.stop_token_ids]
    facts.token_texts = dict(info.tokens)

    p = "model_specs[0]."
    facts.entry["model_format"] = "ggufv2"
    facts.entry_sources[p + "model_format"] = "a GGUF file"
    name = info.file_type_name
    if name:
        facts.entry_sources[p + "quantization"] = f"GGUF general.file_type={info.file_type}"
    else:
        name = gguf_name_quantization(ctx.loc.name_hint)
        facts.entry_sources[p + "quantization"] = "GGUF file name" if name else ASSUMED
    facts.entry["quantization"] = name or "none"
    _projectors_beside(facts, info)
    facts.parameters, facts.counted_from, facts.warnings = gguf_parameters(info)
    if not facts.parameters and info.tensor_count == 0:
        _vocab_only(facts, info)
    label_sizes = sizes_in_name(info.size_label) if isinstance(info.size_label, str) else []
    facts.size_hint = ctx.loc.name_hint if sizes_in_name(ctx.loc.name_hint) or not label_sizes else info.size_label
    return facts


def _projectors_beside(facts: LLMFacts, info: GGUFInfo) -> None:
    """A vision projector (mmproj GGUF) beside the model file: the vision ability and the spec's
    multimodal_projectors (the llama.cpp engine loads the first unless the launch picks another)."""
    found = vision_projectors(info.path.parent)
    if not found:
        return
    names = [p.name for p in found]
    facts.vision = f"the projector{'s' if len(names) > 1 else ''} {', '.join(names)} beside the GGUF"
    facts.entry["multimodal_projectors"] = names
    facts.entry_sources["model_specs[0].multimodal_projectors"] = (
        "*mmproj*.gguf beside the model file (general.architecture 'clip', with a vision encoder)")


def _vocab_only(facts: LLMFacts, info: GGUFInfo) -> None:
    """A GGUF without tensors parses (its tokenizer and template are real) with the size estimated from
    the header's hyperparameters, and says it cannot be launched."""
    facts.warnings.append(f"{info.path.name} holds no tensors (a vocabulary-only GGUF such as llama.cpp's "
                          "ggml-vocab-*.gguf): it has the tokenizer and hyperparameters but no weights, so it "
                          "cannot be launched")
    arch = info.architecture or "?"
    estimate = estimate_parameters(gguf_config(arch, info.raw, info.vocab_size))
    if estimate:
        facts.parameters = estimate
        facts.counted_from = f"an estimate from the GGUF header's {arch}.* hyperparameters (no tensors)"
        facts.warnings.append(f"model_size_in_billions is estimated (~{estimate / 1e9:.3g}B parameters) from the "
                              f"GGUF header's {arch}.* hyperparameters, not counted")


# ------------------------------------------------------------------------------------------------
# The document
# ------------------------------------------------------------------------------------------------

def llm_from_dir(ctx: Ctx, folder: Path, names: set[str], config: dict, model_family: Optional[str],
                 model_name: Optional[str], **_: Any) -> dict:
    """A Hugging Face folder's LLM document (the folder reader of model_types' LLM row)."""
    return llm_document(ctx, facts_from_dir(ctx, folder, names, config), model_family, model_name)


def llm_document(ctx: Ctx, facts: LLMFacts, model_family: Optional[str], model_name: Optional[str]) -> dict:
    """The LLM spec document from ``facts``: the model's files win, the family fills in."""
    fam = family_of(ctx, model_family, facts.name_candidates, facts.architectures or None)
    name = choose_model_name(ctx, model_name)
    doc: dict[str, Any] = {"version": 2, "model_name": name}
    doc["model_family"] = _family_field(ctx, fam, name)
    doc["context_length"] = _context_length(ctx, facts, fam)

    # ---- template, reasoning, abilities, languages, stops
    ctx.special_tokens.update(facts.special_tokens)
    template, template_where = _template(ctx, facts.template)
    if template:
        ctx.template_opens_reasoning = "<think>" in template and _opens_reasoning(template, ctx.special_tokens)
    start, end = _reasoning_tags(ctx, template, template_where)
    doc["model_ability"] = _abilities(ctx, template, template_where, facts.vision, facts.audio,
                                      ctx.sources.get("reasoning_start_tag"))
    doc["model_lang"] = languages(ctx, facts.card_folder, "model_lang", stated=facts.languages,
                                  stated_where=facts.languages_where,
                                  family_value=fam.model_lang if fam is not None else None)
    if template:
        doc["chat_template"] = template
    ids, stop = _stops(ctx, facts.stop_groups, facts.token_texts, facts.eos_text)
    if ids:
        doc["stop_token_ids"] = ids
    if stop:
        doc["stop"] = stop
    if start and end:
        doc["reasoning_start_tag"], doc["reasoning_end_tag"] = start, end
    if facts.architectures:
        doc["architectures"] = facts.architectures
        ctx.src("architectures", "config.json architectures")
    if fam is not None and getattr(fam, "tool_parser", None) and "tools" in doc["model_ability"]:
        doc["tool_parser"] = fam.tool_parser
        ctx.src("tool_parser", ctx.family_label)
    doc["model_specs"] = [_spec_entry(ctx, facts, fam)]
    return doc


def _family_field(ctx: Ctx, fam: Any, name: str) -> str:
    """The model_family written into the spec: a custom LLM's family may not be a built-in name."""
    if fam is not None and ctx.family in builtins_of("LLM"):
        ctx.src("model_family", f"model_name (a custom LLM's family may not be a built-in name; fallback facts "
                                f"from built-in {ctx.family!r})")
        return name
    if ctx.family:
        ctx.src("model_family", "model_family argument")
        return ctx.family
    ctx.src("model_family", "model_name (no model_family given and no built-in family matched)")
    return name


def _context_length(ctx: Ctx, facts: LLMFacts, fam: Any) -> int:
    """The context length: the files', else the family's, else assumed (with a warning)."""
    found = facts.context
    if found is None and fam is not None and fam.context_length:
        found = fam.context_length, ctx.family_label
    if found is None:
        found = DEFAULT_CONTEXT, ASSUMED
        ctx.warn(facts.no_context)
    ctx.src("context_length", found[1])
    return found[0]


def _spec_entry(ctx: Ctx, facts: LLMFacts, fam: Any) -> dict:
    """The one model_specs entry: format and quantization as read, the size chosen, the location."""
    p = "model_specs[0]."
    entry = dict(facts.entry)
    for path, text in facts.entry_sources.items():
        ctx.src(path, text)
    for w in facts.warnings:
        ctx.warn(w)
    entry["model_size_in_billions"] = choose_size(ctx, p + "model_size_in_billions", facts.parameters or None,
                                                  facts.counted_from, facts.size_hint,
                                                  family_sizes(fam) if fam is not None else [])
    active = activated_size(ctx.loc.name_hint)
    if active:
        entry["activated_size_in_billions"] = size_form(active)
        ctx.src(p + "activated_size_in_billions", f"name {ctx.loc.name_hint!r}")
    location_fields(ctx, entry, p)
    return entry


def _abilities(ctx: Ctx, template: Optional[str], template_where: str, has_vision: Optional[str],
               has_audio: Optional[str], reasoning_src: Optional[str]) -> list[str]:
    from ..spec import LLM_ABILITIES

    why: dict[str, str] = {"generate": "always"}
    if template:
        why["chat"] = template_where
        if re.search(r"\btools\b", template):
            why["tools"] = f"{template_where} uses `tools`"
        if "enable_thinking" in template:
            why["hybrid"] = f"{template_where} uses `enable_thinking`"
    else:
        ctx.warn("no chat template found: chat ability not set (add chat_template to chat with this model)")
    if has_vision:
        why["vision"] = has_vision
    if has_audio:
        why["audio"] = has_audio
    if reasoning_src:
        why["reasoning"] = reasoning_src
    fam = ctx.family_spec
    if fam is not None and template:
        for ability in ("vision", "audio", "omni"):
            if ability in (fam.model_ability or []) and ability not in why:
                why[ability] = ctx.family_label
    abilities = [a for a in LLM_ABILITIES if a in why]
    ctx.src("model_ability", "; ".join(f"{a}: {why[a]}" for a in abilities))
    return abilities


def _reasoning_tags(ctx: Ctx, template: Optional[str], template_where: str) -> tuple[Optional[str], Optional[str]]:
    if template and "<think>" in template and "</think>" in template:
        where = template_where
        if ctx.template_opens_reasoning:
            where += " (its generation prompt opens <think> itself)"
        ctx.src("reasoning_start_tag", where)
        ctx.src("reasoning_end_tag", where)
        return "<think>", "</think>"
    fam = ctx.family_spec
    if fam is not None and getattr(fam, "reasoning_start_tag", None) and getattr(fam, "reasoning_end_tag", None):
        ctx.src("reasoning_start_tag", ctx.family_label)
        ctx.src("reasoning_end_tag", ctx.family_label)
        return fam.reasoning_start_tag, fam.reasoning_end_tag
    return None, None


def _opens_reasoning(template: str, special: dict[str, str], tag: str = "<think>") -> bool:
    """Whether the generation prompt ends inside an opened reasoning block."""
    try:
        text = render_chat(template, [{"role": "user", "content": "Hi"}], None, True,
                           {k: v for k, v in special.items() if v is not None})
    except Exception:  # noqa: BLE001 - a template that cannot render is reported by preview()
        return False
    return text.rstrip().endswith(tag)


def _template(ctx: Ctx, own: Optional[tuple[str, str]]) -> tuple[Optional[str], str]:
    if own is not None:
        ctx.src("chat_template", own[1])
        if ctx.family_spec is not None and getattr(ctx.family_spec, "chat_template", None) \
                and ctx.family_spec.chat_template.strip() != own[0].strip():
            ctx.facts["family_chat_template_differs"] = True
        return own[0], own[1]
    fam = ctx.family_spec
    if fam is not None and getattr(fam, "chat_template", None):
        ctx.src("chat_template", f"{ctx.family_label}: the model's files have none")
        ctx.warn(f"the model's files have no chat template: using the {ctx.family!r} family's")
        return fam.chat_template, "the family's chat template"
    return None, ""


def _stops(ctx: Ctx, id_groups: list[tuple[list[int], str]], texts: dict[int, Optional[str]],
           eos_text: Optional[tuple[str, str]]) -> tuple[Optional[list[int]], Optional[list[str]]]:
    ids: list[int] = []
    id_where: list[str] = []
    for group, where in id_groups:
        new = [i for i in group if i not in ids]
        if new:
            ids += new
            id_where.append(f"{where} {new if len(group) != 1 else group[0]}")
    fam = ctx.family_spec
    if not ids:
        if fam is not None and (fam.stop_token_ids or fam.stop):
            if fam.stop_token_ids:
                ctx.src("stop_token_ids", ctx.family_label)
            if fam.stop:
                ctx.src("stop", ctx.family_label)
            ctx.warn(f"no eos_token_id in the model's files: stop tokens are the {ctx.family!r} family's")
            return (list(fam.stop_token_ids) if fam.stop_token_ids else None,
                    list(fam.stop) if fam.stop else None)
        if eos_text is None:
            ctx.warn("no eos token found (generation_config.json, config.json, tokenizer files): no stop tokens set")
            return None, None
    if ids:
        ctx.src("stop_token_ids", " + ".join(id_where))
    family_text: dict[int, str] = {}
    if fam is not None and fam.stop and fam.stop_token_ids and len(fam.stop) == len(fam.stop_token_ids):
        family_text = dict(zip(fam.stop_token_ids, fam.stop))
    stop: list[str] = []
    from_family, unknown = [], []
    for i in ids:
        text = texts.get(i)
        if text is None and i in family_text:
            text = family_text[i]
            from_family.append(i)
        if text is None:
            unknown.append(i)
        elif text not in stop:
            stop.append(text)
    parts = ["token texts of stop_token_ids" + (f" ({ctx.family_label} for {from_family})" if from_family else "")
             ] if len(unknown) < len(ids) else []
    if eos_text is not None and eos_text[0] not in stop:
        stop.append(eos_text[0])
        parts.append(f"eos_token of {eos_text[1]}")
    if unknown:
        ctx.warn(f"no token text for stop id(s) {unknown} (no tokenizer file names them): the stop strings "
                 "miss them")
    if stop:
        ctx.src("stop", " + ".join(parts))
    return (ids or None), (stop or None)
