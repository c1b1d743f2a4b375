"""No option is silently ignored: a walk over every key of the tables that say what the package
takes — launch options (``options.OPTIONS``, ``UNSUPPORTED``, ``OTHER_ENGINE_OPTIONS``), generate_config
keys (``chat.GENERATE_CONFIG_KEYS``) and OpenAI request fields (``server.openai`` tables) — where every
key has one fate: applied (a test shows its effect on a real tiny model), refused (an error of the
package naming it and what is accepted; 400 over REST) or warned (a warning that it had no effect).

A key added to a table without a proof here fails ``test_every_*_key_has_a_proof``: add the test that
shows its effect (or the refusal) and its row below.
"""
from __future__ import annotations

import ast
import json
import warnings
from pathlib import Path

import pytest

from xinference_nb.chat import GENERATE_CONFIG_KEYS, STREAM_OPTIONS_KEYS
from xinference_nb.errors import InferenceError, LaunchError, LaunchOptionError
from xinference_nb.engines.options import (ENGINE_OPTIONS, LAUNCH_LEVEL, OPTIONS, OTHER_ENGINE_OPTIONS, UNSUPPORTED,
                                   accepted_options, check_engine_options)

from public_api import launch, terminate
from server_fakes import embedding_doc, llm_doc, rerank_doc

TESTS = Path(__file__).parent
HERE = Path(__file__).name

