"""Fetch the files a launch needs from a model hub into the standard Hugging Face cache.

``fetch(HubModel.of(entry, format, quantization))`` returns a local path (the snapshot folder, or
the .gguf file to load) for a registration's ``model_id`` / ``model_hub`` / ``model_revision``:

* Hugging Face (huggingface_hub's own client, ``HF_ENDPOINT`` / ``HF_HUB_CACHE`` / ``HF_TOKEN`` as it
  reads them): the repository's file list at the revision (one API call), then only the files
  :func:`..hub.files.needed_files` chooses; files already in the cache at that commit are reused
  without a request. Each missing file is streamed into ``blobs/<etag>.incomplete``, resuming what an
  earlier, interrupted launch left there with a Range request, and huggingface_hub links it into
  ``snapshots/<commit>`` and records ``refs/<revision>``. (huggingface_hub's own downloads since 1.x
  write a fresh temporary file per process and delete it when interrupted, so they never resume.)
* One bar (``progress.DownloadProgress``) for the whole download. A KeyboardInterrupt (the kernel's
  interrupt) or a cancelled launch stops it at once; the partial file stays for the next launch.
* Offline (``HF_HUB_OFFLINE=1``) or unreachable: the cached snapshot when it holds what is needed,
  else a LaunchError naming the repository and how to get its files.
* ModelScope: through the ``modelscope`` client where it is installed, else a LaunchError naming it.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Optional
from urllib.parse import urlsplit

from ..errors import LaunchError
from ..progress import DownloadProgress
from . import (HUBS, HUGGINGFACE, MODELSCOPE, cached_snapshot, hub_cache_dir, repo_cache_folder, repo_id_problem,
               revision_problem, snapshot_files)
from .files import needed_files

_ETAG = re.compile(r"^[A-Za-z0-9_\-]{1,128}$")   # a blob's file name in the cache
_NETWORK_ERRORS = frozenset({"ConnectError", "TimeoutException", "NetworkError", "ConnectionError", "Timeout",
                             "ProxyError", "OfflineModeIsEnabled"})


@dataclass(frozen=True)
class HubModel:
    """Where a registration's files are on a hub, and which of them a launch needs."""

    repo_id: str
    hub: str = HUGGINGFACE
    revision: Optional[str] = None
    model_format: Optional[str] = None
    quantization: Optional[str] = None
    file_template: Optional[str] = None
    split_template: Optional[str] = None
    quantization_parts: Optional[dict[str, list[str]]] = None
    projector: Optional[str] = None      # a vision GGUF's mmproj file, a name beside the model file

    @classmethod
    def of(cls, holder: Any, model_format: Optional[str], quantization: Optional[str],
           revision: Optional[str] = None, projector: Any = None) -> "HubModel":
        """The hub files of a model_specs entry (or an image / audio document): its model_id (with
        "{quantization}" filled, as Xinference does), model_hub and model_revision (``revision`` wins);
        a ggufv2 entry's projector: the launch option ``multimodal_projector`` when it is a name beside
        the model, else the first of ``multimodal_projectors`` (the one the llama.cpp engine loads)."""
        listed = getattr(holder, "multimodal_projectors", None) or []
        if not (isinstance(projector, str) and projector and not projector.startswith(("/", "~"))):
            projector = listed[0] if listed and model_format == "ggufv2" else None
        model_id = holder.model_id
        if isinstance(model_id, str) and "{quantization}" in model_id:
            model_id = model_id.replace("{quantization}", quantization or "")
        return cls(repo_id=model_id, hub=getattr(holder, "model_hub", None) or HUGGINGFACE,
                   revision=revision if revision is not None else getattr(holder, "model_revision", None),
                   model_format=model_format, quantization=quantization,
                   file_template=getattr(holder, "model_file_name_template", None),
                   split_template=getattr(holder, "model_file_name_split_template", None),
                   quantization_parts=getattr(holder, "quantization_parts", None), projector=projector)

    @property
    def label(self) -> str:
        return self.repo_id + (f" at revision {self.revision!r}" if self.revision else "")

    def check(self) -> None:
        """LaunchError for an id, revision or hub that must not reach a URL or the cache."""
        problem = repo_id_problem(self.repo_id)
        if problem:
            raise LaunchError(f"model_id {problem}")
        problem = revision_problem(self.revision)
        if problem:
            raise LaunchError(f"model_revision of {self.repo_id}: {problem}")
        if self.hub not in HUBS:
            raise LaunchError(f"model_hub {self.hub!r} of {self.repo_id}: files are fetched from "
                              f"{' or '.join(repr(h) for h in HUBS)}; set model_hub to one of them, or set model_uri "
                              "to the files on this machine")

    def needed(self, names: list[str]) -> list[str]:
        files = needed_files(names, self.model_format, self.quantization, self.file_template, self.split_template,
                             self.quantization_parts, where=self.label)
        if self.model_format == "ggufv2" and self.projector:
            folder = PurePosixPath(files[0]).parent
            name = str(folder / self.projector) if str(folder) != "." else self.projector
            if name not in names:
                ggufs = sorted(n for n in names if n.lower().endswith(".gguf"))
                raise LaunchError(f"{self.label} has no projector {name!r} (multimodal_projectors / "
                                  f"multimodal_projector); its GGUF files: {', '.join(ggufs[:12]) or 'none'}")
            files.append(name)
        return files

    def local_path(self, snapshot: Path, files: list[str]) -> Path:
        """What the engine loads: the first GGUF file, else the snapshot folder."""
        return snapshot / files[0] if self.model_format == "ggufv2" else snapshot


