"""A table in, a table out: ``handle.map(items, prompt, response_format=...)`` over any LLM handle.

    df["label"] = llm.map(df, "Classify: {text}", response_format=Label)["label"]

``run_map`` is the logic behind the ``map`` method of both LLM handles (in-kernel, ``handles.LLMHandle``,
and over HTTP, ``remote.RemoteLLMHandle``); it needs only the handle's ``chat(messages,
generate_config=...)``. Rows run through ``progress.map_in_order`` (as many at once as the model's
continuous batching takes), results in the order of the rows.

Every finished row is kept under a key (sha256 of the model's identity, the row's messages, the
generate_config and the schema): in memory on the handle's manager / connection while a call has
not completed (an interrupt or an error keeps what finished; the same call again runs only the rest),
and, with ``cache=True`` or a folder, on disk, one JSON file per row under
``$XINFERENCE_NB_HOME/map_cache/<2 hex>/<key>.json`` (``MAP_CACHE_FOLDER``), written atomically. The
in-kernel identity holds a fingerprint of the model's files (each file's path, size and mtime_ns, the
LoRA adapters' too): a changed file is a miss. A remote handle's identity is the endpoint, the uid and
what the server's describe() says; the cache cannot see files change on the server.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import warnings
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Union

from ..errors import InferenceError
from ..registry.store import atomic_write_text

MAP_CACHE_FOLDER = "map_cache"      # under the data folder (registry.store.nb_home)
CACHE_VERSION = 1                   # bumped when a record's shape or the key changes
MAX_FINGERPRINT_FILES = 20_000      # files of a model folder looked at for its fingerprint
# describe() fields that change while the same model runs (never part of its identity)
VOLATILE_FIELDS = frozenset({"launched_at", "last_used_at", "busy", "load_seconds", "memory_bytes",
                             "memory_estimate_bytes", "status", "accelerators", "address", "replica"})
# generate_config keys map cannot honour (it returns one reply per row): the one value accepted, why
REFUSED_KEYS = {"stream": (False, "map returns one result per row; stream one row with chat()"),
                "n": (1, "map returns one reply per row; use chat_batch() for n choices"),
                "logprobs": (False, "map returns the reply only; use chat_batch() for logprobs"),
                "top_logprobs": (0, "map returns the reply only; use chat_batch() for logprobs")}

_MEMORY: "weakref.WeakKeyDictionary[Any, dict[str, dict[str, Any]]]" = weakref.WeakKeyDictionary()
_MEMORY_LOCK = threading.Lock()


# ----------------------------------------------------------------------------------------------
# Rows in
# ----------------------------------------------------------------------------------------------

@dataclass
class Rows:
    """The input as rows: ``values`` (a mapping of placeholders per row, or the item itself),
    ``kind`` "list" | "series" | "frame", the pandas ``index`` and the placeholders available."""

    values: list[Any]
    kind: str
    index: Any = None
    columns: tuple[str, ...] = ("item",)


def _is_pandas(items: Any, name: str) -> bool:
    """``items`` is a pandas ``name`` (or a subclass); pandas is loaded only when someone loaded it."""
    pandas = sys.modules.get("pandas")
    return pandas is not None and isinstance(items, getattr(pandas, name))


def table_rows(items: Any) -> Rows:
    """A list / tuple, a pandas Series or DataFrame as rows (pandas is never imported here)."""
    if _is_pandas(items, "DataFrame"):
        columns = tuple(str(c) for c in items.columns)
        records = [{str(k): v for k, v in rec.items()} for rec in items.to_dict("records")]
        return Rows(records, "frame", items.index, columns)
    if _is_pandas(items, "Series"):
        names = ("item",) + ((items.name,) if isinstance(items.name, str) and items.name != "item" else ())
        return Rows([{n: v for n in names} for v in items.tolist()], "series", items.index, names)
    if isinstance(items, (list, tuple)):
        return Rows(list(items), "list")
    raise InferenceError(f"items must be a list, a pandas Series or a pandas DataFrame, got {type(items).__name__} "
                         f"{items!r:.60}")


def _as_messages(value: Any, where: str) -> list[dict[str, Any]]:
    """A prompt as chat messages: a string is one user message; a list must be messages."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if isinstance(value, list) and value and all(isinstance(m, dict) and "role" in m for m in value):
        return [dict(m) for m in value]
    raise InferenceError(f"{where} must be a string or a list of chat messages ({{'role': ..., 'content': ...}}), "
                         f"got {type(value).__name__} {value!r:.80}")