# ------------------------------------------------------------------------------------------------
# The proofs: option → the test that shows its effect (here, or "file::test" elsewhere)
# ------------------------------------------------------------------------------------------------
APPLIED_LAUNCH = {
    "check_memory": "test_manager.py::test_refuses_when_it_cannot_fit",
    "show_progress": "test_launch_level_options_are_applied",
    "keep_alive": "test_keep_alive.py::test_unused_model_unloads_and_the_next_call_reloads_it",
    "enable_virtual_env": "test_flexible_virtualenv.py::test_enable_virtual_env_and_envs_are_applied",
    "envs": "test_flexible_virtualenv.py::test_enable_virtual_env_and_envs_are_applied",
    "virtual_env_packages": "test_launch_level_options_are_applied",
    "virtual_env_find_links": "test_launch_level_options_are_applied",
    "trust_remote_code": "test_trust_remote_code_is_applied",
    "enable_thinking": "test_llm_launch_options_are_applied",
    "context_length": "test_llm_launch_options_are_applied",
    "dtype": "test_llm_launch_options_are_applied",
    "torch_dtype": "test_image_launch_options_are_applied",
    "attn_implementation": "test_llm_launch_options_are_applied",
    "quantization_config": "test_quantization_config_is_applied_and_its_keys_checked",
    "max_num_seqs": "test_llm_batching.py::test_options_and_fallback",
    "batch_wait_ms": "test_llm_batching.py::test_options_and_fallback",
    "enable_prefix_caching": "test_prefix_cache.py::test_shared_prefixes_of_every_length_give_identical_greedy_output",
    "prefix_cache_max_tokens": "test_prefix_cache.py::test_an_entry_evicted_mid_batch_changes_nothing",
    "peft_model_config": "test_lora.py::test_adapter_logits_equal_peft_merged_logits",
    "n_ctx": "test_llama_cpp_options_are_applied",
    "multimodal_projector": "test_gguf_vision.py::test_launch_options_choose_the_projector_and_handler",
    "chat_handler": "test_gguf_vision.py::test_launch_options_choose_the_projector_and_handler",
    "model_kwargs": "test_embedding_launch_options_are_applied",
    "tokenizer_kwargs": "test_embedding_launch_options_are_applied",
    "processor_kwargs": "test_embedding_launch_options_are_applied",
    "config_kwargs": "test_embedding_launch_options_are_applied",
    "truncate_dim": "test_embedding_launch_options_are_applied",
    "prompts": "test_embedding_launch_options_are_applied",
    "default_prompt_name": "test_embedding_launch_options_are_applied",
    "backend": "test_embedding_launch_options_are_applied",
    "local_files_only": "test_embedding_launch_options_are_applied",
    "similarity_fn_name": "test_embedding_launch_options_are_applied",
    "activation_fn": "test_rerank_activation_fn_is_applied",
    "launcher_args": "test_launcher_args_option_is_merged_into_the_document",
    "cpu_offload": "test_image_launch_options_are_applied",
    "sequential_cpu_offload": "test_image_launch_options_are_applied",
    "attention_slicing": "test_image_launch_options_are_applied",
    "vae_tiling": "test_image_launch_options_are_applied",
    "vae_slicing": "test_image_launch_options_are_applied",
    "gguf_model_path": "test_image_gguf_model_path_loads_the_quantized_unet",
    "chunk_length_s": "test_audio_launch_options_are_applied",
    "batch_size": "test_audio_launch_options_are_applied",
}
APPLIED_GENERATE = {
    "max_tokens": "test_generate_config_sampling_keys_are_applied",
    "temperature": "test_generate_config_sampling_keys_are_applied",
    "top_p": "test_generate_config_sampling_keys_are_applied",
    "top_k": "test_generate_config_sampling_keys_are_applied",
    "seed": "test_generate_config_sampling_keys_are_applied",
    "stop": "test_generate_config_sampling_keys_are_applied",
    "repetition_penalty": "test_security.py::test_stream_options_and_repetition_penalty_are_applied",
    "stream": "test_generate_config_stream_keys_are_applied",
    "stream_options": "test_generate_config_stream_keys_are_applied",
    "lora_name": "test_lora.py::test_concurrent_requests_with_different_adapters_each_equal_their_solo_output",
    "n": "test_structured_outputs.py::test_n_choices_are_rows_of_one_request",
    "logprobs": "test_sampling.py::test_logprobs_are_the_models_own_log_softmax",
    "top_logprobs": "test_sampling.py::test_logprobs_are_the_models_own_log_softmax",
    "presence_penalty": "test_sampling.py::test_presence_and_frequency_penalties_follow_openais_formula",
    "frequency_penalty": "test_sampling.py::test_presence_and_frequency_penalties_follow_openais_formula",
    "logit_bias": "test_sampling.py::test_logit_bias_removes_and_forces_a_token",
    "min_p": "test_sampling.py::test_min_p_one_samples_the_greedy_token",
    "response_format": "test_structured_outputs.py::test_pydantic_response_format_gives_a_validated_instance_for_every_seed",
    "guided_json": "test_structured_outputs.py::test_json_schema_response_format_and_guided_fields",
    "guided_regex": "test_structured_outputs.py::test_json_schema_response_format_and_guided_fields",
    "guided_choice": "test_structured_outputs.py::test_json_schema_response_format_and_guided_fields",
    "guided_json_object": "test_structured_outputs.py::test_json_schema_response_format_and_guided_fields",
    "guided_grammar": "test_structured_outputs.py::test_json_schema_response_format_and_guided_fields",
    "guided_whitespace_pattern": "test_structured_outputs.py::test_vllm_guided_options_are_applied_or_refused",
    "guided_decoding_backend": "test_structured_outputs.py::test_vllm_guided_options_are_applied_or_refused",
    "tool_choice": "test_structured_outputs.py::test_tool_choice_required_and_named_make_a_valid_call",
    "parallel_tool_calls": "test_structured_outputs.py::test_tool_choice_required_and_named_make_a_valid_call",
}


def _function_source(ref: str) -> str:
    file, _, name = ref.rpartition("::")
    path = TESTS / (file or HERE)
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name:
            return ast.get_source_segment(path.read_text(), node) or ""
    raise AssertionError(f"{ref}: no such test")


def test_every_launch_option_has_one_fate_and_a_proof():
    applied, refused, warned = set(OPTIONS), set(UNSUPPORTED), set(OTHER_ENGINE_OPTIONS)
    assert not applied & refused and not applied & warned and not refused & warned
    consumed = set(LAUNCH_LEVEL) | {k for names in ENGINE_OPTIONS.values() for k in names}
    assert applied <= consumed, f"options no engine reads: {sorted(applied - consumed)}"
    assert set(APPLIED_LAUNCH) == applied, (f"options without a proof: {sorted(applied - set(APPLIED_LAUNCH))}; "
                                            f"stale proofs: {sorted(set(APPLIED_LAUNCH) - applied)}")


