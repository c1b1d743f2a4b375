"""One Protocol per handle type (xinference_nb.protocols): the in-kernel handles and the remote ones
both have every method of their type's Protocol, with compatible signatures; each in-kernel method
reaches the engine method of the same name (``model_types`` says which for LLMs), and each remote
method POSTs to the route ``model_types`` names, which the server serves and which reaches that
same engine method. Real tiny models of every type, a real server in a thread."""
from __future__ import annotations

import inspect
import io
import json

import pytest

from xinference_nb.model_types import MODEL_TYPE_TABLE, model_type
from xinference_nb.protocols import ModelHandleProtocol

EMPTY = inspect.Parameter.empty
POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def protocol_methods(proto: type) -> list[str]:
    """The methods a Protocol adds to ModelHandleProtocol (in its own order)."""
    return [name for name, value in vars(proto).items() if callable(value) and not name.startswith("_")]


def _params(fn) -> list[inspect.Parameter]:
    return [p for p in inspect.signature(fn).parameters.values() if p.name != "self"]


def is_pass_through(fn) -> bool:
    """``def m(self, *args, **kwargs)``: forwards its arguments unchanged (to the engine's method)."""
    return [p.kind for p in _params(fn)] == [inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD]


def incompatibilities(proto_fn, impl_fn) -> list[str]:
    """Why ``impl_fn`` cannot take every call ``proto_fn`` allows (empty when it can): the same
    positional parameters in the same order, the same defaults where the protocol has one, no extra
    required parameter, and ``*args`` / ``**kwargs`` where the protocol has them."""
    proto, impl = _params(proto_fn), _params(impl_fn)
    problems = []
    impl_pos = [p for p in impl if p.kind in POSITIONAL]
    by_name = {p.name: p for p in impl}
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in impl)
    var_pos = any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in impl)
    for i, p in enumerate(q for q in proto if q.kind in POSITIONAL):
        if i >= len(impl_pos) or impl_pos[i].name != p.name:
            problems.append(f"parameter {i} should be {p.name!r}")
            continue
        theirs = impl_pos[i].default
        if p.default is not EMPTY and theirs != p.default:
            problems.append(f"{p.name}: default {theirs!r}, the protocol says {p.default!r}")
    for p in proto:
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in by_name and not var_kw:
            problems.append(f"no keyword {p.name!r}")
        if p.kind is inspect.Parameter.VAR_KEYWORD and not var_kw:
            problems.append("takes no **kwargs")
        if p.kind is inspect.Parameter.VAR_POSITIONAL and not var_pos:
            problems.append("takes no *args")
    names = {p.name for p in proto}
    for p in impl:
        if p.name not in names and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD) \
                and p.default is EMPTY:
            problems.append(f"requires {p.name!r}, which the protocol does not have")
    return problems


CASES = [(t.name, m) for t in MODEL_TYPE_TABLE for m in t.methods]


# ------------------------------------------------------------------------------------------------
# Static: the table, the protocols and both handle classes agree
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("row", MODEL_TYPE_TABLE, ids=lambda r: r.name)
def test_protocol_methods_are_the_tables(row):
    proto = row.protocol_class()
    assert ModelHandleProtocol in proto.__mro__
    assert protocol_methods(proto) == list(row.methods)
    for cls in (row.handle_class(), row.remote_handle_class()):
        assert cls.model_type == row.name
        assert callable(getattr(cls, "describe", None)), cls


@pytest.mark.parametrize("type_name,method", CASES)
def test_both_handles_have_the_method_with_a_compatible_signature(type_name, method):
    row = model_type(type_name)
    proto_fn = getattr(row.protocol_class(), method)
    local_fn = getattr(row.handle_class(), method, None)
    remote_fn = getattr(row.remote_handle_class(), method, None)
    assert local_fn is not None, f"{row.handle}.{method} is missing"
    assert remote_fn is not None, f"{row.remote_handle}.{method} is missing"
    # the remote handle spells out the signature (it builds the request from it)
    assert not incompatibilities(proto_fn, remote_fn), (row.remote_handle, incompatibilities(proto_fn, remote_fn))
    if not is_pass_through(local_fn):   # a pass-through's signature is its engine's (checked live below)
        assert not incompatibilities(proto_fn, local_fn), (row.handle, incompatibilities(proto_fn, local_fn))


def test_the_signature_check_catches_drift():
    def proto(self, image, prompt, n: int = 1, **kwargs): ...

    def renamed(self, img, prompt, n: int = 1, **kwargs): ...

    def other_default(self, image, prompt, n: int = 2, **kwargs): ...

    def no_kwargs(self, image, prompt, n: int = 1): ...

    def extra_required(self, image, prompt, mask, n: int = 1, **kwargs): ...

    def looser(self, image, prompt=None, n: int = 1, extra=None, **kwargs): ...

    assert incompatibilities(proto, renamed) and incompatibilities(proto, other_default)
    assert incompatibilities(proto, no_kwargs) and incompatibilities(proto, extra_required)
    assert incompatibilities(proto, looser) == []


