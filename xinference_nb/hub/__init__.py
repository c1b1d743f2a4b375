"""Model hubs: repository ids and revisions, and the local Hugging Face cache, looked up offline.

* :func:`repo_id_problem` / :func:`revision_problem` — what is wrong with a repository id
  ("Org/Name") or a revision (a branch, tag or commit), before anything reaches a path or a URL;
* :func:`hub_cache_dir` — the Hugging Face hub cache in use (``HF_HUB_CACHE`` / ``HF_HOME``, read
  at call time);
* :func:`snapshot_of` / :func:`cached_snapshot` — the snapshot folder a revision names in the cache
  (``refs/<revision>``, or the commit itself), never touching the network.

:mod:`.files` chooses the files of a repository a launch needs (one GGUF quantization, or a
folder's config, tokenizer and weights), :mod:`.fetch` downloads them through huggingface_hub. Only
the standard library is imported here; huggingface_hub only when the cache location is asked for.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional, Union

HUGGINGFACE, MODELSCOPE = "huggingface", "modelscope"
HUBS = (HUGGINGFACE, MODELSCOPE)

# Org/Name as the Hugging Face Hub accepts them: letters, digits, "-", "_", "."; no "--" or ".."; a
# part neither starts nor ends with "-" or "."; 96 characters at most each
_PART = r"[A-Za-z0-9](?:[A-Za-z0-9_.\-]{0,94}[A-Za-z0-9_])?"
REPO_ID = re.compile(rf"^{_PART}/{_PART}$")
COMMIT = re.compile(r"^[0-9a-f]{40}$")
# a branch or tag name (refs/pr/1 included): no "..", no empty part, nothing but these characters
_REVISION = re.compile(r"^[A-Za-z0-9_.\-]+(?:/[A-Za-z0-9_.\-]+)*$")
_FOLDER_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")     # what a refs file may name as a snapshot folder


def repo_id_problem(repo_id: object) -> Optional[str]:
    """What is wrong with a hub repository id, None when it is a valid "Org/Name"."""
    if not isinstance(repo_id, str):
        return f"must be a hub repository id such as 'Org/Name', got {type(repo_id).__name__}"
    if not REPO_ID.fullmatch(repo_id) or "--" in repo_id or ".." in repo_id:
        return (f"{repo_id[:120]!r} is not a hub repository id: write 'Org/Name' (letters, digits, '-', '_', '.'; "
                "no '..', '--', slashes beyond the one, spaces or absolute paths); for files on this machine "
                "set model_uri or pass model_path=...")
    return None


def revision_problem(revision: object) -> Optional[str]:
    """What is wrong with a revision (branch, tag or 40-hex commit), None when it is valid or None."""
    if revision is None:
        return None
    if not isinstance(revision, str):
        return f"must be a branch, tag or commit name, got {type(revision).__name__}"
    if (len(revision) > 200 or not _REVISION.fullmatch(revision)
            or any(part in (".", "..") for part in revision.split("/"))):
        return (f"{revision[:120]!r} is not a revision: write a branch or tag name ('main', 'v1.0', 'refs/pr/1') or "
                "a 40-character commit hash (no '..', spaces or absolute paths)")
    return None


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache in use (HF_HUB_CACHE / HF_HOME aware), read at call time, resolved
    as huggingface_hub resolves it."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE).expanduser().resolve()


def repo_cache_folder(repo_id: str, cache: Union[str, Path, None] = None) -> Path:
    """``<cache>/models--Org--Name``: where the cache keeps a model repository (existing or not)."""
    root = Path(cache) if cache is not None else hub_cache_dir()
    return root / ("models--" + repo_id.replace("/", "--"))


def snapshot_of(storage: Path, revision: Optional[str] = None) -> Optional[Path]:
    """The snapshot folder of ``revision`` in a cache folder ``models--Org--Name``: the commit itself,
    or the one ``refs/<revision>`` names; without a revision, ``refs/main``'s, else the newest snapshot.
    None when the cache holds no such snapshot."""
    snapshots = storage / "snapshots"
    if not snapshots.is_dir() or revision_problem(revision):
        return None
    wanted = revision or "main"
    commit: Optional[str] = wanted if COMMIT.fullmatch(wanted) else None
    ref = storage / "refs" / wanted
    if commit is None and ref.is_file():
        commit = ref.read_text().strip()
    if commit and _FOLDER_NAME.fullmatch(commit) and commit not in (".", "..") and (snapshots / commit).is_dir():
        return snapshots / commit
    if revision is not None:
        return None
    candidates = [p for p in snapshots.iterdir() if p.is_dir()]
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None


def cached_snapshot(repo_id: str, revision: Optional[str] = None,
                    cache: Union[str, Path, None] = None) -> Optional[Path]:
    """The snapshot folder of ``repo_id`` at ``revision`` in the local Hugging Face cache (see
    :func:`snapshot_of`), None when it is not there. Never downloads; the id and revision must be
    valid (:func:`repo_id_problem`, :func:`revision_problem`)."""
    return snapshot_of(repo_cache_folder(repo_id, cache), revision)


def snapshot_files(snapshot: Path) -> list[str]:
    """The files of a snapshot folder, as repository paths ("1_Pooling/config.json"), sorted."""
    return sorted(p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file())
