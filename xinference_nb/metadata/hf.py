"""A Hugging Face model folder's own files, read as metadata: config.json, tokenizer files,
generation_config.json, the chat template, the model card's language list.

Nothing here imports torch or transformers. Readers are strict (a file that is there but unreadable
or not JSON is a ParseError naming it) unless they say otherwise; the runtime passes
``strict=False`` where a launch must go on without the fact.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Optional

from ..errors import ParseError

# tokenizer.json is read only to name stop tokens; skip absurd ones.
MAX_TOKENIZER_JSON = 64 * 1024 * 1024


# ------------------------------------------------------------------------------------------------
# JSON files
# ------------------------------------------------------------------------------------------------

def read_json(path: Path, what: str = "") -> Any:
    """The parsed JSON of ``path``; a ParseError naming the file if it is unreadable or not JSON."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ParseError(f"{path}: cannot read {what or 'the file'}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ParseError(f"{path}: is not UTF-8 text; expected a JSON {what or 'file'}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ParseError(f"{path}: is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
                         f"re-download or fix {Path(path).name}") from None


def read_json_object(path: Path, what: str = "") -> dict:
    data = read_json(path, what)
    if not isinstance(data, dict):
        raise ParseError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


def maybe_json(folder: Path, name: str) -> Optional[dict]:
    """``folder/name`` parsed, or None when the file is absent (present but broken is an error)."""
    path = folder / name
    if not path.is_file():
        return None
    return read_json_object(path)



def read_config(folder: Path) -> dict[str, Any]:
    """config.json of a folder with a multimodal model's ``text_config`` (its LLM part) merged over
    it; {} when it is absent or unreadable (for estimates, which must not fail on it)."""
    try:
        cfg = maybe_json(Path(folder), "config.json")
    except ParseError:
        return {}
    return llm_config(cfg or {})


def llm_config(config: dict[str, Any]) -> dict[str, Any]:
    """A config with its ``text_config`` (multimodal models keep the LLM part there) merged over it."""
    text_cfg = config.get("text_config")
    if isinstance(text_cfg, dict):
        merged = dict(text_cfg)
        merged.update({k: v for k, v in config.items() if k not in merged})
        return merged
    return config


# ------------------------------------------------------------------------------------------------
# Layer count
# ------------------------------------------------------------------------------------------------

LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers")   # config.json's layer count, first found wins


def layer_count(config: dict) -> Optional[int]:
    """The number of layers a config states: the first of LAYER_KEYS holding a positive integer."""
    for key in LAYER_KEYS:
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


# ------------------------------------------------------------------------------------------------
# Context length
# ------------------------------------------------------------------------------------------------

CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "seq_length", "max_sequence_length", "n_ctx",
                "max_seq_len", "model_max_length")
# tokenizers write 1e30 when they do not know; anything at or above this is a sentinel
SENTINEL_CONTEXT = 10_000_000


def context_length(config: dict) -> Optional[tuple[int, str]]:
    """(context length, how it was found) from a config: the first of CONTEXT_KEYS, extended by
    a rope_scaling / rope_parameters factor when that scaling extends the window."""
    for where, cfg in (("", config), ("text_config.", config.get("text_config") or {}),
                       ("llm_config.", config.get("llm_config") or {})):
        if not isinstance(cfg, dict):
            continue
        for key in CONTEXT_KEYS:
            value = cfg.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and 0 < value < SENTINEL_CONTEXT:
                base, how = value, f"config.json {where}{key}"
                scaled = _rope_extended(cfg, base)
                if scaled is not None:
                    return scaled[0], f"{how} with {scaled[1]}"
                return base, how
    return None


def _rope_extended(cfg: dict, base: int) -> Optional[tuple[int, str]]:
    for key in ("rope_scaling", "rope_parameters"):
        rope = cfg.get(key)
        if not isinstance(rope, dict):
            continue
        kind = str(rope.get("rope_type") or rope.get("type") or "").lower()
        factor = rope.get("factor")
        if kind not in ("linear", "dynamic", "yarn", "ntk", "dynamic-ntk") or not isinstance(factor, (int, float)):
            continue  # llama3 / longrope / mrope / default: max_position_embeddings is already the window
        if factor <= 1:
            continue
        original = rope.get("original_max_position_embeddings")
        start = original if isinstance(original, int) and original > 0 else base
        extended = int(round(start * factor))
        if extended > base:
            what = f"original_max_position_embeddings={start}" if start is original else f"{base}"
            return extended, f"{key} {kind} factor {factor:g} ({what} × {factor:g})"
    return None


# ------------------------------------------------------------------------------------------------
# Tokenizer facts: special tokens, id → text
# ------------------------------------------------------------------------------------------------

