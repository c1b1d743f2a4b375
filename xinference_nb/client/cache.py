"""The model cache, visible: every model on disk that the Hugging Face hub cache or a custom
registration's ``model_uri`` holds, and removing one.

``list_cached_models`` gives one row per cached revision of a Hugging Face model repository
(huggingface_hub's ``scan_cache_dir`` over the cache in use: ``HF_HUB_CACHE`` / ``HF_HOME``) and one
per local ``model_uri`` of a custom registration outside that cache. A row has Xinference's keys
(``model_name``, ``model_type``, ``model_format``, ``model_size_in_billions``, ``quantization``,
``model_version``, ``path``, ``real_path``, ``size_bytes``) and ours: ``source`` ("huggingface" or
"model_uri"), ``model_id``, ``revision``, ``refs``, ``repo_path``, ``quantizations`` (every GGUF
quantization of the files), ``file_formats``, ``registrations`` ("LLM/name" of the registrations whose
``model_uri`` is that path or inside it, or whose ``model_id`` is that repository; built-in ones marked)
and ``running`` (the uids of this kernel's models that use the files). The facts come from the files'
metadata only (GGUF headers, config.json, safetensors headers; ``xinference_nb.metadata``), never
from weights.

``model_version`` names a row for :func:`remove_cached_model`: ``"Org/Name@<commit>"`` (one revision;
a ref such as ``@main`` works too), ``"Org/Name"`` (the whole repository), or a path: a row's ``path``,
a repository's folder (``models--Org--Name``), or a registration's ``model_uri`` path.

A removal deletes either a Hugging Face repository or revision, through huggingface_hub's own delete
strategy, after checking that every path the strategy would touch lies inside that repository's
folder (a snapshot file that links out of it is refused, whole), or a registration's own file or
folder, only with ``delete_user_files=True`` (and never a link, a folder that holds the home, the
working directory, the Hugging Face cache or XINFERENCE_NB_HOME, or a folder that holds no model
file). It is refused while a model of this kernel uses the files. Registrations are left as they
are: the result names the ones whose files are gone. Every refusal is a ``CacheError``, with nothing
deleted.
"""
from __future__ import annotations

import dataclasses
import os
import re
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..errors import CacheError, ParseError, short_value

SOURCE_HF, SOURCE_URI = "huggingface", "model_uri"
DELETE_FLAG = "delete_user_files"     # the keyword that lets a removal delete a registration's own files
# top-level names that make a folder a model's (a removal of a registration's folder needs one)
MODEL_FILES = ("config.json", "model_index.json", "modules.json", "adapter_config.json", "params.json",
               "config_sentence_transformers.json")
MAX_TREE_ENTRIES = 200_000            # files counted for a folder's size
# Xinference's cache routes (GET lists, GET .../files says what a removal deletes, DELETE removes)
CACHE_ROUTE, CACHE_FILES_ROUTE = "/v1/cache/models", "/v1/cache/models/files"
# ours: fetch a registration's hub files into the server's cache without launching (download_model)
DOWNLOAD_ROUTE = "/v1/cache/models/download"
_REPO_VERSION = re.compile(r"^(?P<repo>[^@\s/]+/[^@\s/]+)(?:@(?P<rev>[^@\s]+))?$")


@dataclass
class Link:
    """One local file or folder (or hub repository) a registration names."""

    model_type: str
    model_name: str
    builtin: bool
    entry: Any                      # the model_specs entry (or the spec, for types without specs)
    path: Optional[Path] = None     # model_uri, absolute (an HF cache folder resolved to its snapshot)
    model_id: Optional[str] = None  # a Hugging Face repository id

    @property
    def label(self) -> str:
        return f"{self.model_type}/{self.model_name}" + (" (built-in)" if self.builtin else "")


@dataclass
class Scan:
    """What a listing read: the rows, the hub cache and huggingface_hub's scan of it (None: no cache)."""

    rows: list[dict[str, Any]]
    root: Path
    info: Any = None
    links: list[Link] = field(default_factory=list)


class CacheAliases:
    """Xinference's client names for a removal, on top of a client's ``remove_cached_model`` (the
    in-kernel Client and RemoteClient both)."""

    def list_deletable_models(self, model_version: str, worker_ip: Optional[str] = None) -> dict[str, Any]:
        """What removing ``model_version`` would delete (``{"paths": [...], ...}``)."""
        plan = self.remove_cached_model(model_version, dry_run=True, worker_ip=worker_ip)  # type: ignore[attr-defined]
        return dict(plan, worker_ip=worker_ip)

    def confirm_and_remove_model(self, model_version: str, worker_ip: Optional[str] = None) -> bool:
        """``remove_cached_model(model_version)``; True once deleted."""
        return bool(self.remove_cached_model(model_version, worker_ip=worker_ip)["deleted"])  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------------------------
