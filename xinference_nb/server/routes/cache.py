"""The model cache, on Xinference's routes: list (GET), what a removal deletes (GET .../files) and
remove (DELETE; refused unless the server was started with ``allow_cache_delete``, and then only
inside the allowed roots); and ours, fetch without launching (POST .../download). Query parameters other than the ones a route names are refused."""
from __future__ import annotations

from typing import Optional

from fastapi import APIRouter, Request

from ...client.cache import CACHE_FILES_ROUTE, CACHE_ROUTE, DELETE_FLAG, DOWNLOAD_ROUTE
from ...errors import CacheError
from ..bodies import DownloadBody
from ..deps import ClientDep, SettingsDep, call

router = APIRouter(tags=["cache"])


def _only(request: Request, *names: str) -> None:
    unknown = sorted(set(request.query_params) - set(names))
    if unknown:
        raise CacheError(f"{request.url.path}: unknown query parameter{'s' if len(unknown) > 1 else ''} "
                         f"{', '.join(repr(u[:40]) for u in unknown[:5])}; it takes {', '.join(names)}")


def _flag(value: Optional[str]) -> bool:
    """A boolean query parameter: "true" or "false" only (not "1", "yes" or "on")."""
    if value is None or value == "false":
        return False
    if value == "true":
        return True
    raise CacheError(f"{DELETE_FLAG}={value[:40]!r}: must be true or false")


@router.get(CACHE_ROUTE)
async def list_cached_models(request: Request, client: ClientDep, model_name: Optional[str] = None,
                             worker_ip: Optional[str] = None):
    _only(request, "model_name", "worker_ip")
    return {"list": await call(client.list_cached_models, model_name, worker_ip)}


@router.get(CACHE_FILES_ROUTE)
async def list_deletable_models(request: Request, client: ClientDep, model_version: Optional[str] = None,
                                worker_ip: Optional[str] = None):
    _only(request, "model_version", "worker_ip")
    plan = await call(client.remove_cached_model, model_version, dry_run=True, worker_ip=worker_ip)
    return dict(plan, worker_ip=worker_ip)


@router.delete(CACHE_ROUTE)
async def remove_cached_model(request: Request, client: ClientDep, settings: SettingsDep,
                              model_version: Optional[str] = None, worker_ip: Optional[str] = None,
                              delete_user_files: Optional[str] = None):
    _only(request, "model_version", "worker_ip", DELETE_FLAG)
    settings.check_cache_delete([])      # refused before anything is read when the server does not allow it
    delete_user_files = _flag(delete_user_files)
    plan = await call(client.remove_cached_model, model_version, delete_user_files=delete_user_files, dry_run=True,
                      worker_ip=worker_ip)
    settings.check_cache_delete(plan["paths"])
    return await call(client.remove_cached_model, model_version, delete_user_files=delete_user_files,
                      worker_ip=worker_ip)


@router.post(DOWNLOAD_ROUTE)
async def download_model(body: DownloadBody, client: ClientDep):
    """Fetches a registration's hub files into this server's Hugging Face cache, without launching (its
    own progress bar is off: the request waits for the download); the path there."""
    path = await call(client.download_model, body.model_type, body.model_name, model_engine=body.model_engine,
                      model_format=body.model_format, model_size_in_billions=body.model_size_in_billions,
                      quantization=body.quantization, revision=body.revision, show_progress=False)
    return {"path": path}
