"""/v1/flexible/infers."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from ...model_types import model_type
from ..bodies import FlexibleBody, extras
from ..deps import ClientDep, call_model, handle_for

router = APIRouter(tags=["flexible"])
INFERS = model_type("flexible").routes["infer"]


def jsonable(value: Any) -> Any:
    """A flexible model's result as JSON; what cannot be encoded comes back as ``{"result": repr}``."""
    from fastapi.encoders import jsonable_encoder

    try:
        return jsonable_encoder(value)
    except Exception:  # noqa: BLE001
        return {"result": repr(value)}


@router.post(INFERS)
async def flexible(body: FlexibleBody, client: ClientDep):
    handle = await handle_for(client, body.model, "infer", INFERS)
    result = await call_model(body.model, handle.infer, *(body.args or []), **extras(body))
    return jsonable(result)
