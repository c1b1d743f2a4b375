"""Image models: a diffusers pipeline folder (model_index.json); the family and abilities from the
pipeline class or a built-in model named as model_family."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from ..errors import ParseError
from ..metadata import hf
from .context import Ctx, location_fields, set_first
from .names import choose_model_name, family_of

_IMG2IMG_CAPABLE = {"StableDiffusionPipeline", "StableDiffusionXLPipeline", "StableDiffusion3Pipeline",
                    "FluxPipeline", "KolorsPipeline", "StableDiffusionXLControlNetPipeline"}


def _image_abilities(class_name: str) -> list[str]:
    low = class_name.lower()
    if "inpaint" in low:
        return ["inpainting"]
    if "img2img" in low or "image2image" in low or "edit" in low:
        return ["image2image"]
    if class_name in _IMG2IMG_CAPABLE:
        return ["text2image", "image2image"]
    return ["text2image"]


def image_from_dir(ctx: Ctx, folder: Path, names: set[str], config: dict, model_family: Optional[str],
                   model_name: Optional[str], **_: Any) -> dict:
    index = hf.read_json_object(folder / "model_index.json", "diffusers pipeline index") \
        if "model_index.json" in names else None
    if index is None:
        raise ParseError(f"{folder}: no model_index.json: not a diffusers pipeline folder")
    class_name = str(index.get("_class_name") or "")
    if not class_name:
        raise ParseError(f"{folder / 'model_index.json'}: has no _class_name: cannot tell the pipeline")
    ctx.facts["pipeline_class"] = class_name
    fam = family_of(ctx, model_family)
    name = choose_model_name(ctx, model_name)
    doc: dict[str, Any] = {"version": 2, "model_name": name}
    if not set_first(ctx, doc, "model_family", (fam.model_family if fam is not None else None, ctx.family_label),
                     (ctx.family, "model_family argument"),
                     ("stable_diffusion" if class_name.endswith("Pipeline") else None,
                      f"model_index.json _class_name {class_name!r} (a diffusers pipeline)")):
        raise ParseError(f"{folder / 'model_index.json'}: _class_name {class_name!r} is not a diffusers pipeline; "
                         "pass model_family=...")
    abilities = _image_abilities(class_name)
    if fam is not None and fam.model_ability:
        abilities = list(fam.model_ability)
        ctx.src("model_ability", ctx.family_label)
    else:
        ctx.src("model_ability", f"model_index.json _class_name {class_name!r}")
    doc["model_ability"] = abilities
    if fam is not None:
        for key in ("default_model_config", "default_generate_config"):
            value = getattr(fam, key, None)
            if value:
                doc[key] = dict(value)
                ctx.src(key, ctx.family_label)
    location_fields(ctx, doc, "")
    return doc
