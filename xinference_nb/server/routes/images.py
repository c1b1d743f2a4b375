"""/v1/images/generations."""
from __future__ import annotations

from fastapi import APIRouter

from ...model_types import model_type
from ..bodies import ImageBody, extras, json_kwargs
from ..deps import ClientDep, call_model, handle_for

router = APIRouter(tags=["images"])
GENERATIONS = model_type("image").routes["text_to_image"]


@router.post(GENERATIONS)
async def images(body: ImageBody, client: ClientDep):
    handle = await handle_for(client, body.model, "text_to_image", GENERATIONS)
    kw = json_kwargs(body.kwargs)
    kw.update(extras(body))
    kw.pop("user", None)
    return await call_model(body.model, handle.text_to_image, body.prompt, n=body.n, size=body.size or "1024*1024",
                            response_format=body.response_format or "url", **kw)
