"""Turn what a user typed into local files: a folder, a ``file://`` URI, a GGUF file, a Hugging Face
cache folder (``models--Org--Name``, resolved to its snapshot) or a hub id already in the local Hugging
Face cache. Never downloads: hub ids are looked up in the cache offline (``hub.cached_snapshot``).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from ..errors import ParseError
from ..hub import COMMIT as _REVISION
from ..hub import REPO_ID as HUB_ID  # noqa: F401 - the one rule of a hub repository id ("Org/Name")
from ..hub import cached_snapshot, hub_cache_dir, repo_id_problem
from ..spec import resolve_hf_cache_folder, uri_to_path


@dataclass
class Located:
    path: Path                      # absolute: the model folder, or the .gguf file
    kind: str                       # "dir" | "gguf"
    how: str                        # how the input was resolved, for .sources
    repo_id: Optional[str] = None   # "Org/Name" when known from the HF cache layout or a hub id
    revision: Optional[str] = None  # snapshot commit when resolved through the HF cache
    given: str = ""

    @property
    def name_hint(self) -> str:
        """What a default model_name is made from: the repo name, else the folder or file name."""
        if self.repo_id:
            return self.repo_id.split("/", 1)[1]
        if self.kind == "gguf":
            return self.path.name[:-5] if self.path.name.lower().endswith(".gguf") else self.path.stem
        return self.path.name


def repo_of_cache_folder(folder: Path) -> Optional[tuple[str, Optional[str]]]:
    """("Org/Name", revision) when ``folder`` is ``…/models--Org--Name`` or a snapshot inside it."""
    parts = folder.parts
    for i in range(len(parts) - 1, -1, -1):
        part = parts[i]
        if part.startswith("models--") and "--" in part[len("models--"):]:
            org, name = part[len("models--"):].split("--", 1)
            revision = None
            if i + 2 < len(parts) and parts[i + 1] == "snapshots":
                revision = parts[i + 2]
            return f"{org}/{name}", revision
        if part.startswith("models--"):
            return part[len("models--"):], (parts[i + 2] if i + 2 < len(parts) and parts[i + 1] == "snapshots"
                                            else None)
    return None


def _abspath(path: Path) -> Path:
    # abspath, not resolve(): keep the user's spelling (and HF snapshot paths, whose files are symlinks)
    return Path(os.path.abspath(os.path.expanduser(str(path))))


def _from_hub(repo_id: str, given: str) -> Located:
    """A hub id already in the local Hugging Face cache: its snapshot (refs/main's, else the newest),
    looked up offline; nothing is downloaded."""
    cache = hub_cache_dir()
    snapshot = cached_snapshot(repo_id, None, cache)
    if snapshot is None:
        raise ParseError(
            f"{given!r} is neither a local path nor a model in the local Hugging Face cache ({cache}); "
            f"download it first (client.download_model(...) for a registration, or huggingface_hub."
            f"snapshot_download({repo_id!r})), or pass the model's folder or .gguf file")
    revision = snapshot.name if _REVISION.match(snapshot.name) else None
    return Located(snapshot, "dir", f"hub id {repo_id} in the local Hugging Face cache ({cache})",
                   repo_id=repo_id, revision=revision, given=given)


def locate(path_or_id: Union[str, os.PathLike]) -> Located:
    """Resolve the input to local files, or raise ParseError saying what was wrong."""
    if isinstance(path_or_id, os.PathLike):
        raw = os.fspath(path_or_id)
    elif isinstance(path_or_id, str):
        raw = path_or_id
    else:
        raise ParseError(f"expected a path, file:// URI or hub id, got {type(path_or_id).__name__}")
    text = raw.strip()
    if not text:
        raise ParseError("the model path is empty; pass a folder, a .gguf file, a file:// URI or a hub id")
    how = "path"
    if text.startswith("file://"):
        try:
            path = uri_to_path(text)
        except ValueError as exc:
            raise ParseError(f"{text}: {exc}") from None
        how = "file:// URI"
    elif re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", text):
        raise ParseError(f"{text}: only local paths, file:// URIs and hub ids already in the local Hugging Face "
                         "cache can be parsed (nothing is downloaded)")
    else:
        path = Path(text).expanduser()
    if not path.exists():
        if not text.startswith("file://") and repo_id_problem(text) is None:
            return _from_hub(text, raw)
        raise ParseError(f"{_abspath(path)}: no such file or folder; pass the model's folder, its .gguf file, a "
                         "file:// URI or a hub id already in the local Hugging Face cache")
    path = _abspath(path)
    repo = repo_of_cache_folder(path)
    if path.is_dir() and path.name.startswith("models--"):
        resolved = resolve_hf_cache_folder(path)
        if resolved == path:
            raise ParseError(f"{path}: a Hugging Face cache folder without a snapshot (no snapshots/<revision> "
                             "folder); the download did not finish, run snapshot_download again")
        repo_id, _ = repo or (None, None)
        return Located(resolved, "dir", f"Hugging Face cache folder {path.name} → snapshots/{resolved.name}",
                       repo_id=repo_id, revision=resolved.name, given=raw)
    repo_id, revision = repo or (None, None)
    if repo_id and "snapshots" not in path.parts:
        repo_id = None  # a "models--x" folder name elsewhere in the path, not a cache snapshot
    if path.is_file():
        if path.suffix.lower() == ".gguf" or _is_gguf(path):
            return Located(path, "gguf", how + " to a GGUF file", repo_id=repo_id, revision=revision, given=raw)
        if path.name in ("config.json", "model_index.json"):
            return Located(path.parent, "dir", how + f" to {path.name}: its folder", repo_id=repo_id,
                           revision=revision, given=raw)
        raise ParseError(f"{path}: is a file but not a GGUF model; pass the model's folder (the one with "
                         "config.json) or a .gguf file")
    return Located(path, "dir", how + (" (Hugging Face cache snapshot)" if repo_id else ""), repo_id=repo_id,
                   revision=revision, given=raw)


def _is_gguf(path: Path) -> bool:
    from .gguf import looks_like_gguf

    return looks_like_gguf(path)
