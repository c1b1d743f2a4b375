"""Embedding and rerank models on real weights: the packaged all-MiniLM-L6-v2 as a custom embedding,
and a MiniLM-based cross-encoder as a custom reranker. Results are compared with
sentence-transformers called directly on the same inputs."""
from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from xinference_nb.errors import InferenceError, LaunchError
from public_api import launch, terminate  # noqa: E402

pytest.importorskip("sentence_transformers")


# ------------------------------------------------------------------------------------------------
# Everything goes through the public Client: register, launch, get_model, terminate.
# ------------------------------------------------------------------------------------------------
def embedding_doc(path, name="my-minilm", dimensions=384, max_tokens=256):
    return {
        "version": 2, "model_name": name, "dimensions": dimensions, "max_tokens": max_tokens, "language": ["en"],
        "model_specs": [{"model_format": "pytorch", "model_hub": "huggingface", "model_id": None,
                         "model_uri": f"file://{path}", "model_revision": None, "quantization": "none"}],
        "cache_config": None, "virtualenv": {"packages": [], "inherit_pip_config": True, "index_url": None,
                                             "extra_index_url": None, "find_links": None, "trusted_host": None,
                                             "no_build_isolation": None},
        "is_builtin": False,
    }


def rerank_doc(path, name="my-reranker"):
    return {
        "version": 2, "model_name": name, "type": "normal", "language": ["en"], "max_tokens": 512,
        "model_specs": [{"model_format": "pytorch", "model_hub": "huggingface", "model_uri": str(path),
                         "quantization": "none"}],
        "is_builtin": False,
    }


@pytest.fixture(scope="module")
def st_model(minilm_dir):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(minilm_dir), device="cpu")


@pytest.fixture(scope="module")
def cross_encoder(cross_encoder_dir):
    from sentence_transformers import CrossEncoder

    return CrossEncoder(str(cross_encoder_dir), device="cpu")


def test_embedding_matches_sentence_transformers(minilm_dir, st_model):
    uid, h = launch("embedding", embedding_doc(minilm_dir))
    try:
        texts = ["The quick brown fox jumps over the lazy dog.", "A cat sits on a blue chair."]
        out = h.create_embedding(texts)
        assert out["object"] == "list" and out["model"] == uid
        assert [d["index"] for d in out["data"]] == [0, 1]
        assert all(d["object"] == "embedding" and len(d["embedding"]) == 384 for d in out["data"])
        expected = st_model.encode(texts)
        np.testing.assert_allclose(np.array([d["embedding"] for d in out["data"]]), expected, atol=1e-5)
        n_tokens = sum(len(st_model.tokenizer(t)["input_ids"]) for t in texts)
        assert out["usage"] == {"prompt_tokens": n_tokens, "total_tokens": n_tokens}
        json.dumps(out)  # plain JSON

        single = h.create_embedding("hello world")
        assert len(single["data"]) == 1
        np.testing.assert_allclose(single["data"][0]["embedding"], st_model.encode("hello world"), atol=1e-5)

        b64 = h.create_embedding("hello world", encoding_format="base64")
        vec = np.frombuffer(base64.b64decode(b64["data"][0]["embedding"]), dtype="<f4")
        np.testing.assert_allclose(vec, single["data"][0]["embedding"], atol=1e-6)

        short = h.create_embedding("hello world", dimensions=128)
        assert len(short["data"][0]["embedding"]) == 128

        ids = st_model.tokenizer("hello world")["input_ids"]
        assert h.convert_ids_to_tokens(ids) == ["[CLS]", "hello", "world", "[SEP]"]
        assert h.convert_ids_to_tokens([ids, ids[:2]]) == [["[CLS]", "hello", "world", "[SEP]"], ["[CLS]", "hello"]]

        with pytest.raises(InferenceError, match="input"):
            h.create_embedding([])
        with pytest.raises(InferenceError, match=r"input\[1\]"):
            h.create_embedding(["ok", 3])
        with pytest.raises(InferenceError, match="bogus"):
            h.create_embedding("x", bogus=1)
    finally:
        terminate(uid, h)


def test_embedding_truncates_to_max_tokens(minilm_dir, st_model):
    uid, h = launch("embedding", embedding_doc(minilm_dir, name="minilm-short", max_tokens=16))
    try:
        long_text = " ".join(["word"] * 100)
        out = h.create_embedding([long_text, "hi"])
        # 16 tokens for the truncated input, [CLS] hi [SEP] for the other
        assert out["usage"]["prompt_tokens"] == 16 + 3
        # equals sentence-transformers on the text cut to the same window
        old = st_model.max_seq_length
        st_model.max_seq_length = 16
        try:
            expected = st_model.encode(long_text)
        finally:
            st_model.max_seq_length = old
        np.testing.assert_allclose(out["data"][0]["embedding"], expected, atol=1e-5)
    finally:
        terminate(uid, h)


