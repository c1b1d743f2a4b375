"""/v1/embeddings and /v1/rerank, over the dynamic batchers (``..batching``).

Batch keys are model uids (so one model runs one batched call at a time); items carry their
request's options, and a batch makes one call per distinct set of options. A request the batcher
cannot take (token ids, options that are not JSON) calls the model alone.
"""
from __future__ import annotations

import base64
import functools
import json
import struct
import uuid
from typing import Any, Optional

from fastapi import APIRouter

from ...errors import InferenceError, ModelNotFound
from ...model_types import model_type
from ..batching import Batcher
from ..bodies import EmbeddingBody, RerankBody, extras, json_kwargs
from ..deps import ClientDep, EmbedBatcherDep, RerankBatcherDep, call_model, handle_for
from ..http_errors import not_found
from ..security import ServerSettings

router = APIRouter()

EMBEDDINGS = model_type("embedding").routes["create_embedding"]
RERANK = model_type("rerank").routes["rerank"]


# ------------------------------------------------------------------------------------------------
# the batches
# ------------------------------------------------------------------------------------------------

def run_embedding_batch(client: Any, uid: str, items: list[tuple[str, tuple]]) -> list[tuple[Any, float]]:
    """items: (text, frozen options) → (vector, share of the batch's prompt tokens) per text."""
    handle = client.get_model(uid)
    out: list[Any] = [None] * len(items)
    groups: dict[tuple, list[int]] = {}
    for i, (_text, frozen) in enumerate(items):
        groups.setdefault(frozen, []).append(i)
    for frozen, idxs in groups.items():
        texts = [items[i][0] for i in idxs]
        result = handle.create_embedding(texts, **{k: json.loads(v) for k, v in frozen})
        data = sorted(result["data"], key=lambda d: d.get("index", 0))
        # usage is per call: each text gets a share by length (exact for one-text calls)
        total = (result.get("usage") or {}).get("prompt_tokens") or 0
        weights = [len(t) + 1 for t in texts]
        scale = total / sum(weights)
        for i, d, w in zip(idxs, data, weights):
            out[i] = (d["embedding"], w * scale)
    return out


def run_rerank_batch(client: Any, uid: str, items: list[tuple[str, Any, tuple]]) -> list[Any]:
    """items: (query as JSON, document, frozen options); one call per distinct query and options."""
    handle = client.get_model(uid)
    out: list[Any] = [None] * len(items)
    groups: dict[tuple, list[int]] = {}
    for i, (q, _doc, frozen) in enumerate(items):
        groups.setdefault((q, frozen), []).append(i)
    for (q, frozen), idxs in groups.items():
        docs = [items[i][1] for i in idxs]
        res = handle.rerank(docs, json.loads(q), top_n=None, return_documents=True, return_len=True,
                            **{k: json.loads(v) for k, v in frozen})
        tokens = ((res.get("meta") or {}).get("tokens") or {})
        weights = [len(json.dumps(d)) + 1 for d in docs]
        scale_in = (tokens.get("input_tokens") or 0) / sum(weights)
        for r in res["results"]:
            out[idxs[r["index"]]] = (r, weights[r["index"]] * scale_in)
    return out


def make_batchers(client: Any, settings: ServerSettings) -> tuple[Batcher, Batcher]:
    """(embedding batcher, rerank batcher) over ``client``'s models."""
    wait = settings.batch_wait_ms / 1000
    return (Batcher(functools.partial(run_embedding_batch, client), max_wait_s=wait, max_items=settings.max_batch),
            Batcher(functools.partial(run_rerank_batch, client), max_wait_s=wait, max_items=settings.max_batch))


def _frozen(options: dict[str, Any]) -> Optional[tuple]:
    """Options as a hashable batch key part; None when they are not JSON values."""
    try:
        return tuple(sorted((k, json.dumps(v, sort_keys=True)) for k, v in options.items()))
    except TypeError:
        return None


def encode(vec: Any, fmt: str) -> Any:
    """An embedding as sent: a list of floats, or (``base64``) little-endian float32s in base64."""
    if fmt == "base64":
        values = [float(x) for x in vec]
        return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode("ascii")
    return vec


# ------------------------------------------------------------------------------------------------
# the routes
# ------------------------------------------------------------------------------------------------

def _texts(inp: Any) -> Optional[list[str]]:
    """The texts of an embedding input the batcher takes (a string or a list of strings), else None."""
    if isinstance(inp, str):
        return [inp]
    if isinstance(inp, list) and inp and all(isinstance(t, str) for t in inp):
        return list(inp)
    if isinstance(inp, list) and not inp:
        raise InferenceError("input: must not be empty")
    return None


@router.post(EMBEDDINGS, tags=["openai"])
async def embeddings(body: EmbeddingBody, client: ClientDep, batcher: EmbedBatcherDep):
    uid = body.model
    handle = await handle_for(client, uid, "create_embedding", EMBEDDINGS)
    fmt = body.encoding_format or "float"
    if fmt not in ("float", "base64"):
        raise InferenceError(f"encoding_format: {fmt!r} is not supported; use \"float\" or \"base64\"")
    kw = {k: v for k, v in extras(body).items() if k not in ("user",)}
    if body.dimensions is not None:
        kw["dimensions"] = body.dimensions
    texts = _texts(body.input)
    frozen = _frozen(kw) if texts is not None else None
    if frozen is not None:
        try:
            rows = await batcher.submit(uid, [(t, frozen) for t in texts])
        except ModelNotFound as exc:
            raise not_found(uid, exc) from None
        tokens = int(round(sum(t for _, t in rows)))
        data = [{"index": i, "object": "embedding", "embedding": encode(e, fmt)} for i, (e, _) in enumerate(rows)]
        return {"object": "list", "model": uid, "data": data,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
    result = await call_model(uid, handle.create_embedding, body.input, **kw)
    if fmt == "base64" and isinstance(result, dict):
        result = dict(result, data=[dict(d, embedding=encode(d["embedding"], fmt)) for d in result["data"]])
    return result


@router.post(RERANK, tags=["rerank"])
async def rerank(body: RerankBody, client: ClientDep, batcher: RerankBatcherDep):
    uid = body.model
    await handle_for(client, uid, "rerank", RERANK)
    kw = json_kwargs(body.kwargs)
    kw.update({k: v for k, v in extras(body).items() if k not in kw})
    if body.max_chunks_per_doc is not None:
        kw["max_chunks_per_doc"] = body.max_chunks_per_doc
    if not body.documents:
        raise InferenceError("documents: must not be empty")
    frozen = _frozen(kw)
    if frozen is None:
        raise InferenceError("rerank options must be JSON values")
    try:
        rows = await batcher.submit(uid, [(json.dumps(body.query), d, frozen) for d in body.documents])
    except ModelNotFound as exc:
        raise not_found(uid, exc) from None
    results = [{"index": i, "relevance_score": r["relevance_score"],
                "document": r.get("document") if body.return_documents else None} for i, (r, _tok) in enumerate(rows)]
    results.sort(key=lambda r: r["relevance_score"], reverse=True)
    if body.top_n is not None:
        results = results[:body.top_n]
    tokens = int(round(sum(t for _, t in rows)))
    meta = {"api_version": None, "billed_units": None, "warnings": None,
            "tokens": {"input_tokens": tokens, "output_tokens": 0} if body.return_len else None}
    return {"id": str(uuid.uuid4()), "results": results, "meta": meta}