def token_content(value: Any) -> Optional[str]:
    """A special token as tokenizer_config writes it: a string or an AddedToken dict."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    return None


class TokenTable:
    """id ↔ text of the tokens a folder's tokenizer files name, loaded as lazily as possible:
    tokenizer_config.json's added_tokens_decoder first, tokenizer.json only when still needed."""

    def __init__(self, folder: Path, tokenizer_config: Optional[dict]):
        self.folder = folder
        self.id_to_text: dict[int, str] = {}
        self.where: dict[int, str] = {}
        self._full_loaded = False
        added = (tokenizer_config or {}).get("added_tokens_decoder") or {}
        if isinstance(added, dict):
            for key, value in added.items():
                text = token_content(value)
                if text is not None and str(key).isdigit():
                    self.id_to_text[int(key)] = text
                    self.where[int(key)] = "tokenizer_config.json added_tokens_decoder"

    def _load_full(self) -> None:
        if self._full_loaded:
            return
        self._full_loaded = True
        path = self.folder / "tokenizer.json"
        if not path.is_file() or path.stat().st_size > MAX_TOKENIZER_JSON:
            return
        data = read_json_object(path, "tokenizer")
        for tok in data.get("added_tokens") or []:
            if isinstance(tok, dict) and isinstance(tok.get("id"), int) and isinstance(tok.get("content"), str):
                self.id_to_text.setdefault(tok["id"], tok["content"])
                self.where.setdefault(tok["id"], "tokenizer.json added_tokens")
        vocab = (data.get("model") or {}).get("vocab")
        if isinstance(vocab, dict):
            for text, tid in vocab.items():
                if isinstance(tid, int) and tid not in self.id_to_text:
                    self.id_to_text[tid] = text
                    self.where[tid] = "tokenizer.json vocab"
        elif isinstance(vocab, list):  # unigram: [[piece, score], ...]
            for tid, item in enumerate(vocab):
                if isinstance(item, list) and item and isinstance(item[0], str) and tid not in self.id_to_text:
                    self.id_to_text[tid] = item[0]
                    self.where[tid] = "tokenizer.json vocab"

    def text(self, token_id: int) -> Optional[str]:
        if token_id not in self.id_to_text:
            self._load_full()
        return self.id_to_text.get(token_id)

    def id_of(self, text: str) -> Optional[int]:
        for tid, t in self.id_to_text.items():
            if t == text:
                return tid
        self._load_full()
        for tid, t in self.id_to_text.items():
            if t == text:
                return tid
        return None


def special_token(name: str, tokenizer_config: Optional[dict],
                  special_map: Optional[dict]) -> Optional[tuple[str, str]]:
    """(text, file) of a special token (``eos_token``, ``bos_token``…) from tokenizer_config.json or
    special_tokens_map.json."""
    for data, file in ((tokenizer_config, "tokenizer_config.json"), (special_map, "special_tokens_map.json")):
        if data:
            text = token_content(data.get(name))
            if text:
                return text, file
    return None


def eos_ids(data: Optional[dict]) -> list[int]:
    value = (data or {}).get("eos_token_id")
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, int) and not isinstance(v, bool)]
    return []


# ------------------------------------------------------------------------------------------------
# Chat template
# ------------------------------------------------------------------------------------------------

def chat_template(folder: Path, tokenizer_config: Optional[dict] = None, *,
                  strict: bool = True) -> Optional[tuple[str, str]]:
    """(template, where) of the model's own chat template, the one lookup parse and the runtime share:
    chat_template.jinja (transformers 5), chat_template.json (processors of vision models), then
    tokenizer_config.json "chat_template": a string, or a list of named templates where "default"
    wins and else the first that has a template. ``tokenizer_config`` is read from the folder when not
    given. ``strict=False``: an unreadable file is passed over instead of being a ParseError."""
    folder = Path(folder)
    if not folder.is_dir():
        return None

    def read(name: str) -> Optional[dict]:
        try:
            return maybe_json(folder, name)
        except ParseError:
            if strict:
                raise
            return None

    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        try:
            text = jinja.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            if strict:
                raise ParseError(f"{jinja}: cannot read the chat template: {exc}") from None
            text = ""
        if text.strip():
            return text, "chat_template.jinja"
    # the processor's template (vision models) before the tokenizer's
    data = read("chat_template.json")
    if data and isinstance(data.get("chat_template"), str) and data["chat_template"].strip():
        return data["chat_template"], "chat_template.json"
    if tokenizer_config is None:
        tokenizer_config = read("tokenizer_config.json")
    value = (tokenizer_config or {}).get("chat_template")
    if isinstance(value, str) and value.strip():
        return value, "tokenizer_config.json chat_template"
    if isinstance(value, list):
        named = [(d.get("name"), d.get("template")) for d in value if isinstance(d, dict)]
        usable = [(n, t) for n, t in named if isinstance(t, str) and t.strip()]
        for name, text in usable:
            if name == "default":
                return text, "tokenizer_config.json chat_template (\"default\")"
        if usable:
            name, text = usable[0]
            return text, f"tokenizer_config.json chat_template ({name!r})"
    return None


# ------------------------------------------------------------------------------------------------
# Model card language
# ------------------------------------------------------------------------------------------------

_FRONT_MATTER = re.compile(r"\A---\s*\n(.*?)\n---\s*(\n|\Z)", re.S)


def readme_languages(folder: Path) -> Optional[list[str]]:
    """The ``language:`` list of README.md's YAML front matter (the model card), if it has one."""
    path = folder / "README.md"
    if not path.is_file():
        return None
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            head = fh.read(65536)
    except OSError:
        return None
    match = _FRONT_MATTER.match(head)
    if not match:
        return None
    lines = match.group(1).splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^language\s*:\s*(.*)$", line)
        if not m:
            continue
        rest = m.group(1).strip()
        if rest.startswith("["):
            items = [x.strip().strip("'\"") for x in rest.strip("[]").split(",")]
        elif rest:
            items = [rest.strip("'\"")]
        else:
            items = []
            for nxt in lines[i + 1:]:
                item = re.match(r"^\s*-\s*(.+?)\s*$", nxt)
                if not item:
                    break
                items.append(item.group(1).strip("'\""))
        langs = [x for x in items if x and re.match(r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]+)?$", x)]
        return langs or None
    return None


def file_names(folder: Path) -> set[str]:
    try:
        return {e.name for e in os.scandir(folder)}
    except OSError as exc:
        raise ParseError(f"{folder}: cannot list the folder: {exc.strerror or exc}") from None
