"""The routes of the handle methods that had none, at Xinference's paths:
/v1/convert_ids_to_tokens (embedding), /v1/images/variations (image_to_image), /v1/images/inpainting
(/v1/audio/translations lives beside transcriptions in routes/audio.py). The paths are the ones ``model_types`` names for the remote handles
(tests/test_protocols.py checks both ends).
"""
from __future__ import annotations

from typing import Any, Union

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict

from ...errors import InferenceError
from ...model_types import model_type
from ..bodies import form_number, json_kwargs, read_form
from ..deps import ClientDep, call_model, handle_for

router = APIRouter()

CONVERT_IDS = model_type("embedding").routes["convert_ids_to_tokens"]
VARIATIONS = model_type("image").routes["image_to_image"]
INPAINTING = model_type("image").routes["inpainting"]

IMAGE_FIELDS = frozenset({"model", "prompt", "negative_prompt", "n", "size", "response_format", "kwargs", "image"})
INPAINTING_FIELDS = IMAGE_FIELDS | {"mask_image"}


class ConvertIdsBody(BaseModel):
    """``{"model": uid, "input": ids | [ids, ...]}``; nothing else is taken."""

    model_config = ConfigDict(extra="forbid", strict=True)
    model: str
    input: Union[int, list[int], list[list[int]]]


def _multipart(required: list[str], files: list[str]) -> dict[str, Any]:
    props: dict[str, Any] = {"model": {"type": "string"}, "prompt": {"type": "string"},
                             "negative_prompt": {"type": "string"}, "n": {"type": "integer"},
                             "size": {"type": "string"}, "response_format": {"type": "string"},
                             "kwargs": {"type": "string"}}
    props.update({name: {"type": "string", "format": "binary"} for name in files})
    return {"requestBody": {"content": {"multipart/form-data": {"schema": {
        "type": "object", "required": required, "properties": props}}}, "required": True}}


@router.post(CONVERT_IDS, tags=["openai"])
async def convert_ids_to_tokens(body: ConvertIdsBody, client: ClientDep):
    handle = await handle_for(client, body.model, "convert_ids_to_tokens", CONVERT_IDS)
    return await call_model(body.model, handle.convert_ids_to_tokens, body.input)


def _text(form: Any, name: str) -> Any:
    values = form.getlist(name)
    if len(values) > 1 or (values and not isinstance(values[0], str)):
        raise InferenceError(f"{name}: one text field expected")
    return (values[0] or None) if values else None


async def _files(form: Any, name: str) -> list[bytes]:
    out = []
    for item in form.getlist(name):
        if isinstance(item, str) or not hasattr(item, "read"):
            raise InferenceError(f"{name}: a file upload is expected, got a text field")
        out.append(await item.read())
    return out


async def _image_call(request: Request, client: Any, method: str, route: str) -> Any:
    """image_to_image / inpainting from a multipart form (Xinference's fields), every field checked."""
    allowed = INPAINTING_FIELDS if method == "inpainting" else IMAGE_FIELDS
    form = await read_form(request, allowed, f"send {route} as multipart/form-data: the "
                           f"image{'s' if method == 'inpainting' else ''} as file uploads, the rest as form fields")
    uid = _text(form, "model")
    handle = await handle_for(client, uid, method, route)
    images = await _files(form, "image")
    if not images:
        raise InferenceError("image: an image file upload is required")
    prompts = form.getlist("prompt")
    if not all(isinstance(p, str) for p in prompts):
        raise InferenceError("prompt: text expected")
    prompt: Any = prompts[0] if len(prompts) == 1 else (list(prompts) or None)
    n = form_number("n", _text(form, "n") or 1)
    if n != int(n) or not 1 <= n <= 10:
        raise InferenceError(f"n: must be a whole number from 1 to 10, got {_text(form, 'n')!r:.40}")
    kw = json_kwargs(_text(form, "kwargs"))
    kw.update(negative_prompt=_text(form, "negative_prompt"), n=int(n), size=_text(form, "size"),
              response_format=_text(form, "response_format") or "url")
    image: Any = images[0] if len(images) == 1 else images
    if method == "inpainting":
        masks = await _files(form, "mask_image")
        if len(masks) != 1:
            raise InferenceError("mask_image: one mask image file upload is required")
        return await call_model(uid, handle.inpainting, image, masks[0], prompt, **kw)
    return await call_model(uid, handle.image_to_image, image, prompt, **kw)


@router.post(VARIATIONS, tags=["images"], openapi_extra=_multipart(["model", "image"], ["image"]))
async def image_variations(request: Request, client: ClientDep):
    return await _image_call(request, client, "image_to_image", VARIATIONS)


@router.post(INPAINTING, tags=["images"],
             openapi_extra=_multipart(["model", "image", "mask_image"], ["image", "mask_image"]))
async def image_inpainting(request: Request, client: ClientDep):
    return await _image_call(request, client, "inpainting", INPAINTING)
