"""Names, families and sizes: the helpers every model type's builder shares.

* names: the default model_name from the repo / folder / GGUF file name (a built-in's name gets
  "custom-"), the model_name and model_family arguments checked;
* families: ``model_family`` resolved (built-in, registered custom, new, or a typo of a built-in) or
  inferred from the model ids of the built-ins (:func:`family_of` does both, for every type);
* sizes: what a name states ("0.5B", "135M", "A3B") and the size written into the spec.
"""
from __future__ import annotations

import difflib
import math
import re
from typing import Any, Optional, Union

from ..errors import ParseError
from ..metadata.quant import strip_gguf_quantization
from ..metadata.sizes import round_billions, size_form
from .context import FAMILY_DEFAULT, Ctx

def sanitize_name(text: str) -> str:
    """A valid model name from a folder or repo name: other characters become "-"."""
    name = re.sub(r"[^A-Za-z0-9_.\-]+", "-", text)
    name = re.sub(r"\.{2,}", ".", name)
    name = re.sub(r"-{2,}", "-", name)
    name = name.strip("-_.")
    return name[:200].rstrip("-_.") or "model"


def check_name(value: str, what: str) -> str:
    from ..spec import check_model_name

    try:
        return check_model_name(value, what)
    except ValueError as exc:
        raise ParseError(f"{what}: {exc}") from None


def builtins_of(model_type: str) -> dict:
    from ..registry import builtin_specs

    return builtin_specs(model_type)


def choose_model_name(ctx: Ctx, model_name: Optional[str]) -> str:
    builtins = builtins_of(ctx.model_type)
    if model_name is not None:
        name = check_name(model_name, "model_name")
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


# ------------------------------------------------------------------------------------------------
# Families
# ------------------------------------------------------------------------------------------------

_ID_INDEX: dict[str, dict[str, str]] = {}


def id_index(model_type: str) -> dict[str, str]:
    """lower-cased model id and repo basename (with "-GGUF" dropped) → built-in name."""
    if model_type not in _ID_INDEX:
        index: dict[str, str] = {}
        for name, spec in builtins_of(model_type).items():
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


def infer_family(ctx: Ctx, candidates: list[tuple[str, str]], architectures: Optional[list[str]] = None) -> None:
    """Find a built-in whose model id matches one of ``candidates`` ((text, where) pairs)."""
    index = id_index(ctx.model_type)
    builtins = builtins_of(ctx.model_type)
    expanded = []
    for text, where in candidates:
        if text and "--" in text and "/" not in text:   # "Org--Name" folders (cache-style naming)
            expanded.append((text.replace("--", "/", 1), where))
        expanded.append((text, where))
    for text, where in expanded:
        if not text:
            continue
        keys = [text.lower(), text.lower().rsplit("/", 1)[-1]]
        keys.append(strip_gguf_quantization(keys[-1]))
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


def resolve_family(ctx: Ctx, model_family: Optional[str]) -> None:
    """Set ctx.family / family_spec from the model_family argument (see the module docstring)."""
    if model_family is None:
        return
    if not isinstance(model_family, str) or not model_family.strip():
        raise ParseError("model_family must be a non-empty name such as 'qwen2.5-instruct'")
    model_family = model_family.strip()
    t = ctx.model_type
    builtins = builtins_of(t)
    exact = model_family if model_family in builtins else next(
        (n for n in builtins if n.lower() == model_family.lower()), None)
    if t in ("image", "audio"):
        if exact:
            ctx.family, ctx.family_spec = exact, builtins[exact]
            ctx.family_label = f"{FAMILY_DEFAULT} ({exact})"
            ctx.src("family", f"model_family argument: built-in {t} model {exact!r}")
            return
        if t == "image":
            check_name(model_family, "model_family")
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
    check_name(model_family, "model_family")
    custom = custom_family_spec(model_family)
    if custom is not None:
        ctx.family, ctx.family_spec = model_family, custom
        ctx.family_label = f"{FAMILY_DEFAULT} ({model_family}: registered {custom.model_name!r})"
        ctx.src("family", f"model_family argument: registered custom family (model {custom.model_name!r})")
        return
    typo = typo_of(model_family, list(builtins))
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


def name_candidates(ctx: Ctx) -> list[tuple[str, str]]:
    """(text, where) pairs a built-in family is inferred from: the hub id, else the folder name; a
    GGUF file's name always."""
    if ctx.loc.kind == "gguf":
        return [(ctx.loc.repo_id or "", "hub id"), (ctx.loc.name_hint, "GGUF file name")]
    return [(ctx.loc.repo_id or "", "hub id"), (ctx.loc.name_hint if not ctx.loc.repo_id else "", "folder name")]


def family_of(ctx: Ctx, model_family: Optional[str], more: Optional[list[tuple[str, str]]] = None,
              architectures: Optional[list[str]] = None) -> Any:
    """The fallback family of every model type: the model_family argument resolved, else a built-in
    inferred from the names (:func:`name_candidates` + ``more``). Returns ctx.family_spec."""
    resolve_family(ctx, model_family)
    if ctx.family is None:
        infer_family(ctx, name_candidates(ctx) + list(more or []), architectures)
    return ctx.family_spec


def typo_of(name: str, builtins: list[str]) -> Optional[str]:
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


def custom_family_spec(family: str) -> Any:
    """The registered custom LLM whose model_family is ``family``, if any."""
    try:
        from ..registry import get_registry

        for spec in get_registry().custom("LLM").values():
            if getattr(spec, "model_family", None) == family:
                return spec
    except Exception:  # noqa: BLE001 - an unreadable store must not break parsing
        return None
    return None


# ------------------------------------------------------------------------------------------------
# Sizes
# ------------------------------------------------------------------------------------------------

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


def choose_size(ctx: Ctx, path: str, parameters: Optional[int], counted_from: str, name_hint: str,
                family_sizes: list[float]) -> Union[int, str]:
    """model_size_in_billions: the size the name states when the count agrees (0.6–1.6×), else the
    family's nearest size (0.75–1.35×), else the count rounded; the choice goes into ctx.sources."""
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
                     "model.safetensors.index.json, pytorch_model*.bin, GGUF tensors), no size in the name and no "
                     "architecture sizes (config.json, GGUF header) to estimate from")


def activated_size(name: str) -> Optional[float]:
    """The activated parameters (billions) a MoE name states: "Qwen3-30B-A3B" → 3.0."""
    found = _NAME_ACTIVE.findall(name)
    return float(found[0].replace("_", ".")) if found else None


def family_sizes(spec: Any) -> list[float]:
    """The sizes (billions) of a family's spec entries, sorted."""
    from ..spec import size_to_float

    out = []
    for entry in getattr(spec, "model_specs", None) or []:
        value = size_to_float(getattr(entry, "model_size_in_billions", None))
        if value:
            out.append(value)
    return sorted(set(out))