def test_every_remote_route_is_served(tmp_path):
    pytest.importorskip("fastapi")
    from server_fakes import FakeClient

    from xinference_nb.server.app import create_app

    paths = create_app(FakeClient(), allowed_roots=[tmp_path]).openapi()["paths"]
    for row in MODEL_TYPE_TABLE:
        for method, route in row.routes.items():
            assert "post" in paths.get(route, {}), f"{row.name}.{method}: the server has no POST {route}"


# ------------------------------------------------------------------------------------------------
# Live: every method, in-kernel and remote, reaches the same engine method
# ------------------------------------------------------------------------------------------------
def _png(color=(200, 30, 30)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), color).save(buf, format="PNG")
    return buf.getvalue()


def _docs(dirs):
    from server_fakes import embedding_doc, llm_doc, rerank_doc

    return {
        "llm": ("LLM", llm_doc(dirs["llm"], "proto-tiny-llama"), {"model_engine": "transformers"}),
        "emb": ("embedding", embedding_doc(dirs["minilm"], "proto-minilm"), {}),
        "rr": ("rerank", rerank_doc(dirs["rr"], "proto-reranker"), {}),
        "img": ("image", {"version": 2, "model_name": "proto-sd", "model_family": "stable_diffusion",
                          "model_uri": str(dirs["sd"]), "model_ability": ["text2image", "image2image", "inpainting"],
                          "default_generate_config": {"num_inference_steps": 1}}, {}),
        "asr": ("audio", {"version": 2, "model_name": "proto-whisper", "model_family": "whisper",
                          "model_uri": str(dirs["whisper"]), "model_ability": ["audio2text"], "multilingual": True},
                {}),
        "tts": ("audio", {"version": 2, "model_name": "proto-vits", "model_family": "MMS",
                          "model_uri": str(dirs["vits"]), "model_ability": ["text2audio"], "multilingual": False},
                {}),
        "flex": ("flexible", {"version": 2, "model_name": "proto-flex", "model_uri": "/tmp",
                              "launcher": "xinference_nb.engines.flexible.python_callable",
                              "launcher_args": json.dumps({"callable": "json:dumps"})}, {}),
    }


@pytest.fixture(scope="module")
def live(tmp_path_factory, tiny_llama_dir, minilm_dir, cross_encoder_dir, tiny_sd_dir, tiny_whisper_dir,
         tiny_vits_dir):
    pytest.importorskip("fastapi")
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("diffusers")
    from xinference_nb.client import Client
    from xinference_nb.client.remote import RemoteClient
    from xinference_nb.server.app import create_app
    from xinference_nb.server.runner import start_in_thread

    mp = pytest.MonkeyPatch()
    mp.setenv("XINFERENCE_NB_HOME", str(tmp_path_factory.mktemp("proto_home")))
    client = Client()
    dirs = {"llm": tiny_llama_dir, "minilm": minilm_dir, "rr": cross_encoder_dir, "sd": tiny_sd_dir,
            "whisper": tiny_whisper_dir, "vits": tiny_vits_dir}
    uids: dict[str, str] = {}
    server = None
    try:
        for key, (type_name, doc, kw) in _docs(dirs).items():
            client.register_model(type_name, doc, overwrite=True)
            uids[key] = client.launch_model(doc["model_name"], model_type=type_name, model_uid=f"proto-{key}",
                                            n_gpu=None, show_progress=False, **kw)
        server = start_in_thread(create_app(client, allowed_roots=[str(tmp_path_factory.getbasetemp())]), port=0)
        remote = RemoteClient(server.url)
        paths: list[str] = []
        remote._http.client.event_hooks["request"].append(lambda req: paths.append(f"{req.method} {req.url.path}"))
        yield {"client": client, "remote": remote, "uids": uids, "paths": paths}
        remote.close()
    finally:
        if server is not None:
            server.stop()
        for uid in uids.values():
            try:
                client.terminate_model(uid)
            except Exception:  # noqa: BLE001
                pass
        mp.undo()


def _calls(png, mask, wav):
    """(model key, method) → (args, kwargs) of one cheap call."""
    return {
        ("llm", "generate"): (("Hello",), {"generate_config": {"max_tokens": 2}}),
        ("llm", "chat"): (([{"role": "user", "content": "hi"}],), {"generate_config": {"max_tokens": 2}}),
        # a batch of one: one request to the same route (a batch of n sends n, concurrently)
        ("llm", "generate_batch"): ((["Hello"],), {"generate_config": {"max_tokens": 2}, "progress": False}),
        ("llm", "chat_batch"): (([[{"role": "user", "content": "hi"}]],), {"generate_config": {"max_tokens": 2},
                                                                           "progress": False}),
        ("llm", "map"): ((["hi"],), {"generate_config": {"max_tokens": 2}, "progress": False}),
        ("emb", "create_embedding"): (("hello world",), {}),
        ("emb", "convert_ids_to_tokens"): (([101, 7592, 2088, 102],), {}),
        ("rr", "rerank"): ((["a cat", "a car"], "cats"), {"top_n": 1}),
        ("img", "text_to_image"): (("a red apple",), {"size": "64*64", "response_format": "b64_json"}),
        ("img", "image_to_image"): ((png, "a dog"), {"size": "64*64", "response_format": "b64_json",
                                                      "strength": 1.0}),
        ("img", "inpainting"): ((png, mask, "a dog"), {"size": "64*64", "response_format": "b64_json"}),
        ("tts", "speech"): (("hello",), {"response_format": "wav"}),
        ("asr", "transcriptions"): ((wav,), {}),
        ("asr", "translations"): ((wav,), {}),
        ("flex", "infer"): (({"a": 1},), {}),
    }