def test_every_generate_config_key_has_a_proof():
    assert set(APPLIED_GENERATE) == set(GENERATE_CONFIG_KEYS), sorted(set(GENERATE_CONFIG_KEYS) ^ set(APPLIED_GENERATE))
    assert STREAM_OPTIONS_KEYS == ("include_usage",)   # the one stream option, shown in the stream proof


@pytest.mark.parametrize("key, ref", sorted({**APPLIED_LAUNCH, **APPLIED_GENERATE}.items()))
def test_each_proof_exists_and_uses_its_key(key, ref):
    assert key in _function_source(ref), f"{ref} does not mention {key}"


# ------------------------------------------------------------------------------------------------
# Refused and warned launch options, on every engine
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("key", sorted(UNSUPPORTED))
def test_unsupported_option_is_refused_on_every_engine_with_the_reason(key):
    for model_type, engine in ENGINE_OPTIONS:
        options = {key: True, "check_memory": True}
        with pytest.raises(LaunchOptionError) as err:
            check_engine_options(model_type, engine, options)
        assert err.value.fields == [key]
        assert UNSUPPORTED[key] in str(err.value)
        assert options == {key: True, "check_memory": True}       # bad input changes nothing


@pytest.mark.parametrize("key", sorted(OTHER_ENGINE_OPTIONS))
def test_other_engine_option_warns_it_had_no_effect_and_reaches_no_backend(key):
    for model_type, engine in ENGINE_OPTIONS:
        options = {key: 1, "check_memory": True}
        if key in accepted_options(model_type, engine):
            continue                       # this engine itself takes a keyword of that name
        with pytest.warns(UserWarning, match=rf"^{key}: a .*{OTHER_ENGINE_OPTIONS[key]}.* no effect on the {engine}"):
            check_engine_options(model_type, engine, options)
        assert options == {"check_memory": True}


def test_unknown_option_is_refused_listing_what_the_engine_accepts():
    with pytest.raises(LaunchOptionError) as err:
        check_engine_options("LLM", "transformers", {"bogus_option": 1})
    assert err.value.fields == ["bogus_option"]
    assert "it accepts: " in str(err.value) and "attn_implementation" in str(err.value)


def test_launch_level_options_are_applied(tiny_llama_dir, local_package_dir, nb_home, tmp_path, capsys):
    """show_progress=False shows no bar (True does); virtual_env_packages is installed into the model's
    own virtualenv and virtual_env_find_links reaches pip's command line."""
    for show in (False, True):
        uid, h = launch("LLM", llm_doc(tiny_llama_dir, f"bar-{show}"), model_engine="transformers", show_progress=show)
        terminate(uid)
        assert (f"bar-{show}" in capsys.readouterr().err) is show
    links = tmp_path / "wheels"
    links.mkdir()
    doc = {"version": 2, "model_name": "venv-opts", "model_description": "test model",
           "launcher": "xinference_nb.engines.flexible.python_callable",
           "launcher_args": json.dumps({"callable": "xnb_tiny_pkg:shout"}),
           "virtualenv": {"packages": [], "inherit_pip_config": False, "no_build_isolation": True}}
    uid, h = launch("flexible", doc, virtual_env_packages=[f"xnb-tiny-pkg @ {local_package_dir.as_uri()}"],
                    virtual_env_find_links=[str(links)])
    try:
        assert h.infer(text="hi") == "HI!"
        assert f"--find-links {links}" in (nb_home / "virtualenv" / "venv-opts" / "install.log").read_text()
    finally:
        terminate(uid)


def test_launcher_args_option_is_merged_into_the_document():
    doc = {"version": 2, "model_name": "merge-args", "model_description": "test model",
           "launcher": "xinference_nb.engines.flexible.python_callable",
           "launcher_args": json.dumps({"callable": "json:dumps"})}
    uid, h = launch("flexible", doc, launcher_args={"callable": "posixpath:basename"})
    try:
        assert h.infer(p="/a/b.txt") == "b.txt"
    finally:
        terminate(uid)


