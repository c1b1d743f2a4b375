"""Auto-parse a model's own files into a ready spec, saying where each field came from.

    parsed = parse_model("~/models/Qwen2.5-0.5B-Instruct")          # a folder
    parsed = parse_model("Qwen/Qwen2.5-0.5B-Instruct")             # a hub id already in the HF cache
    parsed = parse_model("/m/qwen2.5-0.5b-instruct-q4_k_m.gguf", model_family="qwen2.5-instruct")
    parsed.spec        # a valid spec object, ready for register_model
    parsed.sources     # {"context_length": "config.json max_position_embeddings", …}
    parsed.warnings    # ["no chat template found: chat ability not set", …]
    print(parsed.preview())                                        # the exact prompt the template makes

Only metadata is read: config / tokenizer / generation config JSON, safetensors headers and index,
the GGUF header, the model card's front matter. Tensor data is never read, so parsing a 70B folder
takes as long as parsing a tiny one. Nothing is downloaded.

Family rules (``model_family``):

* LLM, built-in family (``"qwen2.5-instruct"``): that family's facts fill what the files do not say
  (template, stops, languages, reasoning tags, sizes); the model's own files win. A custom LLM's family
  may not be a built-in name, so the spec's ``model_family`` becomes the model's name.
* LLM, a registered custom family: its facts are the fallback and the name is kept.
* LLM, any other valid name: a new family, no fallback facts. A name that looks like a typo of a
  built-in (``"qwen2.5-instrcut"``, ``"qwen25-instruct"``: a near miss of the nearest built-in, not
  that name plus an affix nor another version number) is a ParseError that suggests the built-in.
* No family: the built-in family is inferred when the hub id, the folder or GGUF file name, or
  config.json's ``_name_or_path`` is one of a built-in's model ids (a warning when the architectures
  differ); else the model stands alone.

Names: the default model_name is the repo / folder / GGUF file name made valid; one that equals a
built-in name of its type is prefixed "custom-". Sizes: a size the name states ("7B", "0.5B") when
the parameters counted agree within 0.6–1.6×, else the inferred family's nearest size, else the count
rounded (≥10B whole, ≥1B one decimal, below one significant digit), in Xinference's form ("0_5", 7).
* embedding / rerank: ``model_family`` names a built-in model of that type to take defaults from.
* image / audio: ``model_family`` is the family written into the spec (``"stable_diffusion"``,
  ``"whisper"``), or a built-in model's name whose family and abilities are taken.

Layout: this module is the entry (locate the files, detect the type, dispatch); ``llm`` (the HF-folder
and GGUF readers → one set of LLM facts → one document builder), ``text`` (embedding, rerank),
``image``, ``audio``, ``names`` (model names, families, sizes), ``detect`` (model type), ``context``
(sources, warnings, languages, validation), ``result`` (ParsedModel), ``locate`` / ``where`` (finding
the files). The files themselves are read through :mod:`xinference_nb.metadata`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

from ..errors import ParseError, SpecError
from ..metadata import hf
from ..metadata.gguf import is_first_part, read_gguf, vision_projectors
from ..metadata.sizes import round_billions, size_form
from ..model_types import model_type as lookup_model_type
from .context import Ctx, finish
from .detect import AUDIO_TYPES, detect_gguf_type, detect_type, module_dir, st_modules
from .llm import facts_from_gguf, gguf_parameters, llm_document
from .locate import Located, locate
from .names import sanitize_name, sizes_in_name, typo_of
from .result import SAMPLE_MESSAGES, SAMPLE_TOOLS, ParsedModel
from .text import gguf_embedding

__all__ = ["parse_model", "ParsedModel", "SAMPLE_MESSAGES", "SAMPLE_TOOLS", "sanitize_name", "sizes_in_name",
           "size_form", "round_billions", "AUDIO_TYPES", "Located", "locate"]

_typo_of = typo_of   # the name the tests know it by


def parse_model(path_or_id: Union[str, os.PathLike], model_type: Optional[str] = None,
                model_family: Optional[str] = None, model_name: Optional[str] = None) -> ParsedModel:
    """Read a model's files into a ready spec (see the module docstring).

    ``path_or_id``: a folder, a ``file://`` URI, a ``.gguf`` file, a Hugging Face cache folder
    (``models--Org--Name``) or a hub id already in the local Hugging Face cache. ``model_type`` is
    detected when omitted. Raises ParseError naming the file when the files cannot give a complete spec.
    """
    wanted_type = None
    if model_type is not None:
        from ..spec import normalize_model_type

        try:
            wanted_type = normalize_model_type(model_type)
        except SpecError as exc:
            raise ParseError(str(exc.issues[0])) from None
        if lookup_model_type(wanted_type).parse_dir is None:
            raise ParseError(f"{wanted_type} models have no files to parse: write their launcher document by hand")
    loc = locate(path_or_id)
    ctx = Ctx(loc, wanted_type or "")
    ctx.src("model_path", loc.how)
    if loc.kind == "gguf":
        return _parse_gguf(ctx, loc.path, wanted_type, model_family, model_name)
    folder = loc.path
    names = hf.file_names(folder)
    modules = st_modules(folder)
    transformer_dirs = module_dir(folder, modules, "Transformer")
    config_dir = transformer_dirs[0] if transformer_dirs else folder
    config = hf.maybe_json(config_dir, "config.json")
    if config is None and "model_index.json" not in names:
        projectors = {p.name for p in vision_projectors(folder)}   # a vision model's mmproj is not a model
        ggufs = sorted(n for n in names if n.lower().endswith(".gguf") and n not in projectors)
        if ggufs:
            firsts = [n for n in ggufs if is_first_part(n)]
            if len(firsts) == 1:
                ctx.src("model_path", loc.how + f"; the folder's only GGUF model {firsts[0]}")
                loc.path, loc.kind = folder / firsts[0], "gguf"
                return _parse_gguf(ctx, loc.path, wanted_type, model_family, model_name)
            raise ParseError(f"{folder}: holds {len(firsts)} GGUF files ({', '.join(firsts[:4])}"
                             f"{'…' if len(firsts) > 4 else ''}) and no config.json; pass one .gguf file")
        raise ParseError(f"{config_dir}: no config.json (nor model_index.json or a .gguf file): this is not a "
                         "model folder, or the download is incomplete")
    st_config = hf.maybe_json(folder, "config_sentence_transformers.json")
    if wanted_type is None:
        detected, why = detect_type(ctx, folder, names, config, st_config, modules)
        ctx.model_type = detected
        ctx.src("model_type", f"detected: {why}")
    else:
        ctx.src("model_type", "model_type argument")
    reader = lookup_model_type(ctx.model_type).parser()  # the type's folder reader (model_types)
    doc = reader(ctx, folder, names, config or {}, model_family, model_name, modules=modules, config_dir=config_dir)
    return finish(ctx, doc)


def _parse_gguf(ctx: Ctx, path: Path, wanted_type: Optional[str], model_family: Optional[str],
                model_name: Optional[str]) -> ParsedModel:
    info = read_gguf(path)
    ctx.facts.update(architecture=info.architecture, gguf_name=info.name, file_type=info.file_type_name,
                     tensor_count=info.tensor_count)
    ctx.model_type = detect_gguf_type(ctx, info, wanted_type)
    if ctx.model_type == "embedding":
        for w in gguf_parameters(info)[2]:
            ctx.warn(w)
        return finish(ctx, gguf_embedding(ctx, info, model_family, model_name))
    return finish(ctx, llm_document(ctx, facts_from_gguf(ctx, info), model_family, model_name))