def fetch(model: HubModel, progress: Optional[Callable[[str, float], None]] = None,
          show: Optional[bool] = None) -> Path:
    """The local path of ``model``'s files, downloaded first when the cache lacks some (module docstring)."""
    model.check()
    if model.hub == MODELSCOPE:
        return _from_modelscope(model)
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return _from_cache(model, "HF_HUB_OFFLINE is set")
    info = _model_info(model)
    if isinstance(info, str):
        return _from_cache(model, info)
    siblings = [s for s in (info.siblings or []) if isinstance(getattr(s, "rfilename", None), str)]
    files = model.needed([s.rfilename for s in siblings])
    sizes = {s.rfilename: s.size for s in siblings}
    snapshot = _download(model, str(info.sha), files, sizes, progress, show)
    return model.local_path(snapshot, files)


def _model_info(model: HubModel) -> Any:
    """The repository's info at the revision, with its files; the reason as a string when the hub
    cannot be reached (so the cache is tried); LaunchError for what the hub refused."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    try:
        info = HfApi().model_info(model.repo_id, revision=model.revision, files_metadata=True)
    except RevisionNotFoundError:
        raise LaunchError(f"{model.repo_id} has no revision {model.revision!r} on {constants.ENDPOINT}; fix "
                          "model_revision in the registration (a branch, tag or commit of the repository)") from None
    except GatedRepoError:
        raise LaunchError(f"{model.repo_id} is gated on {constants.ENDPOINT}: accept its terms on the model's page "
                          "and log in (`hf auth login`, or set HF_TOKEN) to download it") from None
    except RepositoryNotFoundError:
        raise LaunchError(f"{model.repo_id}: no such model repository on {constants.ENDPOINT} (or it is private "
                          "and no token gives access: `hf auth login` or HF_TOKEN); check model_id") from None
    except HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status is not None and (status >= 500 or status == 429):
            return f"{constants.ENDPOINT} answered HTTP {status}"
        raise LaunchError(f"{model.label}: the hub refused the file list (HTTP {status}): "
                          f"{str(exc).splitlines()[0]}") from None
    except Exception as exc:  # noqa: BLE001 - the client's network errors differ by version (httpx, requests)
        if _is_network_error(exc):
            return f"{constants.ENDPOINT} is unreachable: {type(exc).__name__}: {exc}"
        raise LaunchError(f"{model.label}: asking {constants.ENDPOINT} for its files failed: "
                          f"{type(exc).__name__}: {exc}") from None
    if not getattr(info, "sha", None):
        raise LaunchError(f"{model.label}: {constants.ENDPOINT} named no commit for the revision; is HF_ENDPOINT a "
                          "Hugging Face Hub?")
    return info


def _is_network_error(exc: BaseException) -> bool:
    return isinstance(exc, OSError) or any(c.__name__ in _NETWORK_ERRORS for c in type(exc).__mro__)


def _from_cache(model: HubModel, reason: str) -> Path:
    """The cached snapshot when it holds every file a launch needs; else LaunchError saying how to get them."""
    snapshot = cached_snapshot(model.repo_id, model.revision, hub_cache_dir())
    partly = ""
    if snapshot is not None:
        try:
            files = model.needed(snapshot_files(snapshot))
            if _shards_present(snapshot, files):
                return model.local_path(snapshot, files)
        except LaunchError:
            pass
        partly = " (only part of them)"
    raise LaunchError(
        f"{model.label}: the files are not in the Hugging Face cache ({hub_cache_dir()}){partly} and the hub cannot "
        f"be reached ({reason}). Get them where the hub is reachable: launch again there (with HF_HUB_OFFLINE unset) "
        f"or run client.download_model(...) or `hf download {model.repo_id}`, then copy the cache folder "
        f"{repo_cache_folder(model.repo_id, hub_cache_dir()).name} here (or point HF_HUB_CACHE at it); or register "
        "model_uri= the model's local folder or file (register_model(..., overwrite=True)), or pass model_path=...")


def _shards_present(snapshot: Path, files: list[str]) -> bool:
    """Every weight file a ``*.index.json`` of ``files`` names is in the snapshot."""
    for name in files:
        if name.endswith(".index.json"):
            try:
                weight_map = json.loads((snapshot / name).read_text()).get("weight_map") or {}
            except (OSError, ValueError, AttributeError):
                return False
            folder = (snapshot / name).parent
            if not all((folder / str(f)).is_file() for f in set(weight_map.values())):
                return False
    return True


def _download(model: HubModel, commit: str, files: list[str], sizes: dict[str, Optional[int]],
              progress: Optional[Callable[[str, float], None]], show: Optional[bool]) -> Path:
    """Downloads the files the cache lacks at ``commit`` (one bar for all) and returns the snapshot folder."""
    from huggingface_hub import try_to_load_from_cache

    cache = hub_cache_dir()
    todo = [f for f in files if not isinstance(
        try_to_load_from_cache(model.repo_id, f, cache_dir=str(cache), revision=commit), str)]
    snapshot = repo_cache_folder(model.repo_id, cache) / "snapshots" / commit
    if todo:
        bar = DownloadProgress(model.repo_id, sum(sizes.get(f) or 0 for f in todo), show, progress)
        try:
            for name in todo:
                _download_file(model, commit, name, cache, bar)
        finally:
            bar.close()
    missing = [f for f in files if not (snapshot / f).is_file()]
    if missing:
        raise LaunchError(f"{model.label} changed on the hub while its files were downloading ({', '.join(missing)} "
                          "went to a newer commit); launch again")
    return snapshot


def _download_file(model: HubModel, commit: str, name: str, cache: Path, bar: DownloadProgress) -> None:
    """One file: its blob streamed into the cache (resumed when a partial one is there), then linked
    into the snapshot by huggingface_hub."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url
    from huggingface_hub.utils import WeakFileLock

    url = hf_hub_url(model.repo_id, name, revision=commit)
    try:
        meta = get_hf_file_metadata(url)
    except Exception as exc:  # noqa: BLE001 - the client's HTTP and network errors
        raise LaunchError(f"{model.label}: the hub gave no metadata for {name}: {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
    etag = meta.etag or ""
    if not _ETAG.fullmatch(etag):
        raise LaunchError(f"{model.label}: the hub named {name}'s content {etag[:80]!r}, which is no blob name; is "
                          "HF_ENDPOINT a Hugging Face Hub?")
    storage = repo_cache_folder(model.repo_id, cache)
    blob = storage / "blobs" / etag
    if not blob.exists():
        lock = cache / ".locks" / storage.name / f"{etag}.lock"
        lock.parent.mkdir(parents=True, exist_ok=True)
        blob.parent.mkdir(parents=True, exist_ok=True)
        with WeakFileLock(str(lock)):
            if not blob.exists():
                _transfer(model, name, url, meta, blob, bar)
    # the client itself links the blob into snapshots/<commit> and records refs/<revision>
    hf_hub_download(model.repo_id, name, revision=model.revision or "main", cache_dir=str(cache))


def _transfer(model: HubModel, name: str, url: str, meta: Any, blob: Path, bar: DownloadProgress) -> None:
    """Streams ``name`` into ``<blob>.incomplete`` from where an earlier try stopped (a Range request),
    then moves it in place. An interrupt leaves the partial file for the next launch."""
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import build_hf_headers

    partial = blob.with_name(blob.name + ".incomplete")
    done = partial.stat().st_size if partial.exists() else 0
    if meta.size is not None and done > meta.size:
        partial.unlink()
        done = 0
    headers = build_hf_headers()
    if urlsplit(meta.location).netloc != urlsplit(url).netloc:
        headers.pop("authorization", None)   # a CDN's signed URL: the token stays with the hub
    try:
        with open(partial, "ab") as fh:
            http_get(meta.location, fh, resume_size=done, headers=headers, expected_size=meta.size,
                     displayed_filename=name, tqdm_class=_bar_class(bar))
    except KeyboardInterrupt as exc:
        exc.add_note(_kept(model, name, partial))
        raise
    except LaunchError as exc:   # the launch was cancelled (cancel_launch_model, terminate_model)
        exc.add_note(_kept(model, name, partial))
        raise
    except Exception as exc:  # noqa: BLE001 - network and HTTP errors of the client
        if "Consistency check failed" in str(exc):
            partial.unlink(missing_ok=True)   # the bytes do not add up: start this file again next time
        raise LaunchError(f"{model.label}: downloading {name} failed: {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}. {_kept(model, name, partial)}") from None
    os.replace(partial, blob)


def _kept(model: HubModel, name: str, partial: Path) -> str:
    size = partial.stat().st_size if partial.exists() else 0
    return (f"{size} bytes of {model.repo_id}/{name} are kept in {partial}; launching again (or download_model) "
            "resumes from there" if size else f"nothing of {model.repo_id}/{name} was kept")


def _bar_class(bar: DownloadProgress) -> type:
    """The progress class huggingface_hub's ``http_get`` drives: its counts go to the one bar of the
    download (a resumed file's bytes already there count from ``initial``, where it says it starts)."""

    class _FileBar:
        def __init__(self, *args: Any, initial: int = 0, **kwargs: Any):
            bar.update(initial)

        def __enter__(self) -> "_FileBar":
            return self

        def __exit__(self, *exc: Any) -> None:
            return None

        def update(self, n: Optional[float] = 1) -> None:
            bar.update(int(n or 0))

        def set_postfix_str(self, *args: Any, **kwargs: Any) -> None:
            return None

        def close(self) -> None:
            return None

    return _FileBar


def _from_modelscope(model: HubModel) -> Path:
    """ModelScope's files through its own client (its cache, its progress bars)."""
    if importlib.util.find_spec("modelscope") is None:
        raise LaunchError(f"{model.label} is on ModelScope (model_hub='modelscope'), and its client is not installed: "
                          "pip install modelscope; or register the Hugging Face repository with "
                          "model_hub='huggingface', or set model_uri to the files on this machine")
    from modelscope import snapshot_download

    if model.model_format == "ggufv2":
        wanted = (model.file_template or "*{quantization}*.gguf").replace("{quantization}", model.quantization or "")
        patterns: dict[str, Any] = {"allow_patterns": [wanted] + ([f"*{model.projector}"] if model.projector else [])}
    else:
        patterns = {"ignore_patterns": ["*.gguf", "*.onnx", "*.msgpack", "*.h5", "*.ot", "*.tflite", "original/*",
                                        "onnx/*", "openvino/*"]}
    try:
        folder = Path(snapshot_download(model.repo_id, revision=model.revision, **patterns))
    except Exception as exc:  # noqa: BLE001 - modelscope's errors
        raise LaunchError(f"{model.label}: ModelScope's download failed: {type(exc).__name__}: {exc}") from None
    files = model.needed(snapshot_files(folder))
    return model.local_path(folder, files)
