"""Model registrations: list, register, get, unregister; and auto-register (parse a folder)."""
from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from ..bodies import AutoRegisterBody, RegisterBody, refuse_extras
from ..deps import ClientDep, SettingsDep, call

router = APIRouter(tags=["registrations"])


@router.post("/v1/models/llm/auto-register")
async def auto_register(body: AutoRegisterBody, settings: SettingsDep):
    settings.check_path(body.model_path, "model_path")
    name = refuse_extras(body, "/v1/models/llm/auto-register", allowed=("model_name",)).get("model_name")

    def parse():
        from ...parse import parse_model
        from ...spec import to_document

        result = parse_model(body.model_path, model_type="LLM", model_family=body.model_family or None,
                             model_name=name if isinstance(name, str) and name else None)
        spec = getattr(result, "spec", result)
        if isinstance(spec, BaseModel):
            return to_document(spec)
        return spec

    return await call(parse)


@router.get("/v1/model_registrations/{model_type}")
async def list_registrations(model_type: str, client: ClientDep, detailed: bool = False):
    return await call(client.list_model_registrations, model_type, detailed)


@router.post("/v1/model_registrations/{model_type}")
async def register_model(model_type: str, body: RegisterBody, client: ClientDep, settings: SettingsDep):
    from ...spec import normalize_model_type

    model_type = normalize_model_type(model_type)
    settings.check_flexible(model_type)
    refuse_extras(body, f"/v1/model_registrations/{model_type}")
    doc: Any = body.model
    if isinstance(doc, str):
        try:
            doc = json.loads(doc)
        except json.JSONDecodeError:
            doc = body.model  # load_spec explains what is wrong with it
    if isinstance(doc, dict):
        settings.check_document_paths(doc)
        settings.check_trust_remote_code(doc)
        settings.check_virtualenv(doc)
    await call(client.register_model, model_type, doc, persist=body.persist, overwrite=body.overwrite,
               worker_ip=body.worker_ip)
    return None


@router.get("/v1/model_registrations/{model_type}/{model_name}")
async def get_registration(model_type: str, model_name: str, client: ClientDep):
    return await call(client.get_model_registration, model_type, model_name)


@router.delete("/v1/model_registrations/{model_type}/{model_name}")
async def unregister(model_type: str, model_name: str, client: ClientDep):
    await call(client.unregister_model, model_type, model_name)
    return None