def _fill(template: str, row: Any, rows: Rows, i: int) -> str:
    fields = row if isinstance(row, dict) else {"item": row}
    columns = tuple(str(k) for k in fields) if rows.kind == "list" else rows.columns
    try:
        return template.format_map(fields)
    except KeyError as exc:
        name = str(exc.args[0])
        hint = "" if name.isidentifier() else " (to write a literal brace, double it: {{ or }})"
        raise InferenceError(f"prompt template: row {i} has no {{{name}}}; the placeholders available are "
                             f"{', '.join('{' + c + '}' for c in columns)}{hint}") from None
    except (ValueError, IndexError, AttributeError) as exc:
        raise InferenceError(f"prompt template {template!r:.80} cannot be filled: {exc} (write a literal brace as "
                             "{{ or }}; placeholders are named, as {column})") from None


def _row_prompt(prompt: Any, row: Any, rows: Rows, i: int) -> Any:
    if prompt is None:
        if isinstance(row, dict) and rows.kind == "series":
            return row["item"]
        if isinstance(row, dict):
            raise InferenceError(f"row {i} is a dict of columns ({', '.join(map(str, row))}); pass prompt= a template "
                                 "such as 'Classify: {text}' or a function of the row")
        return row
    if isinstance(prompt, str):
        return _fill(prompt, row, rows, i)
    return prompt(row)


def render_messages(rows: Rows, prompt: Any, system: Optional[str]) -> list[list[dict[str, Any]]]:
    """Each row's chat messages, all rendered before anything runs (a template error names the row,
    the missing placeholder and the ones available)."""
    if prompt is not None and not isinstance(prompt, str) and not callable(prompt):
        raise InferenceError(f"prompt must be a template string, a function of the row or None, got "
                             f"{type(prompt).__name__}")
    if system is not None and not isinstance(system, str):
        raise InferenceError(f"system must be a string or None, got {type(system).__name__}")
    out = []
    for i, row in enumerate(rows.values):
        value = _row_prompt(prompt, row, rows, i)
        if not isinstance(value, (str, list)):
            value = str(value) if prompt is None else value   # a scalar item is its own prompt
        messages = _as_messages(value, f"the prompt of row {i}")
        if system is not None:
            if messages[0].get("role") == "system":
                raise InferenceError(f"row {i}'s messages start with a system message and system= is given too; "
                                     "pass one of them")
            messages.insert(0, {"role": "system", "content": system})
        out.append(messages)
    return out


# ----------------------------------------------------------------------------------------------
# The request: generate_config and schema
# ----------------------------------------------------------------------------------------------

def map_config(generate_config: Optional[dict[str, Any]], response_format: Any) -> tuple[dict[str, Any], Any]:
    """(the generate_config each row sends, its constraint or None)."""
    from ..chat.structured import constraint_of

    if generate_config is not None and not isinstance(generate_config, dict):
        raise InferenceError(f"generate_config must be a dict or None, got {type(generate_config).__name__}")
    cfg = {k: v for k, v in (generate_config or {}).items() if v is not None}
    for key, (accepted, why) in REFUSED_KEYS.items():
        if key in cfg and (cfg[key] != accepted or type(cfg[key]) is not type(accepted)):
            raise InferenceError(f"generate_config[{key!r}] is not accepted by map: {why}")
    if response_format is not None:
        if "response_format" in cfg:
            raise InferenceError("response_format is given both as map(response_format=...) and in generate_config; "
                                 "pass it once")
        cfg["response_format"] = response_format
    return cfg, constraint_of(cfg)


def _canonical(value: Any) -> str:
    from ..chat.structured import wire_form

    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=lambda v: wire_form(v) if isinstance(v, type) else str(v))


def row_key(identity: dict[str, Any], messages: list[dict[str, Any]], cfg: dict[str, Any], constraint: Any) -> str:
    """sha256 over the model's identity, the row's messages, the generate_config (constraint fields
    aside) and the constraint (kind, schema / pattern / choices / grammar)."""
    from ..chat.structured import CONSTRAINT_KEYS

    rest = {k: v for k, v in cfg.items() if k not in CONSTRAINT_KEYS}
    schema = None if constraint is None else [constraint.key(), constraint.name]
    text = _canonical([CACHE_VERSION, identity, messages, rest, schema])
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


# ----------------------------------------------------------------------------------------------
# The model's identity
# ----------------------------------------------------------------------------------------------

def files_fingerprint(paths: list[Any]) -> list[list[Any]]:
    """[path, size, mtime_ns] of each file of ``paths`` (a file, or every file below a folder, its
    hidden folders such as .cache and .git aside; links followed), in a stable order."""
    out: list[list[Any]] = []
    for root in paths:
        root = Path(root)
        if root.is_file():
            st = root.stat()
            out.append([str(root), st.st_size, st.st_mtime_ns])
            continue
        for folder, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                path = Path(folder, name)
                try:
                    st = path.stat()
                except OSError:   # a dangling link: part of the folder as it is
                    out.append([str(path), None, None])
                    continue
                out.append([str(path), st.st_size, st.st_mtime_ns])
                if len(out) > MAX_FINGERPRINT_FILES:
                    raise InferenceError(f"the model folder {root} holds over {MAX_FINGERPRINT_FILES:,} files; the map "
                                         "cache cannot fingerprint it (pass cache=False)")
    return out