# listing
# ------------------------------------------------------------------------------------------------

def no_workers(worker_ip: Any) -> None:
    """The in-kernel cache has no workers: ``worker_ip`` is refused (it is a cluster's argument)."""
    if worker_ip is not None:
        raise CacheError(f"worker_ip={short_value(worker_ip)}: this kernel's cache has no workers; list or remove "
                         "a worker's cache through Client('http://supervisor:9997')")


def list_cached_models(manager: Any, model_name: Optional[str] = None) -> list[dict[str, Any]]:
    """The rows of every cached model (see the module), those of ``model_name`` only when given (a
    registration's name, a repository id, or a row's ``model_name``)."""
    if model_name is not None and (not isinstance(model_name, str) or not model_name.strip()):
        raise CacheError(f"model_name={short_value(model_name)}: give a model name or a repository id, or None "
                         "for every cached model")
    rows = scan(manager).rows
    if model_name is None:
        return rows
    wanted = model_name.strip()
    return [r for r in rows if wanted in (r["model_name"], r["model_id"])
            or any(label.split("/", 1)[1].removesuffix(" (built-in)") == wanted for label in r["registrations"])]


def scan(manager: Any) -> Scan:
    links = registration_links()
    running = running_paths(manager)
    root, info = _scan_hub()
    rows, claimed = _hub_rows(info, links, running)
    rows += _uri_rows([k for k in links if k.path is not None and id(k) not in claimed], running)
    return Scan(rows, root, info, links)


def _scan_hub() -> tuple[Path, Any]:
    from ..hub import hub_cache_dir

    root = hub_cache_dir()
    if not root.is_dir():
        return root, None
    from huggingface_hub import scan_cache_dir

    info = scan_cache_dir(root)
    for problem in info.warnings:
        warnings.warn(f"Hugging Face cache {root}: {problem} (that repository is not listed)", stacklevel=3)
    return root, info


def registration_links() -> list[Link]:
    """The local paths and hub ids of every custom registration, and the hub ids of the built-in ones."""
    from ..model_types import model_type as lookup_model_type, type_names
    from ..registry import builtin_specs, get_registry
    from ..spec import local_path_of

    links = []
    registry = get_registry()
    for model_type in type_names():
        has_specs = lookup_model_type(model_type).has_model_specs
        for builtin, specs in ((False, registry.custom(model_type)), (True, builtin_specs(model_type))):
            for name, spec in specs.items():
                for entry in (spec.model_specs if has_specs else [spec]):
                    uri, model_id = getattr(entry, "model_uri", None), getattr(entry, "model_id", None)
                    if uri and not builtin:
                        try:
                            path = Path(os.path.abspath(local_path_of(uri)))
                        except (ValueError, OSError):
                            continue          # a form the registry refuses; no file to list
                        links.append(Link(model_type, name, builtin, entry, path=path))
                    if model_id and getattr(entry, "model_hub", None) in (None, "huggingface"):
                        links.append(Link(model_type, name, builtin, entry, model_id=model_id))
    return links


def running_paths(manager: Any) -> dict[str, list[Path]]:
    """uid → the files a model of this kernel reads (its model path and LoRA adapters)."""
    from ..engines.options import lora_adapters
    from ..errors import ModelNotFound

    out: dict[str, list[Path]] = {}
    for uid, desc in manager.list_models().items():
        paths = [desc.get("model_path")]
        try:
            paths += [a.path for a in lora_adapters(manager.running_model(uid).options)]
        except (ModelNotFound, KeyError, TypeError):
            pass                              # terminated meanwhile, or no adapters
        out[uid] = [Path(os.path.abspath(p)) for p in paths if p]
    return out


def overlaps(a: Path, b: Path) -> bool:
    """One path is the other or inside it, as written or with links followed."""
    for x, y in ((a, b), (Path(os.path.realpath(a)), Path(os.path.realpath(b)))):
        if x == y or x in y.parents or y in x.parents:
            return True
    return False


def inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _users(path: Path, running: dict[str, list[Path]]) -> list[str]:
    return sorted(uid for uid, paths in running.items() if any(overlaps(path, p) for p in paths))


