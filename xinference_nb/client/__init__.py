"""Client(): the one object users hold. In-kernel by default; ``Client("http://host:port")`` drives
our REST server or a Xinference cluster with the same methods. Method names, signatures and return shapes follow
Xinference's RESTful client so notebooks move between the two unchanged."""
from __future__ import annotations

from typing import Any, Optional

from ..registry import get_registry
from ..spec import normalize_model_type, to_document
from .cache import CacheAliases


class Client(CacheAliases):
    """``Client()`` runs models in this kernel; ``Client("http://host:port", api_key=...)`` returns a
    RemoteClient with the same methods, for our server or a real Xinference cluster."""

    def __new__(cls, *args: Any, **kwargs: Any):
        endpoint = args[0] if args else kwargs.get("endpoint")
        if endpoint is not None and cls is Client:
            from .remote import RemoteClient

            return RemoteClient(endpoint, api_key=kwargs.get("api_key", args[1] if len(args) > 1 else None))
        return super().__new__(cls)

    def __init__(self, endpoint: Optional[str] = None, api_key: Optional[str] = None):
        self.endpoint = None
        self.api_key = api_key

    def __repr__(self) -> str:
        return "Client(in-kernel)"

    # ------------------------------------------------------------------ registrations
    def register_model(self, model_type: str, model: Any, persist: bool = False, worker_ip: Optional[str] = None,
                       overwrite: bool = False) -> None:
        """Register a custom model. ``model`` is a JSON string, a dict or a spec object.
        ``persist=True`` keeps it across sessions under XINFERENCE_NB_HOME. ``worker_ip`` places a
        registration on one worker of a cluster: only ``Client("http://...")`` has workers."""
        if worker_ip is not None:
            from ..errors import FieldIssue, SpecError

            raise SpecError([FieldIssue("worker_ip", f"{worker_ip!r}: the in-kernel registry has no workers; "
                                        "register through Client('http://supervisor:9997') to place it on a worker")])
        get_registry().register(model_type, model, persist=persist, overwrite=overwrite)

    def unregister_model(self, model_type: str, model_name: str) -> None:
        get_registry().unregister(model_type, model_name)

    def list_model_registrations(self, model_type: str, detailed: bool = False) -> list[dict[str, Any]]:
        return get_registry().list(model_type, detailed=detailed)

    def get_model_registration(self, model_type: str, model_name: str) -> dict[str, Any]:
        """The registration's document: a ``dict`` (``client.registrations.Registration``) that a
        notebook shows as JSON."""
        from .registrations import Registration

        model_type = normalize_model_type(model_type)
        return Registration(to_document(get_registry().get(model_type, model_name)), model_type)

    def export_registrations(self, path: Optional[str] = None, model_types: Optional[list[str]] = None
                             ) -> dict[str, Any]:
        """Every custom registration (of ``model_types``, default all) as one document, also written to
        ``path``: ``import_registrations`` on any client (in-kernel, our server, a Xinference cluster)
        registers them again."""
        from .registrations import export_registrations

        return export_registrations(self, path, model_types)

    def import_registrations(self, source: Any, overwrite: bool = False, persist: bool = True) -> list[str]:
        """Registers every model of an export (its path, JSON text or dict); all or nothing (see
        ``client.registrations``). Returns the names."""
        from .registrations import import_registrations

        return import_registrations(self, source, overwrite=overwrite, persist=persist)

    # ------------------------------------------------------------------ the model cache (client/cache.py)
    def list_cached_models(self, model_name: Optional[str] = None, worker_ip: Optional[str] = None
                           ) -> list[dict[str, Any]]:
        """Every model on disk that the Hugging Face cache (HF_HUB_CACHE / HF_HOME) or a custom
        registration's model_uri holds: one dict each, Xinference's keys (model_name, model_format,
        quantization, model_version, path, real_path, size_bytes...) and ours (revision, refs,
        registrations, running...); ``model_name`` keeps that model's rows only."""
        from .cache import list_cached_models, no_workers

        no_workers(worker_ip)
        return list_cached_models(_manager(), model_name)

    def remove_cached_model(self, model_version: str, delete_user_files: bool = False, dry_run: bool = False,
                            worker_ip: Optional[str] = None) -> dict[str, Any]:
        """Deletes one cached model: ``"Org/Name@<commit or ref>"`` (a revision), ``"Org/Name"`` (the
        repository) or a row's path. A registration's own model_uri (outside the Hugging Face cache)
        only with ``delete_user_files=True``; refused while a model uses the files. ``dry_run=True``:
        what would be deleted. Registrations are kept."""
        from .cache import no_workers, remove_cached_model

        no_workers(worker_ip)
        return remove_cached_model(_manager(), model_version, delete_user_files=delete_user_files, dry_run=dry_run)

    # ------------------------------------------------------------------ running models (in-kernel manager)
    def launch_model(self, model_name: str, model_type: str = "LLM", model_engine: Optional[str] = None,
                     model_uid: Optional[str] = None, model_size_in_billions: Any = None,
                     model_format: Optional[str] = None, quantization: Optional[str] = None, replica: int = 1,
                     n_worker: int = 1, n_gpu: Any = "auto", peft_model_config: Optional[dict] = None,
                     request_limits: Optional[int] = None, worker_ip: Optional[str] = None, gpu_idx: Any = None,
                     replica_config: Any = None, model_path: Optional[str] = None,
                     enable_thinking: Optional[bool] = None, enable_virtual_env: Optional[bool] = None,
                     virtual_env_packages: Optional[list[str]] = None, envs: Optional[dict[str, str]] = None,
                     virtual_env_find_links: Optional[list[str]] = None, **kwargs: Any) -> str:
        """Launch a model in this kernel and return its uid (Xinference's signature; n_gpu=None: CPU)."""
        from ..errors import LaunchError

        if n_worker not in (1, None):
            raise LaunchError(f"n_worker={n_worker}: the in-kernel manager is one worker; use n_worker=1 "
                              "(or Client('http://...') to drive a Xinference cluster)")
        extras = {"peft_model_config": peft_model_config, "request_limits": request_limits, "worker_ip": worker_ip,
                  "replica_config": replica_config, "enable_thinking": enable_thinking,
                  "enable_virtual_env": enable_virtual_env, "virtual_env_packages": virtual_env_packages,
                  "envs": envs, "virtual_env_find_links": virtual_env_find_links}
        for key, value in extras.items():
            if value is not None:
                kwargs.setdefault(key, value)
        return _manager().launch_model(model_name, model_type=model_type, model_engine=model_engine,
                                       model_format=model_format, model_size_in_billions=model_size_in_billions,
                                       quantization=quantization, model_uid=model_uid, model_path=model_path,
                                       n_gpu=n_gpu, gpu_idx=gpu_idx, replica=replica, **kwargs)

    def terminate_model(self, model_uid: str) -> None:
        _manager().terminate_model(model_uid)

    def list_models(self) -> dict[str, dict[str, Any]]:
        return _manager().list_models()

    def describe_model(self, model_uid: str) -> dict[str, Any]:
        return _manager().describe_model(model_uid)

    def get_model(self, model_uid: str) -> Any:
        """The handle of a running model (LLMHandle, EmbeddingHandle, …: by model type)."""
        from .handles import handle_of

        return handle_of(_manager(), model_uid)

    def get_launch_model_progress(self, model_uid: str) -> dict[str, Any]:
        return _manager().get_launch_model_progress(model_uid)

    def cancel_launch_model(self, model_uid: str) -> None:
        _manager().cancel_launch_model(model_uid)

    def query_engine_by_model_name(self, model_name: str, model_type: str = "LLM") -> dict[str, list[dict[str, Any]]]:
        return _manager().query_engine_by_model_name(model_name, model_type=model_type)

    def download_model(self, model_type: str, model_name: str, model_engine: Optional[str] = None,
                       model_format: Optional[str] = None, model_size_in_billions: Any = None,
                       quantization: Optional[str] = None, revision: Optional[str] = None,
                       show_progress: Optional[bool] = None) -> str:
        """Fetch the hub files that ``launch_model`` with the same choices would load (only those: one
        GGUF quantization, or a folder's config, tokenizer and weights) into the Hugging Face cache,
        without launching; returns the local path (the snapshot folder or the .gguf file). ``revision``
        replaces the registration's model_revision. Interrupt it to stop: the next call resumes."""
        return str(_manager().download_model(model_name, model_type=model_type, model_engine=model_engine,
                                             model_format=model_format,
                                             model_size_in_billions=model_size_in_billions,
                                             quantization=quantization, revision=revision,
                                             show_progress=show_progress))


def _manager():
    from ..manager import get_manager

    return get_manager()
