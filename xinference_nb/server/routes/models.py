"""Running models: list, launch (with its progress and cancel), describe, terminate; engines."""
from __future__ import annotations

import logging
import threading
import uuid
from typing import Any, Optional

from fastapi import APIRouter

from ...errors import InferenceError, ModelNotFound
from ..bodies import LaunchBody, extras
from ..deps import ClientDep, SettingsDep, StateDep, call, call_model
from ..security import ServerSettings

log = logging.getLogger("xinference_nb.server")

router = APIRouter(tags=["models"])


@router.get("/v1/models")
async def list_models(client: ClientDep):
    models = await call(client.list_models)
    data = []
    for uid, desc in models.items():
        row = {"id": uid, "object": "model", "created": 0, "owned_by": "xinference"}
        row.update({k: v for k, v in dict(desc).items() if k not in ("id",)})
        data.append(row)
    return {"object": "list", "data": data}


def launch_kwargs(body: LaunchBody, settings: ServerSettings) -> dict[str, Any]:
    """``client.launch_model``'s arguments for a launch request, after the settings' checks."""
    payload = body.model_dump()
    payload.update(extras(body))
    # the options' types first (strict booleans...), so the guards and the engine read the same values
    from ...engines.options import parse_launch_options
    from ...spec import normalize_model_type

    named = set(LaunchBody.model_fields) | {"n_worker"}
    payload = {**{k: v for k, v in payload.items() if k in named},
               **parse_launch_options({k: v for k, v in payload.items() if k not in named})}
    settings.check_trust_remote_code(payload)
    settings.check_hub_code(payload)
    settings.check_option_paths({k: v for k, v in payload.items() if k not in named}, payload.get("model_path"))
    settings.check_virtualenv(payload)
    settings.check_path(payload.get("model_path"), "model_path")
    # None means "not given", except where the request said it: n_gpu=None is "CPU only" (Xinference's
    # meaning), not the default "auto"
    sent_none = {"n_gpu"} & body.model_fields_set
    kwargs = {k: v for k, v in payload.items() if v is not None or k in sent_none}
    if kwargs.get("n_worker") == 1:
        kwargs.pop("n_worker")
    model_type = normalize_model_type(kwargs.get("model_type", "LLM"))
    kwargs["model_type"] = model_type
    if model_type == "LLM" and not kwargs.get("model_engine"):
        raise InferenceError("Invalid input. Please specify the `model_engine` field.")
    return kwargs


@router.post("/v1/models")
async def launch_model(body: LaunchBody, client: ClientDep, settings: SettingsDep, wait_ready: bool = True):
    kwargs = launch_kwargs(body, settings)
    if wait_ready:
        uid = await call(client.launch_model, **kwargs)
        return {"model_uid": uid}
    uid = kwargs.get("model_uid") or f"{kwargs['model_name']}-{uuid.uuid4().hex[:8]}"
    kwargs["model_uid"] = uid

    def launch_in_background():
        try:
            client.launch_model(**kwargs)
        except Exception:  # noqa: BLE001 - visible through progress / list_models
            log.exception("background launch of %s failed", uid)

    threading.Thread(target=launch_in_background, name=f"xnb-launch-{uid}", daemon=True).start()
    return {"model_uid": uid}


@router.get("/v1/models/{model_uid}")
async def describe_model(model_uid: str, client: ClientDep):
    return await call_model(model_uid, client.describe_model, model_uid)


@router.delete("/v1/models/{model_uid}")
async def terminate_model(model_uid: str, client: ClientDep, state: StateDep):
    await call_model(model_uid, client.terminate_model, model_uid)
    state.llm_limits.pop(model_uid, None)
    return None


@router.get("/v1/models/{model_uid}/progress")
async def launch_progress(model_uid: str, client: ClientDep):
    progress = await call_model(model_uid, client.get_launch_model_progress, model_uid)
    return progress if isinstance(progress, dict) else {"progress": progress}


@router.post("/v1/models/{model_uid}/cancel")
async def cancel_launch(model_uid: str, client: ClientDep):
    await call_model(model_uid, client.cancel_launch_model, model_uid)
    return None


@router.get("/v1/engines/{model_name}")
async def engines_any(model_name: str, client: ClientDep):
    from ...spec import MODEL_TYPES

    def query():
        last: Optional[Exception] = None
        for model_type in MODEL_TYPES:
            try:
                return client.query_engine_by_model_name(model_name, model_type)
            except ModelNotFound as exc:
                last = exc
        raise last or ModelNotFound(model_name)

    return await call(query)


@router.get("/v1/engines/{model_type}/{model_name}")
async def engines(model_type: str, model_name: str, client: ClientDep):
    return await call(client.query_engine_by_model_name, model_name, model_type)