def _hub_rows(info: Any, links: list[Link], running: dict[str, list[Path]]) -> tuple[list[dict[str, Any]], set]:
    """A row per revision of every model repository; the ids of the links the rows claim."""
    rows, claimed = [], set()
    if info is None:
        return rows, claimed
    for repo in sorted(info.repos, key=lambda r: r.repo_id.lower()):
        if repo.repo_type != "model":
            continue
        for rev in sorted(repo.revisions, key=lambda r: r.last_modified, reverse=True):
            snapshot = Path(os.path.abspath(rev.snapshot_path))
            mine = [k for k in links if (k.path is not None and inside(k.path, snapshot))
                    or k.model_id == repo.repo_id]
            claimed.update(id(k) for k in mine if k.path is not None)
            row = _row(snapshot, mine, running, source=SOURCE_HF, size=rev.size_on_disk,
                       model_version=f"{repo.repo_id}@{rev.commit_hash}", default_name=repo.repo_id)
            row.update(model_id=repo.repo_id, revision=rev.commit_hash, refs=sorted(rev.refs),
                       repo_path=str(repo.repo_path), last_modified=rev.last_modified)
            rows.append(row)
    return rows, claimed


def _uri_rows(links: list[Link], running: dict[str, list[Path]]) -> list[dict[str, Any]]:
    """A row per distinct model_uri path that exists."""
    by_path: dict[Path, list[Link]] = {}
    for link in links:
        by_path.setdefault(link.path, []).append(link)
    rows = []
    for path in sorted(by_path, key=str):
        if not path.exists():
            continue                          # not on disk: nothing cached there
        mine = [k for k in links if inside(k.path, path)]
        rows.append(_row(path, mine, running, source=SOURCE_URI, size=tree_bytes(path), model_version=str(path),
                         default_name=by_path[path][0].model_name))
    return rows


def _row(path: Path, links: list[Link], running: dict[str, list[Path]], *, source: str, size: int,
         model_version: str, default_name: str) -> dict[str, Any]:
    ordered = sorted(links, key=lambda k: (k.builtin, k.path is None, k.model_name))
    facts = file_facts(path)
    first = ordered[0] if ordered else None
    if first is not None:
        facts["model_type"] = first.model_type
        for key in ("model_format", "model_size_in_billions"):
            if facts.get(key) is None:
                facts[key] = getattr(first.entry, key, None)
    labels = list(dict.fromkeys(k.label for k in ordered))
    return {
        "model_name": first.model_name if first is not None else default_name,
        "model_type": facts.get("model_type"),
        "model_format": facts.get("model_format"),
        "model_size_in_billions": facts.get("model_size_in_billions"),
        "quantization": facts.get("quantization"),
        "model_version": model_version,
        "path": str(path),
        "real_path": os.path.realpath(path),
        "size_bytes": size,
        "source": source, "model_id": None, "revision": None, "refs": [], "repo_path": None,
        "quantizations": facts.get("quantizations", []),
        "file_formats": facts.get("file_formats", []),
        "registrations": labels,
        "running": _users(path, running),
        "last_modified": None,
    }


# ------------------------------------------------------------------------------------------------
# facts from the files' metadata
# ------------------------------------------------------------------------------------------------

def file_facts(path: Path) -> dict[str, Any]:
    """model_type / model_format / size / quantization(s) / file formats a path's metadata states
    (keys absent where the files do not say)."""
    try:
        if path.is_file():
            return _gguf_facts([path]) if path.name.lower().endswith(".gguf") else {"file_formats": [_suffix(path)]}
        if not path.is_dir():
            return {}
        names = sorted(e.name for e in os.scandir(path) if e.is_file())
    except OSError:
        return {}
    formats = sorted({_suffix(Path(n)) for n in names if _is_weight(n)})
    if "config.json" not in names and "model_index.json" not in names and "modules.json" not in names:
        from ..metadata.gguf import is_first_part, looks_like_projector_name

        ggufs = [path / n for n in names if n.lower().endswith(".gguf") and is_first_part(n)
                 and not looks_like_projector_name(n)]
        if ggufs:
            return dict(_gguf_facts(ggufs), file_formats=formats)
    return dict(_folder_facts(path, names), file_formats=formats)


def _suffix(path: Path) -> str:
    return path.suffix.lstrip(".").lower()


def _is_weight(name: str) -> bool:
    from ..metadata.weights import WEIGHT_SUFFIXES

    return name.lower().endswith(WEIGHT_SUFFIXES)


