"""Auto-parse a model's own files into a ready spec, saying where each field came from.

    parsed = parse_model("~/models/Qwen2.5-0.5B-Instruct")          # a folder
    parsed = parse_model("Qwen/Qwen2.5-0.5B-Instruct")             # a hub id already in the HF cache
    parsed = parse_model("/m/qwen2.5-0.5b-instruct-q4_k_m.gguf", model_family="qwen2.5-instruct")
    parsed.spec        # a valid spec object, ready for register_model
    parsed.sources     # {"context_length": "config.json max_position_embeddings", …}
    parsed.warnings    # ["no chat template found: chat ability not set", …]
    print(parsed.preview())                                        # the exact prompt the template makes

Only metadata is read: config / tokenizer / generation config JSON, safetensors headers and index,
the GGUF header, the model card's front matter. Tensor data is never read, so parsing a 70B folder
takes as long as parsing a tiny one. Nothing is downloaded.

Family rules (``model_family``):

* LLM, built-in family (``"qwen2.5-instruct"``): that family's facts fill what the files do not say
  (template, stops, languages, reasoning tags, sizes); the model's own files win. A custom LLM's family
  may not be a built-in name, so the spec's ``model_family`` becomes the model's name.
* LLM, a registered custom family: its facts are the fallback and the name is kept.
* LLM, any other valid name: a new family, no fallback facts. A name that looks like a typo of a
  built-in (``"qwen2.5-instrcut"``, ``"qwen25-instruct"``: a near miss of the nearest built-in, not
  that name plus an affix nor another version number) is a ParseError that suggests the built-in.
* No family: the built-in family is inferred when the hub id, the folder or GGUF file name, or
  config.json's ``_name_or_path`` is one of a built-in's model ids (a warning when the architectures
  differ); else the model stands alone.

Names: the default model_name is the repo / folder / GGUF file name made valid; one that equals a
built-in name of its type is prefixed "custom-". Sizes: a size the name states ("7B", "0.5B") when
the parameters counted agree within 0.6–1.6×, else the inferred family's nearest size, else the count
rounded (≥10B whole, ≥1B one decimal, below one significant digit), in Xinference's form ("0_5", 7).
* embedding / rerank: ``model_family`` names a built-in model of that type to take defaults from.
* image / audio: ``model_family`` is the family written into the spec (``"stable_diffusion"``,
  ``"whisper"``), or a built-in model's name whose family and abilities are taken.
"""
from __future__ import annotations

import difflib
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from ..errors import ParseError, SpecError
from . import hf
from .locate import Located, locate

__all__ = ["parse_model", "ParsedModel", "SAMPLE_MESSAGES", "SAMPLE_TOOLS"]

ASSUMED = "assumed"
FAMILY_DEFAULT = "family default"

SAMPLE_MESSAGES: list[dict] = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "The capital of France is Paris."},
    {"role": "user", "content": "And what is the weather like there today?"},
]

SAMPLE_TOOLS: list[dict] = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "The city, e.g. Paris"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}]


# ================================================================================================
# Result
# ================================================================================================

@dataclass
class ParsedModel:
    """A spec made from a model's files, with the origin of each field.

    ``sources`` maps a field path (``context_length``, ``model_specs[0].model_size_in_billions``…) to
    where the value came from: ``"<file> <key>"``, ``"family default (<family>)"`` or ``"assumed"``.
    ``warnings`` lists what a user should check before registering.
    """

    spec: Any
    model_type: str
    path: Path
    sources: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    family: Optional[str] = None              # the family whose facts were the fallback
    template_opens_reasoning: bool = False    # the generation prompt itself opens the reasoning block
    special_tokens: dict[str, str] = field(default_factory=dict)   # bos_token / eos_token … texts
    facts: dict[str, Any] = field(default_factory=dict)            # raw facts read (architecture, parameters…)

    # ------------------------------------------------------------------ documents
    def to_dict(self) -> dict:
        """The document (what register_model takes), as a dict."""
        from ..spec import to_document

        return to_document(self.spec)

    def to_json(self, indent: Optional[int] = 2) -> str:
        """The document as JSON text, ready for ``register_model(model_type, model=..., persist=...)``."""
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    def source_of(self, field_path: str) -> str:
        if field_path in self.sources:
            return self.sources[field_path]
        return "default"

    def table(self) -> list[tuple[str, Any, str]]:
        """(field, value, source) rows of the fields a user should look at, in document order."""
        doc = self.to_dict()
        rows: list[tuple[str, Any, str]] = [("model_type", self.model_type, self.source_of("model_type"))]
        skip = {"version", "virtualenv", "is_builtin", "cache_config"}
        for key, value in doc.items():
            if key in skip:
                continue
            if key == "model_specs" and isinstance(value, list):
                for i, entry in enumerate(value):
                    for sub, subval in entry.items():
                        path = f"model_specs[{i}].{sub}"
                        if subval is None and path not in self.sources:
                            continue
                        rows.append((path, subval, self.source_of(path)))
                continue
            if value is None and key not in self.sources:
                continue
            if value in ({}, []) and key not in self.sources:
                continue
            rows.append((key, value, self.source_of(key)))
        return rows

    # ------------------------------------------------------------------ preview
    def preview(self, messages: Optional[list[dict]] = None, tools: Optional[list[dict]] = None,
                add_generation_prompt: bool = True, **variables: Any) -> str:
        """The prompt the effective chat template makes from ``messages`` (default: system, user,
        assistant, user; plus a sample tool when the model has the tools ability)."""
        template = getattr(self.spec, "chat_template", None)
        if self.model_type != "LLM" or not template:
            raise ParseError(f"{self.path}: this {self.model_type} model has no chat template to preview"
                             + ("; give it one (chat_template) to enable chat" if self.model_type == "LLM" else ""))
        default = messages is None
        if default:
            messages = [dict(m) for m in SAMPLE_MESSAGES]
            if tools is None and "tools" in (self.spec.model_ability or []):
                tools = SAMPLE_TOOLS
        env = {k: v for k, v in self.special_tokens.items() if v is not None}
        env.update(variables)
        try:
            return _render_chat(template, messages, tools, add_generation_prompt, env)
        except Exception as exc:  # noqa: BLE001 - jinja2 TemplateError and friends from the template
            if default and messages and messages[0]["role"] == "system":
                try:
                    text = _render_chat(template, messages[1:], tools, add_generation_prompt, env)
                except Exception:  # noqa: BLE001
                    pass
                else:
                    note = (f"the chat template refuses a system message ({exc}); the preview leaves it out, "
                            "and so must your chats")
                    if note not in self.warnings:
                        self.warnings.append(note)
                    return text
            raise ParseError(f"{self.sources.get('chat_template', 'the chat template')}: failed to render "
                             f"({type(exc).__name__}: {exc})") from None

    # ------------------------------------------------------------------ display
    def __repr__(self) -> str:
        name = getattr(self.spec, "model_name", "?")
        lines = [f"ParsedModel({self.model_type} {name!r} from {self.path})"]
        for fld, value, source in self.table():
            text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
            text = text.replace("\n", "\\n")
            if len(text) > 60:
                text = text[:57] + "..."
            lines.append(f"  {fld:<40} {text:<60}  ← {source}")
        for w in self.warnings:
            lines.append(f"  ! {w}")
        return "\n".join(lines)


def _render_chat(template: str, messages: list[dict], tools: Optional[list[dict]], add_generation_prompt: bool,
                 variables: dict) -> str:
    """Render with the runtime renderer, so the preview is exactly the prompt a launched model gets."""
    from ..chat import render_chat_template

    return render_chat_template(template, messages, tools=tools, add_generation_prompt=add_generation_prompt,
                                **variables)


# ================================================================================================
# Parsing context
# ================================================================================================

@dataclass
class _Ctx:
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