def test_trust_remote_code_is_applied(tiny_llama_dir, tmp_path):
    """A folder whose config.json maps AutoModelForCausalLM to its own code: that code runs with
    trust_remote_code=True only."""
    import shutil

    folder = shutil.copytree(tiny_llama_dir, tmp_path / "tiny-remote")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_marked.MarkedLlama"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "modeling_marked.py").write_text("from transformers import LlamaForCausalLM\n\n\n"
                                               "class MarkedLlama(LlamaForCausalLM):\n    pass\n")
    for trust, cls in ((False, "LlamaForCausalLM"), (True, "MarkedLlama")):
        uid, h = launch("LLM", llm_doc(folder, f"remote-{trust}"), model_engine="transformers", trust_remote_code=trust)
        try:
            assert type(_engine(uid).model).__name__ == cls
        finally:
            terminate(uid)


# ------------------------------------------------------------------------------------------------
# Applied launch options: the effect on the loaded model
# ------------------------------------------------------------------------------------------------
def _engine(uid):
    from xinference_nb.manager import get_manager

    return get_manager().engine_model(uid)


def test_llm_launch_options_are_applied(tiny_llama_dir):
    import torch

    with pytest.warns(UserWarning, match="gpu_memory_utilization: a vLLM launch option"):
        uid, h = launch("LLM", llm_doc(tiny_llama_dir, "opts-tiny"), model_engine="transformers",
                        context_length=96, dtype="float64", attn_implementation="eager", enable_thinking=False,
                        gpu_memory_utilization=0.5)
    try:
        engine = _engine(uid)
        assert engine.context_length == 96
        assert next(engine.model.parameters()).dtype == torch.float64
        assert engine.model.config._attn_implementation == "eager"
        assert engine.chat_format.template_vars["enable_thinking"] is False
        with pytest.raises(InferenceError, match="context"):        # 96 tokens: a longer prompt is refused
            h.generate("word " * 200, {"max_tokens": 2})
        from xinference_nb.manager import get_manager
        assert "gpu_memory_utilization" not in get_manager().running_model(uid).options
    finally:
        terminate(uid)


def test_quantization_config_is_applied_and_its_keys_checked(tiny_llama_dir):
    pytest.importorskip("bitsandbytes")
    with pytest.raises(LaunchOptionError, match="quantization_config: unknown key 'bogus'.*load_in_8bit"):
        launch("LLM", llm_doc(tiny_llama_dir, "bnb-bad"), model_engine="transformers",
               quantization_config={"load_in_8bit": True, "bogus": 1})
    uid, h = launch("LLM", llm_doc(tiny_llama_dir, "bnb-tiny"), model_engine="transformers",
                    quantization_config={"load_in_8bit": True})
    try:
        assert "Linear8bitLt" in {type(m).__name__ for m in _engine(uid).model.modules()}
    finally:
        terminate(uid)


def test_llama_cpp_options_are_applied(tiny_gguf_file, tiny_llama_dir):
    pytest.importorskip("llama_cpp")
    doc = llm_doc(tiny_gguf_file, "opts-gguf")
    uid, h = launch("LLM", doc, model_engine="llama.cpp", n_ctx=512, n_threads=1)
    try:
        engine = _engine(uid)
        assert engine.context_length == 512 and engine.llm.n_ctx() == 512   # (the file says 2048)
        assert engine.llm.n_threads == 1
    finally:
        terminate(uid)


def test_embedding_launch_options_are_applied(minilm_dir):
    import torch

    uid, h = launch("embedding", embedding_doc(minilm_dir, "opts-minilm"), truncate_dim=16,
                    prompts={"query": "query: "}, default_prompt_name="query", similarity_fn_name="dot",
                    backend="torch", local_files_only=True, model_kwargs={"dtype": torch.float64},
                    tokenizer_kwargs={"model_max_length": 33}, config_kwargs={"layer_norm_eps": 1e-3})
    try:
        st = _engine(uid).model
        assert len(h.create_embedding("hello")["data"][0]["embedding"]) == 16
        assert st.prompts["query"] == "query: " and st.default_prompt_name == "query"
        assert st.similarity_fn_name == "dot" and st.backend == "torch"
        assert next(st.parameters()).dtype == torch.float64
        assert st[0].auto_model.config.layer_norm_eps == 1e-3
        assert st.tokenizer.model_max_length == 33
        # the default prompt is prepended: the vector differs from one without it
        plain = st.encode("hello", prompt="")[:16]
        assert not torch.allclose(torch.as_tensor(plain),
                                  torch.as_tensor(h.create_embedding("hello")["data"][0]["embedding"],
                                                  dtype=torch.float64), atol=1e-4)
    finally:
        terminate(uid)
    # processor_kwargs is the newer name of tokenizer_kwargs
    uid, h = launch("embedding", embedding_doc(minilm_dir, "opts-minilm2"), processor_kwargs={"model_max_length": 21})
    try:
        assert _engine(uid).model.tokenizer.model_max_length == 21
    finally:
        terminate(uid)