def test_embedding_dimension_mismatch_is_launch_error(minilm_dir):
    with pytest.raises(LaunchError, match=r"dimensions=768.*384"):
        launch("embedding", embedding_doc(minilm_dir, name="minilm-wrong", dimensions=768))


def test_rerank_matches_cross_encoder(cross_encoder_dir, cross_encoder):
    uid, h = launch("rerank", rerank_doc(cross_encoder_dir))
    try:
        query = "Where is the station?"
        docs = ["Turn left at the bank and the station is on your right.", "The cat chased the mouse.",
                "Why is the sky blue?", "Good morning and good night.", "The weather today is sunny."]
        out = h.rerank(docs, query)
        assert set(out) == {"id", "results", "meta"} and isinstance(out["id"], str)
        scores = cross_encoder.predict([(query, d) for d in docs])
        expected_order = list(np.argsort(-scores, kind="stable"))
        assert [r["index"] for r in out["results"]] == expected_order
        np.testing.assert_allclose([r["relevance_score"] for r in out["results"]], scores[expected_order], atol=1e-5)
        assert all(r["document"] is None for r in out["results"])
        assert out["meta"]["tokens"] is None

        top = h.rerank(docs, query, top_n=2, return_documents=True, return_len=True)
        assert [r["index"] for r in top["results"]] == expected_order[:2]
        assert top["results"][0]["document"] == {"text": docs[expected_order[0]]}
        n_tokens = sum(len(cross_encoder.tokenizer(query, d)["input_ids"]) for d in docs)
        assert top["meta"]["tokens"] == {"input_tokens": n_tokens, "output_tokens": 0}
        json.dumps(top)

        with pytest.raises(InferenceError, match="top_n"):
            h.rerank(docs, query, top_n=0)
        with pytest.raises(InferenceError, match="query"):
            h.rerank(docs, None)
    finally:
        terminate(uid, h)


def test_rerank_max_chunks_per_doc_scores_the_best_window(cross_encoder_dir, cross_encoder):
    """max_chunks_per_doc (Cohere's meaning): a long document is cut into windows beside the query and
    scores as its best one; one window is what truncation scores; more windows never score lower."""
    uid, h = launch("rerank", rerank_doc(cross_encoder_dir, name="my-reranker-chunks"))
    try:
        query = "Where is the station?"
        tok = cross_encoder.tokenizer
        window = cross_encoder.max_seq_length
        filler = " ".join(["the weather today is sunny and the cat is asleep"] * 120)
        long_doc = filler + " Turn left at the bank and the station is on your right."
        assert len(tok(long_doc)["input_ids"]) > 2 * window   # really longer than two windows
        short = "The cat chased the mouse."
        docs = [long_doc, short]

        def score(out, i):
            return next(r["relevance_score"] for r in out["results"] if r["index"] == i)

        truncated = h.rerank(docs, query)
        by_k = {k: h.rerank(docs, query, max_chunks_per_doc=k) for k in (1, 2, 3, 50)}
        assert abs(score(by_k[1], 0) - score(truncated, 0)) < 1e-4
        assert score(by_k[1], 0) <= score(by_k[2], 0) <= score(by_k[3], 0) <= score(by_k[50], 0)
        for k, out in by_k.items():   # a document that fits is one window: its score does not change
            assert abs(score(out, 1) - score(truncated, 1)) < 1e-5, k
        # the best window really is one of the document's windows, scored by sentence-transformers itself
        ids = tok(long_doc, add_special_tokens=False)["input_ids"]
        room = window - len(tok(query, add_special_tokens=False)["input_ids"]) - tok.num_special_tokens_to_add(pair=True)
        windows = [tok.decode(ids[s:s + room]) for s in range(0, len(ids), room)]
        expected = max(float(x) for x in cross_encoder.predict([(query, w) for w in windows]))
        assert abs(score(by_k[50], 0) - expected) < 1e-3
        # tokens billed: every window is a pair the model ran
        billed = h.rerank(docs, query, max_chunks_per_doc=50, return_len=True)["meta"]["tokens"]["input_tokens"]
        assert billed > h.rerank(docs, query, return_len=True)["meta"]["tokens"]["input_tokens"]
        with pytest.raises(InferenceError, match="max_chunks_per_doc"):
            h.rerank(docs, query, max_chunks_per_doc=0)
    finally:
        terminate(uid, h)
