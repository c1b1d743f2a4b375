"""Cluster routes: auth, status, version."""
from __future__ import annotations

from fastapi import APIRouter

from ..._version import __version__
from ..deps import SettingsDep

router = APIRouter(tags=["cluster"])


@router.get("/v1/cluster/auth")
async def cluster_auth(settings: SettingsDep):
    return {"auth": bool(settings.api_key)}


@router.get("/status")
async def status():
    return {"status": "ok", "version": __version__}


@router.get("/v1/cluster/version")
async def version():
    return {"version": __version__, "full-revisionid": None, "dirty": False, "error": None,
            "date": None}