# ================================================================================================
# Names
# ================================================================================================

def sanitize_name(text: str) -> str:
    """A valid model name from a folder or repo name: other characters become "-"."""
    name = re.sub(r"[^A-Za-z0-9_.\-]+", "-", text)
    name = re.sub(r"\.{2,}", ".", name)
    name = re.sub(r"-{2,}", "-", name)
    name = name.strip("-_.")
    return name[:200].rstrip("-_.") or "model"


def _check_name(value: str, what: str) -> str:
    from ..spec import check_model_name

    try:
        return check_model_name(value, what)
    except ValueError as exc:
        raise ParseError(f"{what}: {exc}") from None


def _builtins(model_type: str) -> dict:
    from ..registry import builtin_specs

    return builtin_specs(model_type)


def _model_name(ctx: _Ctx, model_name: Optional[str]) -> str:
    builtins = _builtins(ctx.model_type)
    if model_name is not None:
        name = _check_name(model_name, "model_name")
        ctx.src("model_name", "model_name argument")
        if name in builtins:
            ctx.warn(f"model_name {name!r} is a built-in {ctx.model_type} model: registering it will be refused; "
                     f"pick another name such as 'my-{name}'")
        return name
    hint = ctx.loc.name_hint
    name = sanitize_name(hint)
    where = ("hub repository name" if ctx.loc.repo_id else
             "GGUF file name" if ctx.loc.kind == "gguf" else "folder name")
    if name in builtins:
        name = sanitize_name(f"custom-{name}")
        ctx.warn(f"the {where} {hint!r} is a built-in {ctx.model_type} model's name; the spec is named {name!r} "
                 "(pass model_name=... to choose)")
    ctx.src("model_name", f"{where} {hint!r}" + ("" if name == hint else f" (made a valid name: {name!r})"))
    return name


# ================================================================================================
# Families
# ================================================================================================

_ID_INDEX: dict[str, dict[str, str]] = {}


def _id_index(model_type: str) -> dict[str, str]:
    """lower-cased model id and repo basename (with "-GGUF" dropped) → built-in name."""
    if model_type not in _ID_INDEX:
        index: dict[str, str] = {}
        for name, spec in _builtins(model_type).items():
            ids = []
            for entry in getattr(spec, "model_specs", None) or []:
                quant = getattr(entry, "quantization", "") or ""
                if entry.model_id:
                    ids.append(entry.model_id.replace("{quantization}", quant))
                template = getattr(entry, "model_file_name_template", None)
                if template and "/" not in template:   # a GGUF file name: "qwen2.5-7b-instruct-{quantization}.gguf"
                    file_name = template.replace("{quantization}", quant).lower()
                    index.setdefault(file_name[:-5] if file_name.endswith(".gguf") else file_name, name)
            if getattr(spec, "model_id", None):
                ids.append(spec.model_id)
            for mid in ids:
                if "{" in mid:
                    continue
                low = mid.lower()
                index.setdefault(low, name)
                base = low.rsplit("/", 1)[-1]
                index.setdefault(base, name)
                if base.endswith("-gguf"):
                    index.setdefault(base[:-5], name)
        _ID_INDEX[model_type] = index
    return _ID_INDEX[model_type]


_GGUF_QUANT = re.compile(r"(?i)[-._](?:ud-)?(?:i?q\d[a-z0-9_]*|f16|bf16|f32|fp16)$")


def _infer_family(ctx: _Ctx, candidates: list[tuple[str, str]], architectures: Optional[list[str]] = None) -> None:
    """Find a built-in whose model id matches one of ``candidates`` ((text, where) pairs)."""
    index = _id_index(ctx.model_type)
    builtins = _builtins(ctx.model_type)
    expanded = []
    for text, where in candidates:
        if text and "--" in text and "/" not in text:   # "Org--Name" folders (cache-style naming)
            expanded.append((text.replace("--", "/", 1), where))
        expanded.append((text, where))
    for text, where in expanded:
        if not text:
            continue
        keys = [text.lower(), text.lower().rsplit("/", 1)[-1]]
        keys.append(_GGUF_QUANT.sub("", keys[-1]))
        for key in keys:
            name = index.get(key)
            if name is None:
                continue
            spec = builtins[name]
            fam_arch = getattr(spec, "architectures", None)
            if architectures and fam_arch and not set(architectures) & set(fam_arch):
                ctx.warn(f"{where} {text!r} matches built-in {name!r}, whose architecture is {fam_arch}, not "
                         f"{architectures}: check the facts taken from that family")
            ctx.family, ctx.family_spec = name, spec
            ctx.family_label = f"{FAMILY_DEFAULT} ({name})"
            ctx.facts["family_inferred_from"] = f"{where} {text!r}"
            ctx.src("family", f"inferred: {where} {text!r} is a model id of built-in {name!r}")
            return