def test_rerank_activation_fn_is_applied(cross_encoder_dir):
    import torch

    docs = ["a cat sat on the mat", "stock prices fell"]
    scores = {}
    for name, fn in (("identity", torch.nn.Identity()), ("sigmoid", torch.nn.Sigmoid())):
        uid, h = launch("rerank", rerank_doc(cross_encoder_dir, f"rr-{name}"), activation_fn=fn)
        try:
            scores[name] = [r["relevance_score"] for r in sorted(h.rerank(docs, "cat")["results"],
                                                                 key=lambda r: r["index"])]
        finally:
            terminate(uid)
    assert scores["sigmoid"] == pytest.approx([1 / (1 + pytest.importorskip("math").exp(-s))
                                               for s in scores["identity"]], abs=1e-5)


def _image_doc(path, name):
    return {"version": 2, "model_name": name, "model_family": "stable_diffusion", "model_uri": str(path),
            "model_ability": ["text2image"], "default_generate_config": {"num_inference_steps": 2}}


def test_image_launch_options_are_applied(tiny_sd_dir):
    import torch

    pytest.importorskip("diffusers")
    uid, h = launch("image", _image_doc(tiny_sd_dir, "opts-sd"), torch_dtype="float64", attention_slicing=True,
                    vae_tiling=True, vae_slicing=True)
    try:
        pipe = _engine(uid).pipe
        assert pipe.unet.dtype == torch.float64
        assert pipe.vae.use_tiling and pipe.vae.use_slicing
        assert any("Sliced" in type(p).__name__ for p in pipe.unet.attn_processors.values())
        assert h.text_to_image("a cat", size="64*64", response_format="b64_json")["data"]
    finally:
        terminate(uid)
    # offloading moves parts between a GPU and the CPU: a CPU launch refuses it by name
    for key in ("cpu_offload", "sequential_cpu_offload"):
        with pytest.raises(LaunchError, match=f"{key}=True"):
            launch("image", _image_doc(tiny_sd_dir, f"sd-{key}"), **{key: True})
    # a keyword diffusers' from_pretrained would ignore is refused, naming it and what is taken
    with pytest.raises(LaunchError, match="not_a_pipeline_arg: not an argument of .*components"):
        launch("image", _image_doc(tiny_sd_dir, "sd-bogus"), not_a_pipeline_arg=1)


def test_image_document_keys_it_cannot_apply_warn(tiny_sd_dir):
    doc = dict(_image_doc(tiny_sd_dir, "sd-quantize"), default_model_config={"quantize": True,
                                                                             "quantize_text_encoder": "text_encoder"})
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        uid, h = launch("image", doc)
    terminate(uid)
    texts = [str(w.message) for w in seen]
    for key in ("quantize", "quantize_text_encoder"):
        assert any(t.startswith(f"default_model_config {key}=") and "had no effect" in t for t in texts), texts