def local_identity(manager: Any, model_uid: str) -> dict[str, Any]:
    """An in-kernel model: name, engine, format, size, quantization, its document, its launch options
    (LoRA adapters among them) and the fingerprint of its files and its adapters' files."""
    from ..engines.options import lora_adapters
    from ..spec import to_document

    entry = manager.running_model(model_uid)
    paths = [entry.model_path] if entry.model_path is not None else []
    paths += [a.path for a in lora_adapters(entry.options)]
    return {"model_name": entry.model_name, "engine": entry.engine.name, "model_format": entry.model_format,
            "size": entry.model_size_in_billions, "quantization": entry.quantization,
            "document": to_document(entry.spec) if entry.spec is not None else None,
            "options": json.loads(_canonical(entry.options)), "files": files_fingerprint(paths)}


def remote_identity(description: dict[str, Any], model_uid: str, endpoint: str) -> dict[str, Any]:
    """A model behind a server: the endpoint, the uid and what describe() says (the files on the
    server are not seen)."""
    return {"endpoint": endpoint, "model_uid": model_uid,
            "describe": {k: v for k, v in (description or {}).items() if k not in VOLATILE_FIELDS}}


# ----------------------------------------------------------------------------------------------
# Finished rows: in memory until the call completes, on disk with the cache on
# ----------------------------------------------------------------------------------------------

def cache_folder(cache: Any) -> Optional[Path]:
    """None (no disk cache), the default folder (``cache=True``) or the folder given."""
    if cache is False or cache is None:
        return None
    if cache is True:
        from ..registry.store import nb_home

        return nb_home() / MAP_CACHE_FOLDER
    if isinstance(cache, (str, os.PathLike)) and str(cache):
        return Path(cache).expanduser()
    raise InferenceError(f"cache must be true, false or a folder path, got {type(cache).__name__} {cache!r:.60}")


class RowStore:
    """Finished rows by key: the owner's memory (the manager, or the remote connection) and the cache folder."""

    def __init__(self, owner: Any, folder: Optional[Path]):
        with _MEMORY_LOCK:
            self.memory = _MEMORY.setdefault(owner, {})
        self.folder = folder
        self._warned = False

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"  # type: ignore[operator]

    def get(self, key: str) -> Optional[dict[str, Any]]:
        with _MEMORY_LOCK:
            record = self.memory.get(key)
        if record is not None or self.folder is None:
            return record
        try:
            with open(self._path(key), encoding="utf-8") as f:
                entry = json.load(f)
        except (OSError, ValueError):
            return None    # absent, unreadable or torn: a miss (the row runs and the file is rewritten)
        ok = isinstance(entry, dict) and entry.get("version") == CACHE_VERSION and entry.get("key") == key
        return entry.get("record") if ok and isinstance(entry.get("record"), dict) else None

    def put(self, key: str, record: dict[str, Any]) -> None:
        with _MEMORY_LOCK:
            self.memory[key] = record
        if self.folder is not None:
            self._write(key, record)

    def _write(self, key: str, record: dict[str, Any]) -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, json.dumps({"version": CACHE_VERSION, "key": key, "record": record},
                                               ensure_ascii=False))
        except OSError as exc:
            if not self._warned:
                self._warned = True
                warnings.warn(f"map cache: cannot write under {self.folder} ({exc}); the results are returned but "
                              "not cached", stacklevel=4)

    def forget(self, keys: list[str]) -> None:
        """The call completed: its rows leave the memory (the disk cache keeps them)."""
        with _MEMORY_LOCK:
            for key in keys:
                self.memory.pop(key, None)


# ----------------------------------------------------------------------------------------------
# Replies out
# ----------------------------------------------------------------------------------------------

def reply_record(result: dict[str, Any], constraint: Any) -> dict[str, Any]:
    """What a row keeps of its chat result (JSON, as the cache stores it): the reply text, the finish
    reason and, with a constraint, the parsed value (JSON form) or None and why."""
    from ..chat import first_choice
    from ..chat.structured import parse_reply

    choice = first_choice(result)
    message = choice.get("message") or {}
    record: dict[str, Any] = {"content": message.get("content"), "finish_reason": choice.get("finish_reason")}
    if constraint is None:
        return record
    if "parsed" in message:   # the handle's chat read the reply already (a pydantic instance for a class)
        parsed, why = message["parsed"], message.get("parse_error")
    else:   # a server that does not send it (Xinference): read it here
        parsed, why = parse_reply(message.get("content"), constraint, record["finish_reason"] or "stop")
    if hasattr(parsed, "model_dump"):
        parsed = parsed.model_dump(mode="json")
    record["parsed"] = parsed
    record["parse_error"] = None if parsed is not None else (why or "the reply was not parsed")
    return record