def _gguf_facts(files: list[Path]) -> dict[str, Any]:
    from ..metadata.gguf import read_gguf
    from ..metadata.quant import gguf_name_quantization
    from ..parse.detect import GGUF_EMBEDDING_ARCHS

    quants, facts = [], {"model_format": "ggufv2", "model_type": "LLM"}
    for i, file in enumerate(files):
        info = None
        try:
            info = read_gguf(file)
        except (ParseError, OSError):
            pass                              # a file that is not a readable GGUF: its name may still say
        quant = gguf_name_quantization(file.name) or (info.file_type_name if info is not None else None)
        if quant:
            quants.append(quant)
        if i == 0 and info is not None:
            if info.architecture in GGUF_EMBEDDING_ARCHS or info.pooling_type:
                facts["model_type"] = "embedding"
            if info.parameters:
                facts["model_size_in_billions"] = _size(info.parameters)
    facts["quantizations"] = list(dict.fromkeys(quants))
    facts["quantization"] = quants[0] if len(facts["quantizations"]) == 1 else None
    return facts


def _folder_facts(folder: Path, names: list[str]) -> dict[str, Any]:
    from ..metadata.hf import maybe_json, read_config
    from ..metadata.quant import quantization_of
    from ..metadata.weights import safetensors_stats

    facts: dict[str, Any] = {"model_type": _folder_type(folder, names)}
    if "config.json" in names:
        try:
            quant = quantization_of(read_config(folder), folder)
        except ParseError:
            quant = None
        facts["model_format"] = (quant.model_format if quant is not None else None) or "pytorch"
        facts["quantization"] = quant.quantization if quant is not None else "none"
        facts["quantizations"] = [facts["quantization"]]
    elif "model_index.json" in names or maybe_json(folder, "modules.json") is not None:
        facts["model_format"] = "pytorch"
    stats = safetensors_stats(folder)
    if stats and stats[0]:
        facts["model_size_in_billions"] = _size(stats[0])
    return facts


def _folder_type(folder: Path, names: list[str]) -> Optional[str]:
    """The model type parse's detection gives a folder (None when it cannot tell)."""
    from ..metadata.hf import maybe_json
    from ..parse.context import Ctx
    from ..parse.detect import detect_type, st_modules
    from ..parse.locate import Located

    try:
        ctx = Ctx(Located(folder, "dir", "the model cache"), model_type="")
        config = maybe_json(folder, "config.json")
        return detect_type(ctx, folder, set(names), config, maybe_json(folder, "config_sentence_transformers.json"),
                           st_modules(folder))[0]
    except (ParseError, OSError):
        return None


def _size(parameters: int) -> Any:
    from ..metadata.sizes import round_billions, size_form

    return size_form(round_billions(parameters / 1e9))


def tree_bytes(path: Path) -> int:
    """Bytes on disk of a file, or of every file under a folder (links to files followed, each file
    counted once; links to folders not followed)."""
    seen, total, count = set(), 0, 0
    walk = [(str(path), [], [path.name])] if path.is_file() else os.walk(path)
    for root, _dirs, files in walk:
        for name in files:
            count += 1
            if count > MAX_TREE_ENTRIES:
                return total
            full = root if path.is_file() else os.path.join(root, name)
            try:
                st = os.stat(full)
            except OSError:
                continue                      # a broken link holds no bytes
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


# ------------------------------------------------------------------------------------------------
# removal
# ------------------------------------------------------------------------------------------------

@dataclass
class Removal:
    """What removing one cached model deletes (``paths``), found before anything is touched."""

    model_version: str
    source: str
    rows: list[dict[str, Any]]
    paths: list[Path]
    size_bytes: int
    strategy: Any = None              # huggingface_hub's DeleteCacheStrategy (a Hugging Face removal)

    def result(self, deleted: bool) -> dict[str, Any]:
        return {"model_version": self.model_version, "source": self.source, "paths": [str(p) for p in self.paths],
                "size_bytes": self.size_bytes,
                "registrations": list(dict.fromkeys(k for r in self.rows for k in r["registrations"])),
                "running": sorted({u for r in self.rows for u in r["running"]}),
                "needs_" + DELETE_FLAG: self.source == SOURCE_URI, "deleted": deleted}