def _tiny_unet_gguf(sd_dir: Path, out: Path, scale: float) -> Path:
    """The tiny pipeline's UNet as a GGUF file: 2-D weights Q8_0-quantized, the rest F32, every
    weight multiplied by ``scale`` (so the loaded UNet is visibly this file's)."""
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    state = load_file(str(sd_dir / "unet" / "diffusion_pytorch_model.safetensors"))
    writer = gguf.GGUFWriter(str(out), arch="unet")
    for name, tensor in state.items():
        values = (tensor.astype(np.float32) * scale).astype(np.float32)
        if values.ndim == 2 and values.shape[-1] % 32 == 0:
            q = gguf.quants.quantize(values, gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(name, q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(name, values)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def test_image_gguf_model_path_loads_the_quantized_unet(tiny_sd_dir, tmp_path):
    import torch

    pytest.importorskip("diffusers")
    file = _tiny_unet_gguf(tiny_sd_dir, tmp_path / "unet-Q8_0.gguf", scale=0.5)
    uid, h = launch("image", _image_doc(tiny_sd_dir, "sd-gguf"), gguf_model_path=str(file))
    try:
        unet = _engine(uid).pipe.unet
        kinds = {type(p).__name__ for p in unet.parameters()}
        assert "GGUFParameter" in kinds                      # stored quantized, as diffusers' GGUF loader keeps it
        from safetensors.torch import load_file

        original = load_file(str(tiny_sd_dir / "unet" / "diffusion_pytorch_model.safetensors"))
        norm = "conv_norm_out.weight"                        # an F32 tensor: exactly half the folder's
        assert torch.allclose(unet.state_dict()[norm].float(), original[norm].float() * 0.5)
        assert h.text_to_image("a cat", size="64*64", response_format="b64_json")["data"]
    finally:
        terminate(uid)
    with pytest.raises(LaunchError, match="gguf_model_path=.*not a GGUF file"):
        launch("image", _image_doc(tiny_sd_dir, "sd-gguf-bad"), gguf_model_path=str(tmp_path / "missing.gguf"))


def test_audio_launch_options_are_applied(tiny_whisper_dir, tiny_vits_dir):
    doc = {"version": 2, "model_name": "opts-whisper", "model_family": "whisper", "model_uri": str(tiny_whisper_dir),
           "model_ability": ["audio2text"], "multilingual": False}
    uid, h = launch("audio", doc, chunk_length_s=5, batch_size=2)
    try:
        pipe = _engine(uid).pipe
        assert pipe._preprocess_params.get("chunk_length_s") == 5 and pipe._batch_size == 2
    finally:
        terminate(uid)
    # a model with one voice: "" or an OpenAI voice name (its SDK requires one) mean that voice; any
    # other voice is refused, never ignored
    vits = {"version": 2, "model_name": "opts-vits", "model_family": "MMS", "model_uri": str(tiny_vits_dir),
            "model_ability": ["text2audio"], "multilingual": False}
    uid, h = launch("audio", vits)
    try:
        for voice in ("", "alloy"):
            assert h.speech("hello", voice=voice, response_format="wav")[:4] == b"RIFF"
        for voice in ("speaker-7", "3"):
            with pytest.raises(InferenceError, match=f"voice='{voice}'.*one voice.*alloy"):
                h.speech("hello", voice=voice, response_format="wav")
    finally:
        terminate(uid)


# ------------------------------------------------------------------------------------------------
# generate_config keys: the effect on the tiny LLM
# ------------------------------------------------------------------------------------------------
def _text(h, prompt, cfg):
    return h.generate(prompt, cfg)["choices"][0]["text"]


def test_generate_config_sampling_keys_are_applied(tiny_llama_dir):
    uid, h = launch("LLM", llm_doc(tiny_llama_dir, "gen-tiny"), model_engine="transformers", max_num_seqs=1)
    try:
        prompt = "Once upon a time"
        out = h.generate(prompt, {"max_tokens": 3, "temperature": 0})
        assert out["usage"]["completion_tokens"] == 3 and out["choices"][0]["finish_reason"] == "length"
        greedy = _text(h, prompt, {"max_tokens": 12, "temperature": 0})
        hot = [_text(h, prompt, {"max_tokens": 12, "temperature": 5.0, "seed": s}) for s in (1, 2, 3)]
        assert len(set(hot)) > 1 and any(t != greedy for t in hot)           # temperature samples
        assert _text(h, prompt, {"max_tokens": 12, "temperature": 5.0, "seed": 1}) == hot[0]   # seed repeats
        for s in (1, 2):                                                     # top_k=1 / tiny top_p: greedy
            assert _text(h, prompt, {"max_tokens": 12, "temperature": 5.0, "seed": s, "top_k": 1}) == greedy
            assert _text(h, prompt, {"max_tokens": 12, "temperature": 5.0, "seed": s, "top_p": 1e-6}) == greedy
        cut = greedy[len(greedy) // 2:][:3]
        assert cut and _text(h, prompt, {"max_tokens": 12, "temperature": 0, "stop": [cut]}) == \
            greedy[:greedy.index(cut)]
        with pytest.raises(InferenceError, match="unknown generate_config key 'bogus'.*max_tokens"):
            h.generate(prompt, {"bogus": 1})
    finally:
        terminate(uid)


def test_generate_config_stream_keys_are_applied(tiny_llama_dir):
    uid, h = launch("LLM", llm_doc(tiny_llama_dir, "stream-tiny"), model_engine="transformers", max_num_seqs=1)
    try:
        base = {"max_tokens": 3, "temperature": 0}
        assert isinstance(h.generate("Once", base), dict)
        chunks = list(h.generate("Once", dict(base, stream=True)))
        assert len(chunks) > 1 and all(c["object"] == "text_completion" for c in chunks)
        last = list(h.generate("Once", dict(base, stream=True, stream_options={"include_usage": False})))[-1]
        assert "usage" not in last or not last["usage"]
        last = list(h.generate("Once", dict(base, stream=True, stream_options={"include_usage": True})))[-1]
        assert last["usage"]["completion_tokens"] == 3
    finally:
        terminate(uid)


# ------------------------------------------------------------------------------------------------
# OpenAI request fields (server/openai.py): bookkeeping accepted and documented, the rest applied
# at the values this server honours and refused at any other
# ------------------------------------------------------------------------------------------------
openai = pytest.importorskip("xinference_nb.server.openai")

# for every field of OPENAI_DEFAULTS, a value it refuses
REFUSED_VALUES = {
    "service_tier": "flex", "echo": True, "best_of": 3, "suffix": "end",
    "extra_body": {"x": 1}, "reasoning_effort": "high",
}
# the OpenAI sampling surface: generate_config keys (chat.GenerateConfig checks them, engines apply them)
APPLIED_FIELDS = {"n": 2, "logprobs": True, "top_logprobs": 3, "presence_penalty": 0.5, "frequency_penalty": -1,
                  "logit_bias": {"1": 5}, "response_format": {"type": "json_object"}, "parallel_tool_calls": False,
                  "tool_choice": "required", "min_p": 0.1, "guided_regex": "a+", "guided_choice": ["a", "b"],
                  "guided_json": {"type": "object"}, "guided_grammar": "start: \"a\"", "guided_json_object": True}


def test_every_openai_field_has_a_fate():
    assert set(REFUSED_VALUES) == set(openai.OPENAI_DEFAULTS), sorted(set(REFUSED_VALUES) ^ set(openai.OPENAI_DEFAULTS))
    assert not set(openai.OPENAI_BOOKKEEPING) & set(openai.OPENAI_DEFAULTS)
    from xinference_nb.chat import GENERATE_CONFIG_KEYS

    for key, value in APPLIED_FIELDS.items():   # passed on as generate_config keys, never refused or dropped
        assert key in GENERATE_CONFIG_KEYS and key not in openai.OPENAI_DEFAULTS
        assert openai.generate_config({key: value})[0] == {key: value}
    # the legacy completions form: an integer logprobs is how many alternatives
    assert openai.generate_config({"logprobs": 2}, chat=False)[0] == {"logprobs": True, "top_logprobs": 2}


@pytest.mark.parametrize("key", sorted(openai.OPENAI_BOOKKEEPING))
def test_bookkeeping_fields_are_accepted_and_documented(key):
    for value in ("u-1", {"a": "b"}, True, None):
        assert openai.generate_config({key: value}) == ({}, None)
    readme = (TESTS.parent / "README.md").read_text()
    section = readme[readme.index("### Launch options and request fields"):]
    assert f"`{key}`" in section[:section.index("\n### ")]


@pytest.mark.parametrize("key", sorted(openai.OPENAI_DEFAULTS))
def test_output_changing_fields_are_refused_beyond_what_is_honoured(key):
    for value in openai.OPENAI_DEFAULTS[key]:
        openai.generate_config({key: value})                         # honoured: no error
    with pytest.raises(InferenceError, match=rf"^{key}=.*not supported by this server; it accepts"):
        openai.generate_config({key: REFUSED_VALUES[key]})


def test_fields_that_map_onto_the_call_are_applied():
    assert openai.generate_config({"max_completion_tokens": 5}) == ({"max_tokens": 5}, None)
    with pytest.raises(InferenceError, match="disagree"):
        openai.generate_config({"max_completion_tokens": 5, "max_tokens": 6})
    assert openai.generate_config({"reasoning_effort": "none"}) == ({}, False)
    assert openai.generate_config({"chat_template_kwargs": {"enable_thinking": True}}) == ({}, True)
    with pytest.raises(InferenceError, match="chat_template_kwargs"):
        openai.generate_config({"chat_template_kwargs": {"enable_thinking": True, "other": 1}})
    with pytest.raises(InferenceError, match="reasoning_effort asks for enable_thinking=False"):
        openai.generate_config({"enable_thinking": True, "reasoning_effort": "none"})
    with pytest.raises(InferenceError, match="completion has no chat template"):
        openai.generate_config({"enable_thinking": False}, chat=False)
    assert openai.generate_config({"stream_options": {"include_usage": True}, "stream": True})[0] == \
        {"stream_options": {"include_usage": True}, "stream": True}
    assert openai.generate_config({"request_id": "r1"}) == ({"request_id": "r1"}, None)   # the handle refuses it


def test_openai_fields_over_rest(tiny_llama_dir, nb_home):
    """Over REST: tool_choice "none" sends no tools (fewer prompt tokens), a refused value is a 400
    naming the field, a key nothing takes is a 400 from the handle, bookkeeping fields are accepted."""
    httpx = pytest.importorskip("httpx")
    from xinference_nb.client import Client
    from xinference_nb.server.app import create_app
    from xinference_nb.server.runner import start_in_thread

    uid, h = launch("LLM", llm_doc(tiny_llama_dir, "rest-tiny"), model_engine="transformers", max_num_seqs=1)
    running = start_in_thread(create_app(Client(), allowed_roots=[str(tiny_llama_dir.parent)]), port=0)
    try:
        tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                                                   "parameters": {"type": "object", "properties": {
                                                       "city": {"type": "string"}}}}}]
        body = {"model": uid, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, "temperature": 0,
                "tools": tools}

        def post(extra, path="/v1/chat/completions"):
            return httpx.post(running.url + path, json={**body, **extra}, timeout=60)

        with_tools = post({}).json()["usage"]["prompt_tokens"]
        without = post({"tool_choice": "none"})
        assert without.status_code == 200, without.text
        assert without.json()["usage"]["prompt_tokens"] < with_tools
        ok = post({"user": "u-1", "metadata": {"a": "b"}, "store": True, "safety_identifier": "s",
                   "prompt_cache_key": "k", "service_tier": "auto", "parallel_tool_calls": True})
        assert ok.status_code == 200, ok.text
        for extra, field in (({"n": 17}, "'n'"), ({"reasoning_effort": "low"}, "reasoning_effort"),
                             ({"request_id": "r1"}, "request_id"), ({"top_logprobs": 2}, "top_logprobs"),
                             ({"response_format": {"type": "xml"}}, "response_format")):
            r = post(extra)
            assert r.status_code == 400 and field in r.json()["detail"], (extra, r.text)
        r = httpx.post(running.url + "/v1/completions", timeout=60,
                       json={"model": uid, "prompt": "Hi", "max_tokens": 2, "enable_thinking": False})
        assert r.status_code == 400 and "completion has no chat template" in r.json()["detail"]
    finally:
        running.stop()
        terminate(uid)


def test_launch_options_over_rest(tiny_llama_dir, nb_home):
    """A refused launch option is a 400 naming it; an other-engine option launches (with the warning)."""
    httpx = pytest.importorskip("httpx")
    from xinference_nb.client import Client
    from xinference_nb.server.app import create_app
    from xinference_nb.server.runner import start_in_thread

    client = Client()
    client.register_model("LLM", json.dumps(llm_doc(tiny_llama_dir, "rest-opts")), persist=False, overwrite=True)
    running = start_in_thread(create_app(client, allowed_roots=[str(tiny_llama_dir.parent)]), port=0)
    try:
        base = {"model_name": "rest-opts", "model_type": "LLM", "model_engine": "transformers", "n_gpu": None}
        r = httpx.post(running.url + "/v1/models", json={**base, "revision": "main"}, timeout=120)
        assert r.status_code == 400 and "revision" in r.json()["detail"], r.text
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = httpx.post(running.url + "/v1/models", json={**base, "max_model_len": 64}, timeout=120)
        assert r.status_code == 200, r.text
        terminate(r.json()["model_uid"])
    finally:
        running.stop()