def _value(record: dict[str, Any], constraint: Any) -> Any:
    if constraint is None:
        return record.get("content")
    parsed = record.get("parsed")
    if parsed is not None and constraint.model is not None:
        return constraint.model.model_validate(parsed)
    return parsed


def _warn_failed(records: list[dict[str, Any]], constraint: Any) -> None:
    failed = [(i, r.get("parse_error")) for i, r in enumerate(records) if constraint is not None
              and r.get("parsed") is None]
    if failed:
        i, why = failed[0]
        warnings.warn(f"map: {len(failed)} of {len(records)} replies did not parse (their result is None); "
                      f"row {i}: {why}", stacklevel=4)


def _frame(pd: Any, rows: Rows, records: list[dict[str, Any]], constraint: Any) -> Any:
    """One column per schema property (then any other key a reply has), NaN where a row did not
    parse, and then an ``_error`` column saying why."""
    columns = [str(c) for c in (constraint.value.get("properties") or {})]
    data = []
    for record in records:
        parsed = record.get("parsed")
        row = parsed if isinstance(parsed, dict) else {} if parsed is None else {"value": parsed}
        columns += [str(k) for k in row if str(k) not in columns]
        data.append({str(k): v for k, v in row.items()})
    frame = pd.DataFrame(data, index=rows.index, columns=columns)
    if any(r.get("parsed") is None for r in records):
        frame["_error"] = [r.get("parse_error") for r in records]
    return frame


def map_output(rows: Rows, records: list[dict[str, Any]], constraint: Any, stats: dict[str, int]) -> Any:
    """A list for a list; for pandas input a DataFrame of the parsed fields (a JSON schema) or a
    Series of the replies, with the input's index and ``.attrs["map"]`` = the counts."""
    if rows.kind == "list":
        _warn_failed(records, constraint)
        return [_value(r, constraint) for r in records]
    import pandas as pd

    if constraint is not None and constraint.kind == "json_schema":
        out = _frame(pd, rows, records, constraint)
    else:
        _warn_failed(records, constraint)
        out = pd.Series([_value(r, constraint) for r in records], index=rows.index, name="reply", dtype=object)
    out.attrs["map"] = dict(stats)
    return out


# ----------------------------------------------------------------------------------------------
# The call
# ----------------------------------------------------------------------------------------------

def run_map(chat: Callable[..., Any], items: Any, prompt: Union[str, Callable[[Any], Any], None] = None, *,
            response_format: Any = None, system: Optional[str] = None,
            generate_config: Optional[dict[str, Any]] = None, cache: Any = False, progress: bool = True,
            workers: int, identity: Callable[[], dict[str, Any]], owner: Any, name: str,
            check: Optional[Callable[[dict[str, Any]], Any]] = None) -> Any:
    """The ``map`` of an LLM handle (see the module doc); ``chat`` is the handle's, ``identity`` says
    which model answers, ``owner`` holds the finished rows of calls that did not complete."""
    from ..progress import map_in_order

    if not isinstance(progress, bool):
        raise InferenceError(f"progress must be true or false, got {type(progress).__name__} {progress!r:.60}")
    rows = table_rows(items)
    messages = render_messages(rows, prompt, system)
    cfg, constraint = map_config(generate_config, response_format)
    if check is not None:
        check(cfg)
    store = RowStore(owner, cache_folder(cache))
    model = identity()
    keys = [row_key(model, m, cfg, constraint) for m in messages]
    records = [store.get(k) for k in keys]
    todo = [i for i, r in enumerate(records) if r is None]

    def run_row(i: int) -> dict[str, Any]:
        record = reply_record(chat(messages[i], generate_config=cfg), constraint)
        store.put(keys[i], record)   # kept at once: an interrupt later loses nothing that finished
        return record

    try:
        for i, record in zip(todo, map_in_order(run_row, todo, workers=workers, progress=progress,
                                                desc=f"map {name}")):
            records[i] = record
    except BaseException:
        kept = sum(1 for k in keys if store.get(k) is not None)
        warnings.warn(f"map stopped: {kept} of {len(keys)} rows are finished and kept; the same call again runs "
                      "only the others", stacklevel=3)
        raise
    store.forget(keys)
    return map_output(rows, records, constraint, {"rows": len(keys), "cached": len(keys) - len(todo),
                                                  "ran": len(todo)})
