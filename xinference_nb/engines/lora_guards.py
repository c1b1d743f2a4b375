"""What a peft LoRA adapter may ask of the transformers engine, checked before peft runs.

peft trusts ``adapter_config.json``: it compiles its patterns with Python's ``re`` (which holds the GIL
while it backtracks: one hostile pattern stalls every thread of the kernel, a REST server included),
multiplies every output by ``lora_alpha / r`` and allocates what the config and the weight file's
header announce. The checks here bound all three:

* **Patterns** (``target_modules`` / ``exclude_modules`` given as a string, the keys of
  ``rank_pattern`` / ``alpha_pattern``, ``modules_to_save`` entries, ``layers_pattern``): each must be
  a regular expression of at most ``MAX_PATTERN_CHARS`` characters built from names (letters, digits,
  ``_``, ``-``), ``.``, escapes ``\\.`` ``\\d`` ``\\w`` ``\\s`` ``\\b`` (and their capitals), ``[...]`` sets
  of those, ``^``, ``$``, groups ``(...)`` / ``(?:...)`` with ``|`` alternatives, ``?`` after a group,
  and repeats (``*``, ``+``, ``?``, ``{m,n}``, lazy or not) on single characters only. No repeat of a
  group, no backreference or lookaround: those are what backtracks without end. Then its work is
  bounded: the number of ways a backtracking matcher can try it on one ``PATTERN_NAME_CHARS``-long
  module name (alternatives times the ways its repeats can share the name's characters), times its
  length, must stay under ``MAX_PATTERN_WORK``, measured on the exact expression peft compiles
  (peft wraps keys, e.g. ``(.*\\.)?(KEY)$``). ``re`` takes at most about 6 ns per unit of that
  bound, so one module name costs at most ~0.1 s (real patterns: microseconds) and the GIL changes
  hands between names. ``.*\\.(q_proj|v_proj)``, ``model\\.layers\\.\\d+\\.self_attn\\.(q_proj|k_proj)``
  and two ``.*`` pass; ``(.|.){1,23}Z`` (8 s and more), twenty ``.?`` or three ``.*`` in a row do not.
* **Scaling**: ``lora_alpha`` and the ``alpha_pattern`` values are finite numbers with
  ``|alpha / r|`` (``alpha / sqrt(r)`` with ``use_rslora``) at most ``MAX_LORA_SCALING``: a trained
  adapter uses 0.5 to 32 or so; past a few hundred its update dwarfs the base weights, and a NaN or
  1e308 turns every logit into NaN (empty greedy answers, failing sampled ones).
* **Size** (``adapter_fits_base``, on the loaded base model, before peft): every LoRA matrix of the
  weight file names a layer of the base model, has that layer's input / output width and a rank of
  at most ``min(in, out)`` (a higher rank is no LoRA, only more memory), and the adapter holds no more
  parameters than the base model. The header itself (shape × dtype = byte range, inside the file) is
  checked by ``metadata.safetensors``; together they bound what peft allocates by the base's size.
* **Match** (``dropped_weights``, after peft): peft silently ignores weights of layers the config
  does not target; the launch is refused instead (the adapter would be another one than it says).
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Optional

MAX_PATTERN_CHARS = 256
PATTERN_NAME_CHARS = 128      # the module-name length the work bound assumes (real ones are 20 to 70)
MAX_PATTERN_WORK = 20_000_000  # re takes at most ~6 ns per unit: <= 0.1 s per module name, worst case
MAX_LORA_SCALING = 1000.0
_NAME = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
_ESCAPES = frozenset(".dwsDWS-_")      # one-character escapes (\b and \B are zero-width)
_MAX_GROUP_DEPTH = 8
PATTERN_RULE = ("names (letters, digits, '_', '-'), '.', '\\.', '\\d', '\\w', '\\s', '\\b', [...] sets, '^', '$', "
                "groups (...) / (?:...) with '|', '?' after a group, and repeats (*, +, ?, {m,n}) on single "
                f"characters only, at most {MAX_PATTERN_CHARS} characters")


class _PatternRefused(ValueError):
    pass


class _Parser:
    """A recursive descent over the accepted subset, counting for a name of ``length`` characters:
    ``paths`` (product over sequences, sum over alternatives, the choices of each repeat),
    ``alts`` (product of the alternatives of every group) and ``repeats`` (repeats with a choice)."""

    def __init__(self, text: str, length: int):
        self.s, self.i, self.n = text, 0, length
        self.alts, self.repeats = 1, 0

    def fail(self, why: str) -> _PatternRefused:
        return _PatternRefused(f"{why} at character {self.i + 1}")

    def peek(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else ""

    def alternation(self, depth: int) -> int:
        total, branches = self.sequence(depth), 1
        while self.peek() == "|":
            self.i += 1
            total += self.sequence(depth)
            branches += 1
        self.alts *= branches
        return total

    def sequence(self, depth: int) -> int:
        paths = 1
        while self.peek() not in ("", "|", ")"):
            paths *= self.item(depth)
        return paths

    def item(self, depth: int) -> int:
        c = self.peek()
        if c == "(":
            if depth >= _MAX_GROUP_DEPTH:
                raise self.fail(f"groups nested more than {_MAX_GROUP_DEPTH} deep")
            self.i += 1
            if self.s.startswith("?:", self.i):
                self.i += 2
            elif self.peek() == "?":
                raise self.fail("a lookaround, named group or flag (?...)")
            inner = self.alternation(depth + 1)
            if self.peek() != ")":
                raise self.fail("an unclosed group")
            self.i += 1
            q = self.peek()
            if q == "?":
                self.i += 1
                if self.peek() == "?":
                    self.i += 1
                self.alts *= 2
                return 1 + inner
            if q in ("*", "+", "{"):
                raise self.fail("a repeat of a group")
            return inner
        if c in ("^", "$"):
            self.i += 1
            return self.no_repeat()
        if c == "\\":
            nxt = self.s[self.i + 1:self.i + 2]
            self.i += 2
            if nxt in ("b", "B"):
                return self.no_repeat()
            if nxt not in _ESCAPES:
                self.i -= 2
                raise self.fail(f"the escape \\{nxt}")
        elif c == "[":
            self.char_set()
        elif c == "." or c in _NAME:
            self.i += 1
        else:
            raise self.fail(f"the character {c!r}")
        return self.repeat()

    def no_repeat(self) -> int:
        if self.peek() in ("*", "+", "?", "{"):
            raise self.fail("a repeat of an anchor")
        return 1

    def char_set(self) -> None:
        self.i += 1
        if self.peek() == "^":
            self.i += 1
        members = 0
        while self.peek() != "]":
            c = self.peek()
            if c == "\\":
                if self.s[self.i + 1:self.i + 2] not in _ESCAPES:
                    raise self.fail(f"the escape \\{self.s[self.i + 1:self.i + 2]} in a set")
                self.i += 2
            elif c in _NAME or c == ".":
                self.i += 1
            elif c == "":
                raise self.fail("an unclosed [set]")
            else:
                raise self.fail(f"the character {c!r} in a set")
            members += 1
        if not members:
            raise self.fail("an empty [set]")
        self.i += 1

    def repeat(self) -> int:
        q = self.peek()
        if q in ("*", "+", "?"):
            self.i += 1
            low, high = {"*": (0, None), "+": (1, None), "?": (0, 1)}[q]
        elif q == "{":
            end = self.s.find("}", self.i)
            body = self.s[self.i + 1:end] if end > 0 else ""
            low_text, comma, high_text = body.partition(",")
            if not (low_text.isdigit() and len(low_text) <= 4 and (not high_text or (high_text.isdigit()
                                                                                    and len(high_text) <= 4))):
                raise self.fail("a '{' that is not a repeat {m}, {m,} or {m,n}")
            low = int(low_text)
            high = (int(high_text) if high_text else None) if comma else low
            if high is not None and high < low:
                raise self.fail("a repeat {m,n} with n < m")
            self.i = end + 1
        else:
            return 1
        if self.peek() == "?":
            self.i += 1
        if self.peek() in ("*", "+", "?", "{"):
            raise self.fail("a repeat of a repeat")
        top = self.n if high is None else min(high, self.n)
        choices = max(1, top - min(low, self.n) + 1)
        if choices > 1:
            self.repeats += 1
        return choices


def pattern_work(text: str, length: int = PATTERN_NAME_CHARS) -> int:
    """An upper bound on the steps ``re`` may take to match ``text`` against one ``length``-character
    name: (ways to try it) × (its length + the name's). ValueError (saying what and where) for an
    expression outside the accepted subset."""
    if len(text) > MAX_PATTERN_CHARS * 2 + 40:   # the caller checks the user's part; this is peft's wrapping
        raise _PatternRefused(f"over {MAX_PATTERN_CHARS} characters")
    parser = _Parser(text, length)
    paths = parser.alternation(0)
    if parser.peek() == ")":
        raise parser.fail("a ')' without its '('")
    # the repeats' counts add up to at most the name's length: C(length + repeats, repeats) ways
    paths = min(paths, parser.alts * math.comb(length + parser.repeats, parser.repeats))
    return paths * (len(text) + length)


def pattern_problem(user_part: str, compiled: Optional[str] = None) -> Optional[str]:
    """What is wrong with ``user_part`` as a pattern peft compiles as ``compiled`` (default: itself);
    None: it is in the accepted subset and its work is bounded."""
    if not isinstance(user_part, str):
        return f"must be a string, got {type(user_part).__name__}"
    if len(user_part) > MAX_PATTERN_CHARS:
        return f"is {len(user_part)} characters long; at most {MAX_PATTERN_CHARS} are accepted"
    try:
        work = pattern_work(user_part)        # where a refused construct is, in the user's own text
        if compiled is not None:
            work = pattern_work(compiled)
    except _PatternRefused as exc:
        return (f"{user_part!r:.80} is not accepted: it has {exc}. A pattern here may use {PATTERN_RULE} (Python's "
                "regex engine holds the GIL while it backtracks, so an unbounded pattern stalls the whole kernel)")
    if work > MAX_PATTERN_WORK:
        return (f"{user_part!r:.80} may take too long to match: matching it against one module name can take about "
                f"{work:.1e} steps of Python's regex engine (which holds the GIL meanwhile), and at most "
                f"{MAX_PATTERN_WORK:.0e} are accepted; use fewer repeats ('*', '+', '?', '{{m,n}}') in a row, or list "
                "the module names")
    return None


def _names(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple, set)):
        return list(value)
    return []


def config_patterns_problem(config: dict[str, Any]) -> Optional[str]:
    """The first pattern of an adapter_config.json that peft would compile and this engine refuses,
    with its key (None: all accepted). Each is checked as peft compiles it."""
    for key in ("target_modules", "exclude_modules"):
        value = config.get(key)
        if isinstance(value, str) and value != "all-linear":   # a string: re.fullmatch against every name
            problem = pattern_problem(value)
            if problem:
                return f"{key} {problem}"
        elif value is not None and not isinstance(value, (list, tuple)):
            return f"{key} must be a list of module names or one pattern string, got {type(value).__name__}"
        elif value is not None and not all(isinstance(v, str) for v in value):
            return f"{key} must be a list of module name strings"
    for key in ("rank_pattern", "alpha_pattern"):
        patterns = config.get(key) or {}
        if not isinstance(patterns, dict):
            return f"{key} must be an object of pattern → number, got {type(patterns).__name__}"
        for k in patterns:
            problem = pattern_problem(k, rf"(.*\.)?({k})$")
            if problem:
                return f"{key} key {problem}"
    for k in _names(config.get("modules_to_save")):
        problem = pattern_problem(k, rf"(^|.*\.){k}($|\..*)")
        if problem:
            return f"modules_to_save entry {problem}"
    for k in _names(config.get("layers_pattern")):
        problem = pattern_problem(k, rf"(?:^|.*?\.){k}\.(\d+)\.")
        if problem:
            return f"layers_pattern {problem}"
    return None


def _finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def scaling_problem(config: dict[str, Any]) -> Optional[str]:
    """What is wrong with the scale an adapter_config.json gives its update (None: fine); ranks are
    already checked to be positive integers."""
    rslora = config.get("use_rslora") is True
    rank = config.get("r", 8)
    ranks = config.get("rank_pattern") or {}
    alphas = {"lora_alpha": config.get("lora_alpha", 8),
              **{f"alpha_pattern[{k!r:.40}]": v for k, v in (config.get("alpha_pattern") or {}).items()}}
    low_rank = min([rank, *ranks.values()])     # the largest alpha / r any layer can get
    for field, alpha in alphas.items():
        if not _finite_number(alpha):
            return (f"sets {field}={alpha!r:.40}: it must be a finite number (every output of the adapter is "
                    "multiplied by it)")
        scaling = alpha / (math.sqrt(low_rank) if rslora else low_rank)
        if abs(scaling) > MAX_LORA_SCALING:
            what = "alpha / sqrt(r)" if rslora else "alpha / r"
            return (f"sets {field}={alpha:g}, a scaling {what} of {scaling:g} (rank {low_rank}); at most "
                    f"{MAX_LORA_SCALING:g} is accepted: trained adapters use 0.5 to about 32, and past that the "
                    "update dwarfs the base weights (1e308 or NaN turns every logit into NaN)")
    return None


# a LoRA matrix's key in peft's saved state dict: "<prefix><layer>.<suffix>"
_LORA_KEY_SUFFIXES = ((".lora_A.weight", "A"), (".lora_B.weight", "B"), (".lora_embedding_A", "A"),
                      (".lora_embedding_B", "B"), (".lora_B.bias", "bias"))
_PEFT_PREFIXES = ("base_model.model.", "base_model.")


def lora_layer(key: str, key_mapping: Optional[dict[str, str]] = None) -> Optional[tuple[str, str]]:
    """(the base model's layer, "A" / "B" / "bias") a LoRA tensor of a peft weight file belongs to;
    None for other tensors. ``key_mapping`` is the model's ``_checkpoint_conversion_mapping``, which
    peft applies to adapter keys too (transformers' renamed layers)."""
    import re

    suffix = next(((s, kind) for s, kind in _LORA_KEY_SUFFIXES if key.endswith(s)), None)
    if suffix is None:
        return None
    path = key[:-len(suffix[0])]
    prefix = next((p for p in _PEFT_PREFIXES if path.startswith(p)), "")
    path = path[len(prefix):]
    for pattern, replacement in (key_mapping or {}).items():   # as peft's load_peft_weights does
        path, n = re.subn(pattern, replacement, path)
        if n:
            break
    return path, suffix[1]


def _layer_widths(module: Any) -> Optional[tuple[int, int]]:
    """(inputs, outputs) of a layer peft can wrap: Linear (bitsandbytes' too), Embedding, Conv,
    transformers' Conv1D; None for other modules."""
    for a, b in (("in_features", "out_features"), ("num_embeddings", "embedding_dim"),
                 ("in_channels", "out_channels"), ("nx", "nf")):
        i, o = getattr(module, a, None), getattr(module, b, None)
        if isinstance(i, int) and isinstance(o, int):
            return i, o
    return None


def adapter_fits_base(model: Any, file_name: str, shapes: dict[str, list[int]]) -> tuple[Optional[str], set[str]]:
    """(what is wrong, the layers the file has LoRA matrices for) for an adapter's weight file (the
    shapes of its header) on the loaded base ``model``, before peft allocates anything: every matrix
    names a layer of the model, A is [rank, inputs], B [outputs, rank] of that layer, the rank is at
    most min(inputs, outputs), and the file holds no more parameters than the model."""
    mapping = getattr(model, "_checkpoint_conversion_mapping", None) or {}
    layers: dict[str, dict[str, list[int]]] = {}
    for key, shape in shapes.items():
        found = lora_layer(key, mapping if isinstance(mapping, dict) else {})
        if found is not None:
            layers.setdefault(found[0], {})[found[1]] = shape
    for path, mats in layers.items():
        try:
            module = model.get_submodule(path)
        except AttributeError:
            return (f"{file_name} has LoRA weights for layer {path!r}, which this base model does not have (peft "
                    "would drop them)"), set()
        widths = _layer_widths(module)
        a, b = mats.get("A"), mats.get("B")
        if widths is None or not a or not b or len(a) < 2 or len(b) < 2:
            continue   # a layer kind peft decides about, or a half pair (peft's missing keys say so)
        inputs, outputs = widths
        rank = a[0]
        if a[1] != inputs or b[0] != outputs or b[1] != rank:
            return (f"{file_name}: the LoRA matrices of {path!r} are A {a} and B {b}, but that layer takes "
                    f"{inputs} inputs and gives {outputs} outputs (A must be [rank, {inputs}], "
                    f"B [{outputs}, rank])"), set()
        if rank > min(inputs, outputs):
            return (f"{file_name}: the LoRA matrices of {path!r} have rank {rank}, and that layer is {inputs} x "
                    f"{outputs}: a rank above min(inputs, outputs) = {min(inputs, outputs)} adds nothing a LoRA can "
                    "express, only memory"), set()
    have = sum(math.prod(s) for s in shapes.values())
    base = sum(p.numel() for p in model.parameters())
    if have > base:
        return (f"{file_name} holds {have:,} parameters, more than the base model's {base:,}: that is no low-rank "
                "adapter of it"), set()
    return None, set(layers)


def dropped_weights(peft_model: Any, adapter_name: str, layers: set[str]) -> Optional[str]:
    """What peft left out of the adapter ``adapter_name`` it just loaded (None: nothing): the layers
    whose LoRA weights the file holds but that its config does not target (peft ignores them)."""
    from peft.tuners.lora import LoraLayer

    wrapped = set()
    for name, module in peft_model.named_modules():
        if isinstance(module, LoraLayer) and (adapter_name in getattr(module, "lora_A", {})
                                              or adapter_name in getattr(module, "lora_embedding_A", {})):
            wrapped.add(next((name[len(p):] for p in _PEFT_PREFIXES if name.startswith(p)), name))
    dropped = sorted(layers - wrapped)
    if not dropped:
        return None
    kinds = sorted({d.rsplit(".", 1)[-1] for d in dropped})
    return (f"its weight file has LoRA weights for {len(dropped)} layers its adapter_config.json does not target "
            f"({', '.join(dropped[:3])}{', ...' if len(dropped) > 3 else ''}), which peft would drop, giving another "
            f"adapter than the one trained; add {', '.join(map(repr, kinds[:7]))} to target_modules (or remove those "
            "weights)")