KEYS = {"LLM": ["llm"], "embedding": ["emb"], "rerank": ["rr"], "image": ["img"], "audio": ["tts", "asr"],
        "flexible": ["flex"]}


@pytest.mark.parametrize("type_name,method", CASES)
def test_local_and_remote_reach_the_same_engine_method(live, monkeypatch, type_name, method):
    from tiny_models import tone_wav

    row = model_type(type_name)
    calls = _calls(_png(), _png((255, 255, 255)), tone_wav())
    key = next(k for k in KEYS[type_name] if (k, method) in calls)
    args, kwargs = calls[(key, method)]
    uid = live["uids"][key]
    from xinference_nb.manager import get_manager

    manager_model = get_manager().engine_model(uid)
    reached: list[str] = []
    for name in row.engine_methods_of(method):
        real = getattr(manager_model, name)

        def spy(*a, _real=real, _name=name, **kw):
            reached.append(_name)
            return _real(*a, **kw)

        monkeypatch.setattr(manager_model, name, spy)
        if is_pass_through(getattr(row.handle_class(), method)):
            proto_fn = getattr(row.protocol_class(), method)
            assert not incompatibilities(proto_fn, real), (type(manager_model).__name__, name,
                                                           incompatibilities(proto_fn, real))

    local = live["client"].get_model(uid)
    assert isinstance(local, row.protocol_class())
    result = getattr(local, method)(*args, **kwargs)
    assert reached and set(reached) <= set(row.engine_methods_of(method)), reached
    assert result is not None

    reached.clear()
    remote = live["remote"].get_model(uid)
    assert isinstance(remote, row.protocol_class()) and type(remote).__name__ == row.remote_handle
    live["paths"].clear()
    result = getattr(remote, method)(*args, **kwargs)
    assert result is not None
    assert live["paths"] == [f"POST {row.routes[method]}"]   # one request, to the table's route
    assert reached and set(reached) <= set(row.engine_methods_of(method)), reached


def test_remote_image_and_audio_results_match_in_kernel_shapes(live):
    from tiny_models import tone_wav

    remote = live["remote"].get_model(live["uids"]["img"])
    out = remote.inpainting(_png(), _png((255, 255, 255)), "a dog", size="64*64", response_format="b64_json", seed=0)
    local = live["client"].get_model(live["uids"]["img"]).inpainting(_png(), _png((255, 255, 255)), "a dog",
                                                                     size="64*64", response_format="b64_json",
                                                                     seed=0)
    assert set(out) == set(local) == {"created", "data"}
    assert out["data"][0]["b64_json"] == local["data"][0]["b64_json"]   # same seed, same image
    variation = remote.image_to_image(_png(), ["a dog"], size="64*64", response_format="b64_json", strength=1.0)
    assert len(variation["data"]) == 1
    asr = live["remote"].get_model(live["uids"]["asr"])
    text = asr.translations(tone_wav(), response_format="text")
    assert isinstance(text, str)
    emb = live["remote"].get_model(live["uids"]["emb"])
    assert emb.convert_ids_to_tokens([[101, 7592], [102]]) == [["[CLS]", "hello"], ["[SEP]"]]


def test_remote_new_methods_refuse_like_the_server(live):
    from xinference_nb.errors import InferenceError, ModelNotFound

    remote = live["remote"]
    emb = remote.get_model(live["uids"]["emb"])
    with pytest.raises(InferenceError, match="input"):
        emb.convert_ids_to_tokens("not ids")
    with pytest.raises(InferenceError, match="extra|not permitted"):
        emb.convert_ids_to_tokens([1, 2], skip_special_tokens=True)   # an option nothing applies: refused
    img = remote.get_model(live["uids"]["img"])
    with pytest.raises(InferenceError, match="image"):
        img.image_to_image(12345, "a dog")
    with pytest.raises(InferenceError, match="image"):
        img.image_to_image([], "a dog")
    with pytest.raises(InferenceError, match="response_format"):
        img.image_to_image(_png(), "a dog", response_format="jpeg")
    # a model without the ability: the server names the route
    llm_as_image = type(img)(remote._http, live["uids"]["llm"], "image")
    with pytest.raises(InferenceError, match="/v1/images/inpainting"):
        llm_as_image.inpainting(_png(), _png(), "x")
    gone = type(img)(remote._http, "no-such-model", "image")
    with pytest.raises(ModelNotFound):
        gone.image_to_image(_png(), "x")