def _resolve_family(ctx: _Ctx, model_family: Optional[str]) -> None:
    """Set ctx.family / family_spec from the model_family argument (see the module docstring)."""
    if model_family is None:
        return
    if not isinstance(model_family, str) or not model_family.strip():
        raise ParseError("model_family must be a non-empty name such as 'qwen2.5-instruct'")
    model_family = model_family.strip()
    t = ctx.model_type
    builtins = _builtins(t)
    exact = model_family if model_family in builtins else next(
        (n for n in builtins if n.lower() == model_family.lower()), None)
    if t in ("image", "audio"):
        if exact:
            ctx.family, ctx.family_spec = exact, builtins[exact]
            ctx.family_label = f"{FAMILY_DEFAULT} ({exact})"
            ctx.src("family", f"model_family argument: built-in {t} model {exact!r}")
            return
        if t == "image":
            _check_name(model_family, "model_family")
        ctx.family = model_family
        ctx.src("family", "model_family argument")
        return
    if exact:
        if exact != model_family:
            ctx.warn(f"model_family {model_family!r} taken as the built-in {exact!r}")
        ctx.family, ctx.family_spec = exact, builtins[exact]
        ctx.family_label = f"{FAMILY_DEFAULT} ({exact})"
        ctx.src("family", f"model_family argument: built-in {t} {exact!r}")
        return
    if t in ("embedding", "rerank"):
        close = difflib.get_close_matches(model_family, list(builtins), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ParseError(f"model_family {model_family!r} is not a built-in {t} model{hint} (for {t} models "
                         "model_family only names a built-in whose defaults to use; leave it out otherwise)")
    # LLM: a registered custom family, a new family, or a typo of a built-in
    _check_name(model_family, "model_family")
    custom = _custom_family_spec(model_family)
    if custom is not None:
        ctx.family, ctx.family_spec = model_family, custom
        ctx.family_label = f"{FAMILY_DEFAULT} ({model_family}: registered {custom.model_name!r})"
        ctx.src("family", f"model_family argument: registered custom family (model {custom.model_name!r})")
        return
    typo = _typo_of(model_family, list(builtins))
    if typo:
        raise ParseError(f"model_family {model_family!r} is not a built-in LLM family nor a registered custom one; "
                         f"did you mean {typo!r}? (a new family needs a clearly different name, e.g. "
                         f"'my-{model_family}')")
    near = difflib.get_close_matches(model_family, list(builtins), n=1, cutoff=0.75)
    if near:
        ctx.warn(f"model_family {model_family!r} is a new family (not built in); if you meant the built-in "
                 f"{near[0]!r}, pass that to use its template and stops")
    ctx.family = model_family
    ctx.facts["new_family"] = model_family
    ctx.src("family", "model_family argument: a new family (no fallback facts)")


def _typo_of(name: str, builtins: list[str]) -> Optional[str]:
    """A built-in name that ``name`` is a near-miss of (a substitution, swap or a dropped character),
    not an extension of (``my-qwen2.5-instruct``, ``qwen2.5-instruct-ft`` are deliberate new names)."""
    low = name.lower()
    close = difflib.get_close_matches(low, [b.lower() for b in builtins], n=1, cutoff=0.85)
    if not close:
        return None
    cand = close[0]
    if cand in low or abs(len(cand) - len(low)) > 2:
        return None    # the nearest built-in plus an affix ("qwen2.5-instruct-ft"): deliberate
    changed = "".join(low[i1:i2] + cand[j1:j2] for op, i1, i2, j1, j2 in
                      difflib.SequenceMatcher(None, low, cand).get_opcodes() if op != "equal")
    if any(c.isdigit() for c in changed) and all(c.isdigit() or c == "." for c in changed):
        return None    # only a version number differs ("llama-3.4-instruct"): a new family
    return next(b for b in builtins if b.lower() == cand)


def _custom_family_spec(family: str):
    try:
        from ..registry import get_registry

        for spec in get_registry().custom("LLM").values():
            if getattr(spec, "model_family", None) == family:
                return spec
    except Exception:  # noqa: BLE001 - an unreadable store must not break parsing
        return None
    return None


# ================================================================================================
# Sizes
# ================================================================================================

_NAME_SIZE = re.compile(r"(?:^|[-_ .])(\d+(?:[._]\d+)?)([BbMm])(?=$|[-_ .])")
_NAME_ACTIVE = re.compile(r"(?:^|[-_ ])[Aa](\d+(?:[._]\d+)?)[Bb](?=$|[-_ .])")


def sizes_in_name(name: str) -> list[float]:
    """Parameter counts (billions) a model name states: "Qwen2.5-0.5B" → [0.5], "internlm2_5-1_8b" → [1.8],
    "SmolLM-135M" → [0.135]."""
    out = []
    for number, unit in _NAME_SIZE.findall(name):
        value = float(number.replace("_", "."))
        out.append(value / 1000 if unit in "Mm" else value)
    return [v for v in out if v > 0]


def size_form(billions: float) -> Union[int, str]:
    """Xinference's written form: 7 → 7, 0.5 → "0_5", 1.5 → "1_5", 0.0002 → "0_0002"."""
    if billions >= 1 and abs(billions - round(billions)) < 1e-9:
        return int(round(billions))
    text = f"{billions:.6f}".rstrip("0").rstrip(".")
    return text.replace(".", "_")


def round_billions(billions: float) -> float:
    """A counted size, rounded the way model names are: ≥10B whole, ≥1B one decimal, else one
    significant digit."""
    if billions >= 10:
        return float(round(billions))
    if billions >= 1:
        return round(billions, 1)
    digits = -int(math.floor(math.log10(billions)))
    return round(billions, digits)


def _choose_size(ctx: _Ctx, path: str, parameters: Optional[int], counted_from: str, name_hint: str,
                 family_sizes: list[float]) -> Union[int, str]:
    counted = parameters / 1e9 if parameters else None
    if counted is not None:
        ctx.facts["parameters"] = parameters
    for stated in sizes_in_name(name_hint):
        if counted is None or 0.6 <= counted / stated <= 1.6:
            extra = f"; {counted:.3g}B counted from {counted_from}" if counted is not None else ""
            ctx.src(path, f"name {name_hint!r} states {size_form(stated)}B{extra}")
            return size_form(stated)
    if counted is not None and family_sizes:
        nearest = min(family_sizes, key=lambda s: abs(math.log(s / counted)))
        if 0.75 <= counted / nearest <= 1.35:
            ctx.src(path, f"{ctx.family_label}: the family's size nearest to the {counted:.3g}B counted "
                          f"from {counted_from}")
            return size_form(nearest)
    if counted is not None:
        value = size_form(round_billions(counted))
        ctx.src(path, f"{counted_from} ({parameters:,} parameters)")
        return value
    raise ParseError(f"{ctx.loc.path}: cannot tell the model's size: no weights (*.safetensors, "
                     "model.safetensors.index.json, pytorch_model*.bin), no size in the name and no sizes in "
                     "config.json to estimate from")


def _family_sizes(spec: Any) -> list[float]:
    from ..spec import size_to_float

    out = []
    for entry in getattr(spec, "model_specs", None) or []:
        value = size_to_float(getattr(entry, "model_size_in_billions", None))
        if value:
            out.append(value)
    return sorted(set(out))


# ================================================================================================
# Model type detection
# ================================================================================================

# config.json model_type → (audio family, abilities)
AUDIO_TYPES: dict[str, tuple[str, list[str]]] = {
    "whisper": ("whisper", ["audio2text"]),
    "moonshine": ("moonshine", ["audio2text"]),
    "wav2vec2": ("wav2vec2", ["audio2text"]),
    "wav2vec2-conformer": ("wav2vec2", ["audio2text"]),
    "hubert": ("hubert", ["audio2text"]),
    "speech_to_text": ("speech_to_text", ["audio2text"]),
    "qwen3_asr": ("qwen3_asr", ["audio2text"]),
    "vits": ("vits", ["text2audio"]),
    "speecht5": ("speecht5", ["text2audio"]),
    "bark": ("bark", ["text2audio"]),
    "fastspeech2_conformer": ("fastspeech2_conformer", ["text2audio"]),
    "kokoro": ("Kokoro", ["text2audio"]),
    "musicgen": ("musicgen", ["text2music"]),
    "musicgen_melody": ("musicgen", ["text2music"]),
    "qwen3_tts": ("qwen3_tts", ["text2audio"]),
}
_AUDIO_ARCH = re.compile(r"(ForSpeechSeq2Seq|ForCTC|ForTextToSpeech|ForTextToWaveform|ForTextToSpectrogram)$")
_ENCODER_TYPES = {"bert", "roberta", "xlm-roberta", "mpnet", "distilbert", "electra", "deberta", "deberta-v2",
                  "nomic_bert", "camembert", "new", "modernbert", "jina_bert", "e5", "albert", "t5"}
_ENCODER_ARCHS = {"BertModel", "RobertaModel", "XLMRobertaModel", "MPNetModel", "DistilBertModel", "NomicBertModel",
                  "ElectraModel", "DebertaModel", "DebertaV2Model", "ModernBertModel", "JinaBertModel", "NewModel",
                  "T5EncoderModel", "CamembertModel", "AlbertModel", "XLMRobertaLoRA", "BertForMaskedLM"}
_ROBERTA_LIKE = {"roberta", "xlm-roberta", "camembert", "xlm-roberta-xl"}
_LLM_ARCH = re.compile(r"(ForCausalLM|LMHeadModel|ForConditionalGeneration|ChatModel|ForCausalLMPipe)$")


def _architectures(config: dict) -> list[str]:
    value = config.get("architectures")
    return [a for a in value if isinstance(a, str)] if isinstance(value, list) else []


def _num_labels(config: dict) -> Optional[int]:
    if isinstance(config.get("num_labels"), int):
        return config["num_labels"]
    id2label = config.get("id2label")
    if isinstance(id2label, dict) and id2label:
        return len(id2label)
    return None


def _st_modules(folder: Path) -> Optional[list[dict]]:
    data = hf.read_json(folder / "modules.json", "sentence-transformers modules") if (
        folder / "modules.json").is_file() else None
    if data is None:
        return None
    if not isinstance(data, list):
        raise ParseError(f"{folder / 'modules.json'}: expected a list of modules")
    return [m for m in data if isinstance(m, dict)]


def _module_dir(folder: Path, modules: Optional[list[dict]], kind: str) -> list[Path]:
    """Folders of the sentence-transformers modules whose type ends with ``kind``, in order."""
    out = []
    for m in modules or []:
        if str(m.get("type", "")).endswith(kind):
            out.append(folder / str(m.get("path") or ""))
    return out


def _detect_type(ctx: _Ctx, folder: Path, names: set[str], config: Optional[dict],
                 st_config: Optional[dict], modules: Optional[list[dict]]) -> tuple[str, str]:
    if "model_index.json" in names:
        return "image", "model_index.json (a diffusers pipeline)"
    st_kind = (st_config or {}).get("model_type")
    if st_kind == "CrossEncoder":
        return "rerank", "config_sentence_transformers.json model_type 'CrossEncoder'"
    cfg = config or {}
    archs = _architectures(cfg)
    mtype = str(cfg.get("model_type") or "")
    if any(a.endswith("ForSequenceClassification") for a in archs):
        labels = _num_labels(cfg)
        if labels == 1:
            return "rerank", f"config.json architectures {archs} with one label (a cross-encoder)"
        if not (modules or st_config):
            raise ParseError(f"{folder / 'config.json'}: a sequence classifier with {labels or 'several'} labels "
                             f"({archs[0]}) is neither a reranker (one label) nor an embedding model; pass "
                             "model_type=... if you know better")
    if modules is not None or st_config is not None or "sentence_bert_config.json" in names:
        which = "modules.json" if modules is not None else (
            "config_sentence_transformers.json" if st_config is not None else "sentence_bert_config.json")
        return "embedding", f"{which} (a sentence-transformers model)"
    if mtype in AUDIO_TYPES:
        return "audio", f"config.json model_type {mtype!r}"
    if any(_AUDIO_ARCH.search(a) for a in archs):
        return "audio", f"config.json architectures {archs}"
    name = ctx.loc.name_hint.lower()
    if "rerank" in name and (archs or mtype):
        return "rerank", f"the name {ctx.loc.name_hint!r} says reranker"
    if any(_LLM_ARCH.search(a) for a in archs):
        return "LLM", f"config.json architectures {archs}"
    if mtype in _ENCODER_TYPES or any(a in _ENCODER_ARCHS or a.endswith("ForMaskedLM") for a in archs):
        what = f"model_type {mtype!r}" if mtype in _ENCODER_TYPES else f"architectures {archs}"
        return "embedding", f"config.json {what} (an encoder)"
    if any(isinstance(cfg.get(k), dict) for k in ("text_config", "llm_config")) or (
            any(k in cfg for k in ("vocab_size", "padded_vocab_size"))
            and any(k in cfg for k in ("num_hidden_layers", "num_layers", "n_layer"))):
        return "LLM", f"config.json{' architectures ' + str(archs) if archs else ''} (a decoder's sizes)"
    raise ParseError(f"{folder / 'config.json'}: cannot tell the model type (architectures={archs or None}, "
                     f"model_type={mtype or None}); pass model_type='LLM' / 'embedding' / 'rerank' / 'image' / 'audio'")


# ================================================================================================
# Entry point
# ================================================================================================

def parse_model(path_or_id: Union[str, os.PathLike], model_type: Optional[str] = None,
                model_family: Optional[str] = None, model_name: Optional[str] = None) -> ParsedModel:
    """Read a model's files into a ready spec (see the module docstring).

    ``path_or_id``: a folder, a ``file://`` URI, a ``.gguf`` file, a Hugging Face cache folder
    (``models--Org--Name``) or a hub id already in the local Hugging Face cache. ``model_type`` is
    detected when omitted. Raises ParseError naming the file when the files cannot give a complete spec.
    """
    wanted_type = None
    if model_type is not None:
        from ..spec import normalize_model_type

        try:
            wanted_type = normalize_model_type(model_type)
        except SpecError as exc:
            raise ParseError(str(exc.issues[0])) from None
        if wanted_type == "flexible":
            raise ParseError("flexible models have no files to parse: write their launcher document by hand")
    loc = locate(path_or_id)
    ctx = _Ctx(loc, wanted_type or "")
    ctx.src("model_path", loc.how)
    if loc.kind == "gguf":
        return _parse_gguf(ctx, loc.path, wanted_type, model_family, model_name)
    folder = loc.path
    names = hf.file_names(folder)
    modules = _st_modules(folder)
    transformer_dirs = _module_dir(folder, modules, "Transformer")
    config_dir = transformer_dirs[0] if transformer_dirs else folder
    config = hf.maybe_json(config_dir, "config.json")
    if config is None and "model_index.json" not in names:
        ggufs = sorted(n for n in names if n.lower().endswith(".gguf"))
        if ggufs:
            from .gguf import _SPLIT

            firsts = [n for n in ggufs if not _SPLIT.match(n) or _SPLIT.match(n).group("i") == "00001"]
            if len(firsts) == 1:
                ctx.src("model_path", loc.how + f"; the folder's only GGUF model {firsts[0]}")
                loc.path, loc.kind = folder / firsts[0], "gguf"
                return _parse_gguf(ctx, loc.path, wanted_type, model_family, model_name)
            raise ParseError(f"{folder}: holds {len(firsts)} GGUF files ({', '.join(firsts[:4])}"
                             f"{'…' if len(firsts) > 4 else ''}) and no config.json; pass one .gguf file")
        raise ParseError(f"{config_dir}: no config.json (nor model_index.json or a .gguf file): this is not a "
                         "model folder, or the download is incomplete")
    st_config = hf.maybe_json(folder, "config_sentence_transformers.json")
    if wanted_type is None:
        detected, why = _detect_type(ctx, folder, names, config, st_config, modules)
        ctx.model_type = detected
        ctx.src("model_type", f"detected: {why}")
    else:
        ctx.src("model_type", "model_type argument")
    builders = {"LLM": _llm_from_dir, "embedding": _embedding_from_dir, "rerank": _rerank_from_dir,
                "image": _image_from_dir, "audio": _audio_from_dir}
    doc = builders[ctx.model_type](ctx, folder, names, config or {}, model_family, model_name,
                                   modules=modules, config_dir=config_dir)
    return _finish(ctx, doc)


def _finish(ctx: _Ctx, doc: dict) -> ParsedModel:
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


def _uri(path: Path) -> str:
    """``file://`` + the absolute path, as Xinference's documents write it; percent-encoded only when
    the path has a character a URI reader would take for something else (% # ?)."""
    text = str(path)
    if any(c in text for c in "%#?"):
        return path.as_uri()
    return "file://" + text


def _location_fields(ctx: _Ctx, entry: dict, prefix: str) -> None:
    """model_uri, model_id and model_revision of a spec entry (or of the document for image/audio)."""
    entry["model_uri"] = _uri(ctx.loc.path)
    ctx.src(f"{prefix}model_uri", "the parsed " + ("file" if ctx.loc.kind == "gguf" else "folder"))
    if ctx.loc.repo_id:
        entry["model_id"] = ctx.loc.repo_id
        ctx.src(f"{prefix}model_id", "Hugging Face cache layout (models--Org--Name)"
                if "hub id" not in ctx.loc.how else "hub id argument")
        if ctx.loc.revision:
            entry["model_revision"] = ctx.loc.revision
            ctx.src(f"{prefix}model_revision", "Hugging Face cache snapshot folder")


# ================================================================================================
# Languages
# ================================================================================================

_LANG_TOKENS = {"en": "en", "zh": "zh", "chinese": "zh", "english": "en", "multilingual": "multilingual",
                "ja": "ja", "ko": "ko", "de": "de", "fr": "fr", "es": "es", "ru": "ru"}
_ISO3 = {"eng": "en", "cmn": "zh", "zho": "zh", "chi": "zh", "fra": "fr", "fre": "fr", "deu": "de", "ger": "de",
         "spa": "es", "jpn": "ja", "kor": "ko", "rus": "ru", "ita": "it", "por": "pt", "ara": "ar", "hin": "hi"}


def _languages(ctx: _Ctx, folder: Optional[Path], field_name: str, *, stated: Optional[list[str]] = None,
               stated_where: str = "", family_value: Optional[list[str]] = None,
               use_name: bool = False) -> list[str]:
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


# ================================================================================================
# LLM
# ================================================================================================

_VISION_KEYS = ("vision_config", "vision_tower", "mm_vision_tower", "visual", "vit_config", "vision_encoder")


def _llm_abilities(ctx: _Ctx, template: Optional[str], template_where: str, has_vision: Optional[str],
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


def _reasoning_tags(ctx: _Ctx, template: Optional[str], template_where: str) -> tuple[Optional[str], Optional[str]]:
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
        text = _render_chat(template, [{"role": "user", "content": "Hi"}], None, True,
                            {k: v for k, v in special.items() if v is not None})
    except Exception:  # noqa: BLE001 - a template that cannot render is reported by preview()
        return False
    return text.rstrip().endswith(tag)


def _template(ctx: _Ctx, own: Optional[tuple[str, str]]) -> tuple[Optional[str], str]:
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


def _stops(ctx: _Ctx, id_groups: list[tuple[list[int], str]], texts: dict[int, Optional[str]],
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


def _llm_from_dir(ctx: _Ctx, folder: Path, names: set[str], config: dict, model_family: Optional[str],
                  model_name: Optional[str], **_: Any) -> dict:
    if not config:
        raise ParseError(f"{folder}: no config.json: this is not a transformers model folder")
    archs = _architectures(config)
    ctx.facts["architectures"] = archs
    ctx.facts["config_model_type"] = config.get("model_type")
    tok_cfg = hf.maybe_json(folder, "tokenizer_config.json")
    special_map = hf.maybe_json(folder, "special_tokens_map.json")
    gen_cfg = hf.maybe_json(folder, "generation_config.json")
    _resolve_family(ctx, model_family)
    if ctx.family is None:
        name_or_path = config.get("_name_or_path")
        _infer_family(ctx, [(ctx.loc.repo_id or "", "hub id"),
                            (ctx.loc.name_hint if not ctx.loc.repo_id else "", "folder name"),
                            (name_or_path if isinstance(name_or_path, str) else "", "config.json _name_or_path")],
                      archs)
    name = _model_name(ctx, model_name)
    doc: dict[str, Any] = {"version": 2, "model_name": name}

    # ---- family name written into the spec
    if ctx.family_spec is not None and ctx.family in _builtins("LLM"):
        doc["model_family"] = name
        ctx.src("model_family", f"model_name (a custom LLM's family may not be a built-in name; fallback facts "
                                f"from built-in {ctx.family!r})")
    elif ctx.family:
        doc["model_family"] = ctx.family
        ctx.src("model_family", "model_family argument")
    else:
        doc["model_family"] = name
        ctx.src("model_family", "model_name (no model_family given and no built-in family matched)")

    # ---- context length
    found = hf.context_length(config)
    if found is None and tok_cfg and isinstance(tok_cfg.get("model_max_length"), int) \
            and 0 < tok_cfg["model_max_length"] < hf.SENTINEL_CONTEXT:
        found = tok_cfg["model_max_length"], "tokenizer_config.json model_max_length"
    if found is None and ctx.family_spec is not None and ctx.family_spec.context_length:
        found = ctx.family_spec.context_length, ctx.family_label
    if found is None:
        found = 2048, ASSUMED
        ctx.warn("no context length in config.json or tokenizer_config.json: context_length assumed 2048")
    doc["context_length"] = found[0]
    ctx.src("context_length", found[1])

    # ---- tokens
    table = hf.TokenTable(folder, tok_cfg)
    eos_tok = hf.special_token("eos_token", tok_cfg, special_map)
    bos_tok = hf.special_token("bos_token", tok_cfg, special_map)
    for key in ("bos_token", "eos_token", "pad_token", "unk_token"):
        tok = hf.special_token(key, tok_cfg, special_map)
        if tok:
            ctx.special_tokens[key] = tok[0]
    if bos_tok is None and isinstance(config.get("bos_token_id"), int):
        text = table.text(config["bos_token_id"]) if tok_cfg or (folder / "tokenizer.json").is_file() else None
        if text:
            ctx.special_tokens["bos_token"] = text
    text_cfg = config.get("text_config") if isinstance(config.get("text_config"), dict) else None
    groups = [(hf.eos_ids(gen_cfg), "generation_config.json eos_token_id"),
              (hf.eos_ids(config) or hf.eos_ids(text_cfg), "config.json eos_token_id")]
    if eos_tok is not None:
        eos_id = table.id_of(eos_tok[0])
        if eos_id is not None:
            groups.append(([eos_id], f"{eos_tok[1]} eos_token {eos_tok[0]!r}"))
    all_ids = [i for g, _ in groups for i in g]
    texts = {i: table.text(i) for i in all_ids} if (tok_cfg or (folder / "tokenizer.json").is_file()) else {}
    if eos_tok is not None and "eos_token" not in ctx.special_tokens:
        ctx.special_tokens["eos_token"] = eos_tok[0]
    if "eos_token" not in ctx.special_tokens and all_ids and texts.get(all_ids[0]):
        ctx.special_tokens["eos_token"] = texts[all_ids[0]]

    # ---- template, abilities, reasoning
    template, template_where = _template(ctx, hf.chat_template(folder, tok_cfg))
    if template:
        ctx.template_opens_reasoning = "<think>" in template and _opens_reasoning(template, ctx.special_tokens)
    start, end = _reasoning_tags(ctx, template, template_where)
    vision = next((f"config.json {k}" for k in _VISION_KEYS if config.get(k)), None)
    if vision is None:
        for fname in ("preprocessor_config.json", "processor_config.json"):
            if fname in names:
                data = hf.maybe_json(folder, fname) or {}
                blob = json.dumps(data)
                if "image_processor" in blob or "image_mean" in blob or "ImageProcessor" in blob:
                    vision = f"{fname} (an image processor)"
                    break
    audio = "config.json audio_config" if isinstance(config.get("audio_config"), dict) else None
    doc["model_ability"] = _llm_abilities(ctx, template, template_where, vision, audio,
                                          ctx.sources.get("reasoning_start_tag"))
    fam = ctx.family_spec
    doc["model_lang"] = _languages(ctx, folder, "model_lang",
                                   stated=[config["language"]] if isinstance(config.get("language"), str) else None,
                                   stated_where="config.json language",
                                   family_value=fam.model_lang if fam is not None else None)
    if template:
        doc["chat_template"] = template
    ids, stop = _stops(ctx, groups, texts, eos_tok)
    if ids:
        doc["stop_token_ids"] = ids
    if stop:
        doc["stop"] = stop
    if start and end:
        doc["reasoning_start_tag"], doc["reasoning_end_tag"] = start, end
    if archs:
        doc["architectures"] = archs
        ctx.src("architectures", "config.json architectures")
    if fam is not None and getattr(fam, "tool_parser", None) and "tools" in doc["model_ability"]:
        doc["tool_parser"] = fam.tool_parser
        ctx.src("tool_parser", ctx.family_label)

    # ---- the model_specs entry
    entry: dict[str, Any] = {}
    mlx = config.get("quantization") if isinstance(config.get("quantization"), dict) else None
    if mlx is not None and not (isinstance(mlx.get("bits"), int) and "group_size" in mlx):
        mlx = None
    quant = None if mlx is not None else hf.quantization_of(config, folder)
    p = "model_specs[0]."
    if quant is not None:
        ctx.facts["quantization_method"] = quant.method
        if quant.model_format is None:
            ctx.warn(f"quantization method {quant.method!r} (config.json quantization_config) is not one Xinference "
                     "names; model_format set to pytorch, check that your engine can load it")
            entry["model_format"], entry["quantization"] = "pytorch", quant.quantization
        else:
            entry["model_format"], entry["quantization"] = quant.model_format, quant.quantization
        ctx.src(p + "model_format", quant.source)
        ctx.src(p + "quantization", quant.source)
    elif mlx is not None:   # mlx_lm writes {"group_size": 64, "bits": 4} as "quantization" (and _config)
        entry["model_format"], entry["quantization"] = "mlx", f"{mlx['bits']}bit"
        ctx.src(p + "model_format", "config.json quantization (an MLX export)")
        ctx.src(p + "quantization", f"config.json quantization.bits={mlx['bits']}")
        quant = hf.Quantization("mlx", "mlx", f"{mlx['bits']}bit", mlx["bits"], "config.json quantization")
    else:
        entry["model_format"], entry["quantization"] = "pytorch", "none"
        ctx.src(p + "model_format", "no quantization_config in config.json")
        ctx.src(p + "quantization", "no quantization_config in config.json")
    weights = hf.weight_info(folder, config, quant)
    for w in weights.warnings:
        ctx.warn(w)
    params, counted_from = weights.parameters, weights.source
    if params is None:
        params = hf.estimate_parameters(config)
        counted_from = "an estimate from config.json sizes (no weight files)"
        if params is not None:
            ctx.warn("no weight files in the folder: the size is estimated from config.json")
    ctx.facts["weight_files"] = weights.files
    entry["model_size_in_billions"] = _choose_size(ctx, p + "model_size_in_billions", params, counted_from,
                                                   ctx.loc.name_hint, _family_sizes(fam) if fam is not None else [])
    active = _NAME_ACTIVE.findall(ctx.loc.name_hint)
    if active:
        entry["activated_size_in_billions"] = size_form(float(active[0].replace("_", ".")))
        ctx.src(p + "activated_size_in_billions", f"name {ctx.loc.name_hint!r}")
    _location_fields(ctx, entry, p)
    doc["model_specs"] = [entry]
    return doc


# ================================================================================================
# GGUF
# ================================================================================================

_GGUF_EMBEDDING_ARCHS = {"bert", "nomic-bert", "nomic-bert-moe", "jina-bert-v2", "jina-bert-v3", "modern-bert",
                         "xlm-roberta", "t5encoder"}


def _parse_gguf(ctx: _Ctx, path: Path, wanted_type: Optional[str], model_family: Optional[str],
                model_name: Optional[str]) -> ParsedModel:
    from .gguf import read_gguf, split_siblings

    info = read_gguf(path)
    ctx.facts.update(architecture=info.architecture, gguf_name=info.name, file_type=info.file_type_name,
                     tensor_count=info.tensor_count)
    if wanted_type is None:
        if info.architecture in _GGUF_EMBEDDING_ARCHS or info.pooling_type:
            ctx.model_type = "embedding"
            ctx.src("model_type", f"detected: GGUF general.architecture {info.architecture!r} (an encoder)")
        else:
            ctx.model_type = "LLM"
            ctx.src("model_type", f"detected: a GGUF file (general.architecture {info.architecture!r})")
    else:
        ctx.model_type = wanted_type
        ctx.src("model_type", "model_type argument")
        if wanted_type not in ("LLM", "embedding"):
            raise ParseError(f"{path}: a GGUF file cannot be parsed as a {wanted_type} model (LLM or embedding only)")
    params = info.parameters
    counted_from = "the GGUF tensor shapes"
    if info.split_count > 1:
        siblings = split_siblings(path)
        present = [s for s in siblings if s.is_file()]
        if len(present) < len(siblings):
            ctx.warn(f"{path.name} is part 1 of a {info.split_count}-file split GGUF and "
                     f"{len(siblings) - len(present)} part(s) are missing")
        for s in present:
            if s != path:
                params += read_gguf(s).parameters
        counted_from += f" of {len(present)} split files"
    if ctx.model_type == "embedding":
        return _finish(ctx, _gguf_embedding(ctx, info, model_family, model_name))

    _resolve_family(ctx, model_family)
    if ctx.family is None:
        _infer_family(ctx, [(ctx.loc.repo_id or "", "hub id"), (ctx.loc.name_hint, "GGUF file name"),
                            (info.name or "", "GGUF general.name")])
    name = _model_name(ctx, model_name)
    doc: dict[str, Any] = {"version": 2, "model_name": name}
    fam = ctx.family_spec
    if fam is not None and ctx.family in _builtins("LLM"):
        doc["model_family"] = name
        ctx.src("model_family", f"model_name (a custom LLM's family may not be a built-in name; fallback facts "
                                f"from built-in {ctx.family!r})")
    else:
        doc["model_family"] = ctx.family or name
        ctx.src("model_family", "model_family argument" if ctx.family else "model_name (no model_family given)")
    arch = info.architecture or "?"
    if isinstance(info.context_length, int) and info.context_length > 0:
        doc["context_length"] = info.context_length
        ctx.src("context_length", f"GGUF {arch}.context_length")
    elif fam is not None and fam.context_length:
        doc["context_length"] = fam.context_length
        ctx.src("context_length", ctx.family_label)
    else:
        doc["context_length"] = 2048
        ctx.src("context_length", ASSUMED)
        ctx.warn("the GGUF header has no context_length: assumed 2048")
    bos = info.token_text(info.bos_token_id)
    eos = info.token_text(info.eos_token_id)
    if bos is not None:
        ctx.special_tokens["bos_token"] = bos
    if eos is not None:
        ctx.special_tokens["eos_token"] = eos
    own = (info.chat_template, "GGUF tokenizer.chat_template") if info.chat_template else None
    template, template_where = _template(ctx, own)
    if template:
        ctx.template_opens_reasoning = "<think>" in template and _opens_reasoning(template, ctx.special_tokens)
    start, end = _reasoning_tags(ctx, template, template_where)
    doc["model_ability"] = _llm_abilities(ctx, template, template_where, None, None,
                                          ctx.sources.get("reasoning_start_tag"))
    doc["model_lang"] = _languages(ctx, None, "model_lang", stated=info.languages,
                                   stated_where="GGUF general.languages",
                                   family_value=fam.model_lang if fam is not None else None)
    if template:
        doc["chat_template"] = template
    groups = []
    for key in ("eos", "eot", "eom"):
        tid = getattr(info, f"{key}_token_id")
        if tid is not None:
            groups.append(([tid], f"GGUF tokenizer.ggml.{key}_token_id"))
    ids, stop = _stops(ctx, groups, dict(info.tokens), None)
    if ids:
        doc["stop_token_ids"] = ids
    if stop:
        doc["stop"] = stop
    if start and end:
        doc["reasoning_start_tag"], doc["reasoning_end_tag"] = start, end
    p = "model_specs[0]."
    entry: dict[str, Any] = {"model_format": "ggufv2"}
    ctx.src(p + "model_format", "a GGUF file")
    quant = info.file_type_name
    if quant:
        ctx.src(p + "quantization", f"GGUF general.file_type={info.file_type}")
    else:
        m = re.search(r"(?i)(?:^|[-_.])((?:ud-)?i?q\d[a-z0-9_]*|f16|bf16|f32)$", ctx.loc.name_hint)
        quant = m.group(1) if m else "none"
        ctx.src(p + "quantization", "GGUF file name" if m else ASSUMED)
    entry["quantization"] = quant
    label_sizes = sizes_in_name(info.size_label) if isinstance(info.size_label, str) else []
    hint = ctx.loc.name_hint if sizes_in_name(ctx.loc.name_hint) or not label_sizes else info.size_label
    entry["model_size_in_billions"] = _choose_size(ctx, p + "model_size_in_billions", params or None,
                                                   counted_from, hint, _family_sizes(fam) if fam is not None else [])
    _location_fields(ctx, entry, p)
    doc["model_specs"] = [entry]
    return _finish(ctx, doc)


def _gguf_embedding(ctx: _Ctx, info: Any, model_family: Optional[str], model_name: Optional[str]) -> dict:
    _resolve_family(ctx, model_family)
    if ctx.family is None:
        _infer_family(ctx, [(ctx.loc.repo_id or "", "hub id"), (ctx.loc.name_hint, "GGUF file name"),
                            (info.name or "", "GGUF general.name")])
    name = _model_name(ctx, model_name)
    fam = ctx.family_spec
    doc: dict[str, Any] = {"version": 2, "model_name": name}
    arch = info.architecture or "?"
    if info.embedding_length:
        doc["dimensions"] = info.embedding_length
        ctx.src("dimensions", f"GGUF {arch}.embedding_length")
    elif fam is not None:
        doc["dimensions"] = fam.dimensions
        ctx.src("dimensions", ctx.family_label)
    else:
        raise ParseError(f"{info.path}: the GGUF header has no {arch}.embedding_length: cannot tell the dimensions")
    if info.context_length:
        doc["max_tokens"] = info.context_length
        ctx.src("max_tokens", f"GGUF {arch}.context_length")
    elif fam is not None:
        doc["max_tokens"] = fam.max_tokens
        ctx.src("max_tokens", ctx.family_label)
    else:
        doc["max_tokens"] = 512
        ctx.src("max_tokens", ASSUMED)
        ctx.warn("the GGUF header has no context_length: max_tokens assumed 512")
    doc["language"] = _languages(ctx, None, "language", stated=info.languages, stated_where="GGUF general.languages",
                                 family_value=fam.language if fam is not None else None, use_name=True)
    entry = {"model_format": "ggufv2", "quantization": info.file_type_name or "none"}
    ctx.src("model_specs[0].model_format", "a GGUF file")
    ctx.src("model_specs[0].quantization", f"GGUF general.file_type={info.file_type}")
    _location_fields(ctx, entry, "model_specs[0].")
    doc["model_specs"] = [entry]
    return doc


# ================================================================================================
# Embedding and rerank
# ================================================================================================

def _text_entry(ctx: _Ctx, folder: Path, names: set[str], config_dir: Path) -> dict:
    p = "model_specs[0]."
    entry: dict[str, Any] = {"model_format": "pytorch", "quantization": "none"}
    has_torch = any(n.endswith((".safetensors", ".bin")) for n in hf.file_names(config_dir)) or any(
        n.endswith((".safetensors", ".bin")) for n in names)
    if not has_torch and ("onnx" in names or "model.onnx" in names):
        entry["model_format"] = "onnx"
        ctx.src(p + "model_format", "only ONNX weights in the folder")
    else:
        ctx.src(p + "model_format", "transformers weights" if has_torch else "default (no weight files found)")
        if not has_torch:
            ctx.warn("no weight files (*.safetensors, *.bin) in the folder: the model cannot be launched from it")
    _location_fields(ctx, entry, p)
    return entry


def _max_tokens(ctx: _Ctx, folder: Path, config_dir: Path, config: dict, sbert: Optional[dict],
                field_name: str = "max_tokens") -> Optional[int]:
    if sbert and isinstance(sbert.get("max_seq_length"), int) and sbert["max_seq_length"] > 0:
        rel = os.path.relpath(config_dir / "sentence_bert_config.json", folder)
        ctx.src(field_name, f"{rel} max_seq_length")
        return sbert["max_seq_length"]
    tok = hf.maybe_json(config_dir, "tokenizer_config.json")
    if tok and isinstance(tok.get("model_max_length"), int) and 0 < tok["model_max_length"] < hf.SENTINEL_CONTEXT:
        ctx.src(field_name, "tokenizer_config.json model_max_length")
        return tok["model_max_length"]
    mpe = config.get("max_position_embeddings")
    if isinstance(mpe, int) and mpe > 0:
        if config.get("model_type") in _ROBERTA_LIKE and mpe > 2:
            ctx.src(field_name, f"config.json max_position_embeddings {mpe} − 2 (RoBERTa-style position offset)")
            return mpe - 2
        ctx.src(field_name, "config.json max_position_embeddings")
        return mpe
    found = hf.context_length(config)
    if found:
        ctx.src(field_name, found[1])
        return found[0]
    return None


def _pooling_dims(folder: Path, modules: Optional[list[dict]]) -> Optional[tuple[int, str]]:
    dirs = _module_dir(folder, modules, "Pooling") or sorted(
        (p for p in folder.glob("*_Pooling") if p.is_dir()), key=lambda p: p.name)
    for d in dirs:
        cfg = hf.maybe_json(d, "config.json")
        if not cfg or not isinstance(cfg.get("word_embedding_dimension"), int):
            continue
        dim = cfg["word_embedding_dimension"]
        modes = [k for k in ("pooling_mode_cls_token", "pooling_mode_mean_tokens", "pooling_mode_max_tokens",
                             "pooling_mode_mean_sqrt_len_tokens", "pooling_mode_weightedmean_tokens",
                             "pooling_mode_lasttoken") if cfg.get(k)]
        rel = os.path.relpath(d / "config.json", folder)
        if len(modes) > 1:
            return dim * len(modes), f"{rel} word_embedding_dimension {dim} × {len(modes)} pooling modes"
        return dim, f"{rel} word_embedding_dimension"
    return None


def _dense_dims(folder: Path, modules: Optional[list[dict]]) -> Optional[tuple[int, str]]:
    dirs = _module_dir(folder, modules, "Dense") or sorted(
        (p for p in folder.glob("*_Dense") if p.is_dir()), key=lambda p: p.name)
    found = None
    for d in dirs:
        cfg = hf.maybe_json(d, "config.json")
        if cfg and isinstance(cfg.get("out_features"), int):
            found = cfg["out_features"], f"{os.path.relpath(d / 'config.json', folder)} out_features"
    return found


def _text_family(ctx: _Ctx, model_family: Optional[str]) -> None:
    _resolve_family(ctx, model_family)
    if ctx.family is None:
        _infer_family(ctx, [(ctx.loc.repo_id or "", "hub id"),
                            (ctx.loc.name_hint if not ctx.loc.repo_id else "", "folder name")])


def _embedding_from_dir(ctx: _Ctx, folder: Path, names: set[str], config: dict, model_family: Optional[str],
                        model_name: Optional[str], *, modules: Optional[list[dict]] = None,
                        config_dir: Optional[Path] = None, **_: Any) -> dict:
    config_dir = config_dir or folder
    _text_family(ctx, model_family)
    fam = ctx.family_spec
    name = _model_name(ctx, model_name)
    doc: dict[str, Any] = {"version": 2, "model_name": name}
    dims = _dense_dims(folder, modules) or _pooling_dims(folder, modules)
    if dims is None:
        hidden = config.get("hidden_size") or config.get("d_model") or config.get("dim")
        if isinstance(hidden, int):
            dims = hidden, "config.json hidden_size"
        elif fam is not None:
            dims = fam.dimensions, ctx.family_label
    if dims is None:
        raise ParseError(f"{config_dir / 'config.json'}: cannot tell the embedding size (no Dense or Pooling module, "
                         "no hidden_size)")
    doc["dimensions"] = dims[0]
    ctx.src("dimensions", dims[1])
    sbert = hf.maybe_json(config_dir, "sentence_bert_config.json")
    max_tokens = _max_tokens(ctx, folder, config_dir, config, sbert)
    if max_tokens is None:
        if fam is not None:
            max_tokens = fam.max_tokens
            ctx.src("max_tokens", ctx.family_label)
        else:
            max_tokens = 512
            ctx.src("max_tokens", ASSUMED)
            ctx.warn("no max_seq_length / model_max_length / max_position_embeddings: max_tokens assumed 512")
    doc["max_tokens"] = max_tokens
    doc["language"] = _languages(ctx, folder, "language", family_value=fam.language if fam is not None else None,
                                 use_name=True)
    ctx.facts["architectures"] = _architectures(config)
    doc["model_specs"] = [_text_entry(ctx, folder, names, config_dir)]
    return doc


def _rerank_from_dir(ctx: _Ctx, folder: Path, names: set[str], config: dict, model_family: Optional[str],
                     model_name: Optional[str], *, config_dir: Optional[Path] = None, **_: Any) -> dict:
    config_dir = config_dir or folder
    _text_family(ctx, model_family)
    fam = ctx.family_spec
    name = _model_name(ctx, model_name)
    doc: dict[str, Any] = {"version": 2, "model_name": name}
    archs = _architectures(config)
    ctx.facts["architectures"] = archs
    low = " ".join(archs).lower() + " " + ctx.loc.name_hint.lower()
    if fam is not None and fam.type and fam.type != "unknown":
        doc["type"] = fam.type   # how Xinference runs the family, whatever the head looks like
        ctx.src("type", ctx.family_label)
    elif "layerwise" in low:
        doc["type"] = "LLM-based layerwise"
        ctx.src("type", f"'layerwise' in the architecture / name ({archs})")
    elif any(_LLM_ARCH.search(a) for a in archs):
        doc["type"] = "LLM-based"
        ctx.src("type", f"config.json architectures {archs} (a causal LM)")
    elif any(a.endswith("ForSequenceClassification") for a in archs) or \
            (hf.maybe_json(folder, "config_sentence_transformers.json") or {}).get("model_type") == "CrossEncoder":
        doc["type"] = "normal"
        ctx.src("type", f"config.json architectures {archs} (a cross-encoder)")
    elif fam is not None:
        doc["type"] = fam.type
        ctx.src("type", ctx.family_label)
    else:
        doc["type"] = "unknown"
        ctx.src("type", ASSUMED)
    sbert = hf.maybe_json(config_dir, "sentence_bert_config.json")
    max_tokens = _max_tokens(ctx, folder, config_dir, config, sbert)
    if max_tokens is None and fam is not None and fam.max_tokens:
        max_tokens = fam.max_tokens
        ctx.src("max_tokens", ctx.family_label)
    if max_tokens is not None:
        doc["max_tokens"] = max_tokens
    else:
        ctx.warn("no max_seq_length / model_max_length / max_position_embeddings: max_tokens left unset")
    doc["language"] = _languages(ctx, folder, "language", family_value=fam.language if fam is not None else None,
                                 use_name=True)
    doc["model_specs"] = [_text_entry(ctx, folder, names, config_dir)]
    return doc


# ================================================================================================
# Image and audio
# ================================================================================================

_IMG2IMG_CAPABLE = {"StableDiffusionPipeline", "StableDiffusionXLPipeline", "StableDiffusion3Pipeline",
                    "FluxPipeline", "KolorsPipeline", "StableDiffusionXLControlNetPipeline"}


def _image_abilities(class_name: str) -> list[str]:
    low = class_name.lower()
    if "inpaint" in low:
        return ["inpainting"]
    if "img2img" in low or "image2image" in low or "edit" in low:
        return ["image2image"]
    if class_name in _IMG2IMG_CAPABLE:
        return ["text2image", "image2image"]
    return ["text2image"]


def _image_from_dir(ctx: _Ctx, folder: Path, names: set[str], config: dict, model_family: Optional[str],
                    model_name: Optional[str], **_: Any) -> dict:
    index = hf.read_json_object(folder / "model_index.json", "diffusers pipeline index") \
        if "model_index.json" in names else None
    if index is None:
        raise ParseError(f"{folder}: no model_index.json: not a diffusers pipeline folder")
    class_name = str(index.get("_class_name") or "")
    if not class_name:
        raise ParseError(f"{folder / 'model_index.json'}: has no _class_name: cannot tell the pipeline")
    ctx.facts["pipeline_class"] = class_name
    _resolve_family(ctx, model_family)
    if ctx.family is None:
        _infer_family(ctx, [(ctx.loc.repo_id or "", "hub id"),
                            (ctx.loc.name_hint if not ctx.loc.repo_id else "", "folder name")])
    fam = ctx.family_spec
    name = _model_name(ctx, model_name)
    doc: dict[str, Any] = {"version": 2, "model_name": name}
    if fam is not None:
        doc["model_family"] = fam.model_family
        ctx.src("model_family", ctx.family_label)
    elif ctx.family:
        doc["model_family"] = ctx.family
        ctx.src("model_family", "model_family argument")
    elif class_name.endswith("Pipeline"):
        doc["model_family"] = "stable_diffusion"
        ctx.src("model_family", f"model_index.json _class_name {class_name!r} (a diffusers pipeline)")
    else:
        raise ParseError(f"{folder / 'model_index.json'}: _class_name {class_name!r} is not a diffusers pipeline; "
                         "pass model_family=...")
    abilities = _image_abilities(class_name)
    if fam is not None and fam.model_ability:
        abilities = list(fam.model_ability)
        ctx.src("model_ability", ctx.family_label)
    else:
        ctx.src("model_ability", f"model_index.json _class_name {class_name!r}")
    doc["model_ability"] = abilities
    if fam is not None:
        for key in ("default_model_config", "default_generate_config"):
            value = getattr(fam, key, None)
            if value:
                doc[key] = dict(value)
                ctx.src(key, ctx.family_label)
    _location_fields(ctx, doc, "")
    return doc


def _audio_from_dir(ctx: _Ctx, folder: Path, names: set[str], config: dict, model_family: Optional[str],
                    model_name: Optional[str], **_: Any) -> dict:
    mtype = str(config.get("model_type") or "")
    archs = _architectures(config)
    ctx.facts.update(architectures=archs, config_model_type=mtype)
    _resolve_family(ctx, model_family)
    if ctx.family is None:
        _infer_family(ctx, [(ctx.loc.repo_id or "", "hub id"),
                            (ctx.loc.name_hint if not ctx.loc.repo_id else "", "folder name")])
    fam = ctx.family_spec
    name = _model_name(ctx, model_name)
    doc: dict[str, Any] = {"version": 2, "model_name": name}
    known = AUDIO_TYPES.get(mtype)
    if known is None:
        arch = next((a for a in archs if _AUDIO_ARCH.search(a)), "")
        if arch:
            known = (mtype or arch, ["audio2text"] if arch.endswith(("ForCTC", "ForSpeechSeq2Seq")) else ["text2audio"])
    if fam is not None:
        doc["model_family"] = fam.model_family
        ctx.src("model_family", ctx.family_label)
    elif ctx.family:
        doc["model_family"] = ctx.family
        ctx.src("model_family", "model_family argument")
    elif known:
        doc["model_family"] = known[0]
        ctx.src("model_family", f"config.json model_type {mtype!r}")
    else:
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
    langs: Optional[list[str]] = None
    lang_where = ""
    lang_to_id = gen.get("lang_to_id")
    if isinstance(lang_to_id, dict) and lang_to_id:
        # in token-id order: Whisper's own language order (en, zh, de, es, …)
        ordered = sorted(lang_to_id.items(), key=lambda kv: kv[1] if isinstance(kv[1], int) else 1 << 60)
        langs = [k.strip("<|>") for k, _ in ordered]
        lang_where = "generation_config.json lang_to_id"
    elif isinstance(tok.get("language"), str) and tok["language"]:
        code = tok["language"].lower()
        langs = [_ISO3.get(code, code)]
        lang_where = "tokenizer_config.json language"
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
    doc["language"] = _languages(ctx, folder, "language", stated=langs, stated_where=lang_where,
                                 family_value=fam.language if fam is not None else None)
    if fam is not None:
        for key in ("default_model_config", "default_transcription_config", "engine"):
            value = getattr(fam, key, None)
            if value:
                doc[key] = value
                ctx.src(key, ctx.family_label)
    _location_fields(ctx, doc, "")
    return doc