def remove_cached_model(manager: Any, model_version: Any, delete_user_files: Any = False,
                        dry_run: Any = False) -> dict[str, Any]:
    """Deletes the cached model ``model_version`` names (see the module); ``dry_run=True`` only says
    what would go. Returns ``{"model_version", "source", "paths", "size_bytes", "registrations",
    "running", "needs_delete_user_files", "deleted"}``; a CacheError (nothing deleted) otherwise."""
    check_removal_args(model_version, delete_user_files, dry_run)
    found = scan(manager)
    removal = plan_removal(found, model_version.strip())
    if dry_run:
        return removal.result(False)
    users = removal.result(False)["running"]
    if users:
        raise CacheError(f"{model_version}: running model{'s' if len(users) > 1 else ''} {', '.join(users)} "
                         f"use{'s' if len(users) == 1 else ''} these files; terminate_model() "
                         f"{'them' if len(users) > 1 else 'it'} first. Nothing was deleted")
    if removal.source == SOURCE_URI and not delete_user_files:
        raise CacheError(f"{model_version}: {removal.paths[0]} is a registration's own model_uri "
                         f"({', '.join(removal.result(False)['registrations'])}), not a file of the Hugging Face "
                         f"cache; pass {DELETE_FLAG}=True (xinf / %xinf remove-cache --delete-user-files) to "
                         "delete it. Nothing was deleted")
    _delete(removal)
    return removal.result(True)


def check_removal_args(model_version: Any, delete_user_files: Any, dry_run: Any) -> None:
    for key, value in ((DELETE_FLAG, delete_user_files), ("dry_run", dry_run)):
        if not isinstance(value, bool):
            raise CacheError(f"{key}={short_value(value)}: must be True or False")
    if not isinstance(model_version, str) or not model_version.strip():
        raise CacheError(f"model_version={short_value(model_version)}: give a cached model's model_version "
                         "(list_cached_models() lists them: 'Org/Name@<commit>', 'Org/Name' or a path)")


def plan_removal(found: Scan, text: str) -> Removal:
    """What removing ``text`` would delete; a CacheError when it names no cached model or leads outside."""
    rows = _target_rows(found, text)
    if rows[0]["source"] == SOURCE_HF:
        return _hub_removal(found, text, rows)
    return _user_removal(found, text, rows[0])


def _target_rows(found: Scan, text: str) -> list[dict[str, Any]]:
    """The rows ``text`` names: a path (row, repository folder), "Org/Name@rev" or "Org/Name"."""
    rows = found.rows
    if text.startswith(("/", "~", "file://")) or os.path.isabs(text):
        from ..spec import uri_to_path

        try:
            path = os.path.abspath(uri_to_path(text))
        except ValueError as exc:
            raise CacheError(f"{text}: {exc}") from None
        hit = [r for r in rows if r["path"] == path] or [r for r in rows if r["repo_path"] == path]
    else:
        m = _REPO_VERSION.match(text)
        repo, rev = (m.group("repo"), m.group("rev")) if m else (None, None)
        hit = [r for r in rows if r["source"] == SOURCE_HF and r["model_id"] == repo
               and (rev is None or rev == r["revision"] or rev in r["refs"])]
        hit = hit or [r for r in rows if r["model_version"] == text]
    if not hit:
        listed = ", ".join(r["model_version"] for r in rows[:8]) or "none"
        raise CacheError(f"{text!r} is not a cached model (in the Hugging Face cache {found.root} or a registration's "
                         f"model_uri); the cached ones: {listed}{' ...' if len(rows) > 8 else ''} "
                         "(list_cached_models()). Nothing was deleted")
    return hit


def _hub_removal(found: Scan, text: str, rows: list[dict[str, Any]]) -> Removal:
    commits = {r["revision"] for r in rows}
    repo = next(r for r in found.info.repos if r.repo_id == rows[0]["model_id"] and r.repo_type == "model")
    # the strategy of this repository alone: delete_revisions matches a commit hash in every repository
    alone = dataclasses.replace(found.info, repos=frozenset({repo}))
    strategy = alone.delete_revisions(*sorted(commits))
    folder = Path(os.path.realpath(repo.repo_path))
    if not inside(folder, Path(os.path.realpath(found.root))) or folder == Path(os.path.realpath(found.root)):
        raise CacheError(f"{text}: {repo.repo_path} leads to {folder}, outside the Hugging Face cache "
                         f"{found.root}; nothing was deleted")
    touched = [*strategy.repos, *strategy.snapshots, *strategy.refs, *strategy.blobs, *strategy.files]
    touched += [f.blob_path for rev in repo.revisions if rev.commit_hash in commits for f in rev.files]
    for path in touched:
        if Path(path) != Path(repo.repo_path) and not _stays_in(Path(path), folder):
            raise CacheError(f"{text}: {path} leads outside the repository's folder {repo.repo_path} (to "
                             f"{os.path.realpath(path)}); a cache file must not link out of it. Nothing was "
                             "deleted: remove that link yourself, then try again")
    paths = sorted({Path(p) for p in (*strategy.repos, *strategy.snapshots, *strategy.refs, *strategy.blobs)})
    return Removal(text, SOURCE_HF, rows, paths, int(strategy.expected_freed_size), strategy)


