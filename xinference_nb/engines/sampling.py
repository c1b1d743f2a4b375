"""Sampling and logits processing of one row (one request) of the transformers LLM engine: the same
code picks each token on the batched path (``batching_llm``) and on the one-request ``generate`` path
(``transformers_llm``), so a request behaves the same on both.

Order in one row (each step on float32 scores, 1-D over the vocabulary):

    raw logits -> logprobs recorded (``logprob_entry``, of the raw logits)
               -> repetition_penalty -> presence / frequency penalties -> logit_bias -> constraint mask
               -> greedy, or sampling: temperature, top_k, top_p, min_p (``sample_token``)

``row_processors`` builds a row's list of processors (``fn(ids, scores) -> scores``, ``ids`` the
prompt and generated ids so far) from its ``SamplingParams``. torch is imported inside the functions.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

from ..chat import SamplingParams
from ..errors import InferenceError

Processor = Callable[[list[int], Any], Any]


def uses_row_pick(params: SamplingParams) -> bool:
    """True when a request asks for something only this module applies (``generate``'s own
    processors have no logprobs of the raw logits, OpenAI's penalties, logit_bias or constraints)."""
    return bool(params.logprobs or params.presence_penalty or params.frequency_penalty or params.logit_bias
                or params.min_p or params.constraint is not None)


def check_logit_bias(bias: dict[int, float], n_vocab: int) -> None:
    """InferenceError naming the first logit_bias token id that is not in the vocabulary."""
    bad = sorted(t for t in bias if not 0 <= int(t) < n_vocab)
    if bad:
        raise InferenceError(f"generate_config['logit_bias'] names token id {bad[0]}, which is not in this model's "
                             f"vocabulary (ids 0 to {n_vocab - 1})")


def repetition_penalty(ids: list[int], scores: Any, penalty: float) -> Any:
    """``scores`` with the tokens of ``ids`` penalised as transformers does (a positive logit divided by
    ``penalty``, a negative one multiplied)."""
    import torch

    scores = scores.clone()
    seen = torch.tensor(ids, dtype=torch.long, device=scores.device).unique()
    picked = scores.index_select(0, seen)
    picked = torch.where(picked < 0, picked * penalty, picked / penalty)
    scores.index_copy_(0, seen, picked)
    return scores


def presence_frequency(generated: list[int], scores: Any, presence: float, frequency: float) -> Any:
    """OpenAI's penalties over the generated ids: ``logit[t] -= presence * (count[t] > 0) + frequency * count[t]``."""
    import torch

    if not generated:
        return scores
    ids = torch.tensor(generated, dtype=torch.long, device=scores.device)
    counts = torch.bincount(ids, minlength=scores.shape[-1])[:scores.shape[-1]].to(scores.dtype)
    return scores - presence * (counts > 0).to(scores.dtype) - frequency * counts


def logit_bias(scores: Any, ids: Any, values: Any) -> Any:
    """``scores`` with ``values`` added at ``ids`` (tensors made once per request)."""
    return scores.index_add(0, ids.to(scores.device), values.to(scores.device))


def row_processors(params: SamplingParams, n_prompt: int, n_vocab: int, constraint: Any = None) -> list[Processor]:
    """The processors of one row, in order: repetition penalty, presence / frequency penalties,
    logit_bias (InferenceError for an id past ``n_vocab``), then ``constraint``'s mask (a
    ``structured.RowConstraint``). ``n_prompt``: the prompt's length (the penalties count the
    generated ids only)."""
    out: list[Processor] = []
    penalty = params.repetition_penalty
    if penalty not in (None, 1.0):
        out.append(lambda ids, scores: repetition_penalty(ids, scores, penalty))
    presence, frequency = params.presence_penalty or 0.0, params.frequency_penalty or 0.0
    if presence or frequency:
        out.append(lambda ids, scores: presence_frequency(ids[n_prompt:], scores, presence, frequency))
    if params.logit_bias:
        import torch

        check_logit_bias(params.logit_bias, n_vocab)
        tids = torch.tensor([int(t) for t in params.logit_bias], dtype=torch.long)
        values = torch.tensor([float(v) for v in params.logit_bias.values()], dtype=torch.float32)
        out.append(lambda ids, scores: logit_bias(scores, tids, values.to(scores.dtype)))
    if constraint is not None:
        out.append(lambda ids, scores: constraint.mask(ids[n_prompt:], scores))
    return out


def sample_token(scores: Any, temperature: float, top_p: Optional[float] = None, top_k: Optional[int] = None,
                 generator: Any = None, min_p: Optional[float] = None) -> int:
    """The next token from one row's processed float32 scores (1-D): argmax when ``temperature`` is 0,
    else temperature, top_k, top_p, min_p and a draw from ``generator``. Finite for every value: NaN
    scores (a processor's) are an InferenceError, a +inf score wins outright, no allowed token is an
    InferenceError, and a temperature at which the scores overflow float32 picks the argmax (its
    limit: every other token's probability underflows to 0)."""
    import math

    import torch

    best = float(scores.max())
    if best != best:   # NaN
        raise InferenceError("the logits of this request became NaN in its logits processing")
    if best == float("-inf"):
        raise InferenceError("no token is allowed for this request (every logit is -inf after its logits processing)")
    if best == float("inf") or not temperature:
        return int(scores.argmax())
    scaled = scores / min(float(temperature), torch.finfo(scores.dtype).max)
    if not bool(torch.isfinite(scaled.max())):   # overflowed (or a temperature that is 0 in float32)
        return int(scores.argmax())
    scores = scaled
    if top_k is not None and 0 < top_k < scores.shape[-1]:
        kth = torch.topk(scores, top_k).values[-1]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        ordered, order = torch.sort(scores, descending=False)
        cum = ordered.softmax(-1).cumsum(-1)
        remove = cum <= (1 - top_p)
        remove[-1] = False
        scores = scores.masked_fill(remove.scatter(0, order, remove), float("-inf"))
    if min_p:   # p < min_p * p_max, in log space: the top token always stays
        scores = scores.masked_fill(scores < scores.max() + math.log(min_p), float("-inf"))
    probs = scores.softmax(-1)
    return int(torch.multinomial(probs, 1, generator=generator))


def logprob_entry(raw: Any, tid: int, top_k: int, piece: Callable[[int], tuple[str, bytes]]) -> dict[str, Any]:
    """One step's logprobs in OpenAI's shape, from log_softmax of the RAW float32 logits ``raw``
    (1-D): the chosen token ``tid`` and the ``top_k`` most likely tokens. ``piece(id)``: a token's
    (text decoded alone, bytes)."""
    import torch

    logp = torch.log_softmax(raw.float(), -1)

    def one(t: int, value: float) -> dict[str, Any]:
        text, data = piece(t)
        return {"token": text, "logprob": value, "bytes": list(data)}

    entry = one(int(tid), float(logp[int(tid)]))
    top: list[dict[str, Any]] = []
    if top_k > 0:
        values, ids = torch.topk(logp, min(int(top_k), logp.shape[-1]))
        top = [one(t, v) for t, v in zip(ids.tolist(), values.tolist())]
    entry["top_logprobs"] = top
    return entry


def _unicode_bytes() -> dict[str, int]:
    """The byte-level BPE alphabet (GPT-2's ``bytes_to_unicode``), character -> byte."""
    printable = {*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)}
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


def token_piece(tokenizer: Any) -> Callable[[int], tuple[str, bytes]]:
    """``piece(id)``: the token's (text decoded alone, special tokens kept and bad UTF-8 replaced; its
    bytes), cached. The bytes are the token's own for a byte-level BPE tokenizer (a piece of a UTF-8
    character included, so a reply's bytes join up), else its text's UTF-8."""
    cache: dict[int, tuple[str, bytes]] = {}
    decoder = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
    alphabet = _unicode_bytes() if type(decoder).__name__ == "ByteLevel" else None
    added = set(getattr(tokenizer, "get_added_vocab", dict)().values())

    def piece(tid: int) -> tuple[str, bytes]:
        hit = cache.get(tid)
        if hit is None:
            text = tokenizer.decode([tid], skip_special_tokens=False)
            data = text.encode("utf-8", errors="replace")
            if alphabet is not None and tid not in added:
                symbols = tokenizer.convert_ids_to_tokens(tid) or ""
                if symbols and all(c in alphabet for c in symbols):
                    data = bytes(alphabet[c] for c in symbols)
            hit = cache[tid] = (text, data)
        return hit

    return piece