def _stays_in(path: Path, folder: Path) -> bool:
    """``path`` sits in ``folder`` (its parent folder, links followed) and, unless it is a link
    (removing a link removes the link), so does what it is."""
    parent = Path(os.path.realpath(path.parent))
    return inside(parent, folder) and (path.is_symlink() or inside(Path(os.path.realpath(path)), folder))


def _user_removal(found: Scan, text: str, row: dict[str, Any]) -> Removal:
    from ..metadata.gguf import split_parts_present
    from ..registry.store import nb_home

    path = Path(row["path"])
    if path.is_symlink():
        raise CacheError(f"{text}: {path} is a symbolic link (to {os.path.realpath(path)}); only a registration's "
                         "own file or folder is deleted, never what a link leads to. Nothing was deleted")
    real = Path(os.path.realpath(path))
    for what, protected in (("the home folder", Path.home()), ("the working directory", Path.cwd()),
                            ("the Hugging Face cache", found.root), ("XINFERENCE_NB_HOME", nb_home())):
        if inside(Path(os.path.realpath(protected)), real):
            raise CacheError(f"{text}: {path} holds {what} ({protected}); a model's own folder is deleted, never "
                             "one that holds that. Nothing was deleted")
    if path.is_file():
        paths = split_parts_present(path) if path.name.lower().endswith(".gguf") else [path]
    elif not any((path / n).is_file() for n in MODEL_FILES) and not any(
            _is_weight(e.name) for e in os.scandir(path) if e.is_file()):
        raise CacheError(f"{text}: {path} holds no model file ({', '.join(MODEL_FILES[:3])}, weights); "
                         "nothing was deleted")
    else:
        paths = [path]
    return Removal(text, SOURCE_URI, [row], paths, sum(tree_bytes(p) for p in paths))


def _delete(removal: Removal) -> None:
    if removal.strategy is not None:
        removal.strategy.execute()
        return
    for path in removal.paths:
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)          # never follows the links inside
            else:
                path.unlink()
        except OSError as exc:
            raise CacheError(f"{removal.model_version}: cannot delete {path}: {exc.strerror or exc}") from None


def remote_removal(http: Any, model_version: Any, delete_user_files: Any, dry_run: Any,
                   worker_ip: Optional[str]) -> dict[str, Any]:
    """``remove_cached_model`` over REST: GET .../files says what goes (our server answers with
    :class:`Removal`'s result, Xinference with ``{"paths"}``), then DELETE. A Xinference server never
    deletes a registration's own files, so ``delete_user_files`` is refused there before anything."""
    check_removal_args(model_version, delete_user_files, dry_run)
    params = {"model_version": model_version.strip(), **({"worker_ip": worker_ip} if worker_ip is not None else {})}
    preview = http.json("GET", CACHE_FILES_ROUTE, "cache", params=params)
    ours = isinstance(preview, dict) and "deleted" in preview
    if not ours:
        paths = list(preview.get("paths") or []) if isinstance(preview, dict) else []
        if not paths:
            raise CacheError(f"{model_version!r}: the server at {http.endpoint} has no cached model version of that "
                             "name (list_cached_models() lists them); nothing was deleted")
        if delete_user_files:
            raise CacheError(f"{DELETE_FLAG}=True: the Xinference server at {http.endpoint} deletes only its own "
                             "cache, never a registration's model_uri; leave it False. Nothing was deleted")
        preview = {"model_version": params["model_version"], "source": None, "paths": paths, "size_bytes": None,
                   "registrations": [], "running": [], "needs_" + DELETE_FLAG: False, "deleted": False}
    if dry_run:
        return preview
    if delete_user_files:
        params[DELETE_FLAG] = "true"
    answer = http.json("DELETE", CACHE_ROUTE, "cache", params=params)
    if ours:
        return answer
    if not (isinstance(answer, dict) and answer.get("result") is True):
        raise CacheError(f"{model_version!r}: the server at {http.endpoint} answered {short_value(answer)}: it did "
                         "not delete the cache (see its log)")
    return dict(preview, deleted=True)
