"""Image (tiny diffusers pipeline) and audio (tiny VITS text-to-speech, tiny Whisper recognition)
models launched from custom documents, with results decoded and checked."""
from __future__ import annotations

import base64
import io
import json
import wave

import pytest

from xinference_nb.errors import EngineUnavailable, InferenceError
from public_api import launch, terminate  # noqa: E402
from tiny_models import tone_wav  # noqa: E402


# ------------------------------------------------------------------------------------------------
# Everything goes through the public Client: register, launch, get_model, terminate.
# ------------------------------------------------------------------------------------------------
def image_doc(path, name="tiny-sd", **extra):
    doc = {"version": 2, "model_name": name, "model_family": "stable_diffusion", "model_uri": str(path),
           "model_ability": ["text2image", "image2image"],
           "default_generate_config": {"num_inference_steps": 2}}
    doc.update(extra)
    return doc


def audio_doc(path, name, family, abilities):
    return {"version": 2, "model_name": name, "model_family": family, "model_uri": f"file://{path}",
            "model_ability": abilities, "multilingual": False}


def _png_size(data: bytes):
    from PIL import Image

    img = Image.open(io.BytesIO(data))
    assert img.format == "PNG"
    return img.size


def test_text_to_image_url_and_b64(tiny_sd_dir, nb_home):
    pytest.importorskip("diffusers")
    uid, h = launch("image", image_doc(tiny_sd_dir))
    try:
        out = h.text_to_image("a red apple on a table", n=2, size="64*64", seed=0)
        assert set(out) == {"created", "data"} and isinstance(out["created"], int)
        assert len(out["data"]) == 2
        for item in out["data"]:
            assert item["b64_json"] is None
            path = item["url"]
            assert path.startswith(str(nb_home / "image")) and path.endswith(".png")
            with open(path, "rb") as f:
                assert _png_size(f.read()) == (64, 64)

        out = h.text_to_image("a cat", size="64*32", response_format="b64_json", seed=0)
        assert out["data"][0]["url"] is None
        assert _png_size(base64.b64decode(out["data"][0]["b64_json"])) == (64, 32)
        json.dumps(out)
        # same seed, same image
        again = h.text_to_image("a cat", size="64*32", response_format="b64_json", seed=0)
        assert again["data"][0]["b64_json"] == out["data"][0]["b64_json"]

        img2 = h.image_to_image(base64.b64decode(out["data"][0]["b64_json"]), prompt="a dog", size="64*64",
                                response_format="b64_json", strength=1.0)
        assert _png_size(base64.b64decode(img2["data"][0]["b64_json"])) == (64, 64)

        # the document's default_generate_config (2 steps) applies; a call's own value wins
        steps = []

        def count(pipe, step, timestep, kwargs):
            steps.append(step)
            return kwargs

        def n_steps(**kw):
            steps.clear()
            h.text_to_image("x", size="64*64", response_format="b64_json", callback_on_step_end=count, **kw)
            return len(steps)

        default = n_steps()
        assert default == n_steps(num_inference_steps=2)  # (PNDM adds one warm-up step to the 2)
        assert n_steps(num_inference_steps=4) == default + 2

        with pytest.raises(InferenceError, match="size"):
            h.text_to_image("x", size="60*60")
        with pytest.raises(InferenceError, match="response_format"):
            h.text_to_image("x", size="64*64", response_format="jpeg")
        with pytest.raises(InferenceError, match="bogus_arg"):
            h.text_to_image("x", size="64*64", bogus_arg=1)
    finally:
        terminate(uid, h)


def test_speech_vits_wav_flac(tiny_vits_dir):
    uid, h = launch("audio", audio_doc(tiny_vits_dir, "tiny-vits", "MMS", ["text2audio"]))
    try:
        data = h.speech("hello world", response_format="wav")
        assert isinstance(data, bytes)
        with wave.open(io.BytesIO(data), "rb") as w:
            assert w.getframerate() == 16000 and w.getnchannels() == 1 and w.getsampwidth() == 2
            assert w.getnframes() > 0
        sf = pytest.importorskip("soundfile")
        flac, rate = sf.read(io.BytesIO(h.speech("hello world", response_format="flac")))
        assert rate == 16000 and len(flac) > 0
        if "MP3" in sf.available_formats():
            assert len(h.speech("hello", response_format="mp3")) > 0
        slow = h.speech("hello world", response_format="pcm", speed=0.5)
        assert len(slow) > 0
        chunks = list(h.speech("hello world", response_format="wav", stream=True))
        assert b"".join(chunks)[:4] == b"RIFF"
        with pytest.raises(InferenceError, match="response_format"):
            h.speech("hello", response_format="aiff")
        with pytest.raises(InferenceError, match="input"):
            h.speech("")
    finally:
        terminate(uid, h)




def test_transcriptions_whisper(tiny_whisper_dir, tmp_path):
    uid, h = launch("audio", audio_doc(tiny_whisper_dir, "tiny-whisper", "whisper", ["audio2text"]))
    try:
        audio = tone_wav()
        out = h.transcriptions(audio)
        assert set(out) == {"text"} and isinstance(out["text"], str)
        text = h.transcriptions(audio, language="en", response_format="text")
        assert isinstance(text, str)
        # a 8 kHz file path is resampled to the model's 16 kHz
        path = tmp_path / "tone.wav"
        path.write_bytes(tone_wav(rate=8000))
        verbose = h.transcriptions(str(path), response_format="verbose_json")
        assert verbose["task"] == "transcribe" and verbose["duration"] == pytest.approx(1.0, abs=1e-3)
        assert isinstance(verbose["text"], str) and verbose["segments"]
        trans = h.translations(audio)
        assert isinstance(trans["text"], str)
        with pytest.raises(InferenceError, match="response_format"):
            h.transcriptions(audio, response_format="xml")
        with pytest.raises(InferenceError, match="audio"):
            h.transcriptions(b"not audio at all")
    finally:
        terminate(uid, h)


def test_family_without_package_is_engine_unavailable(tiny_vits_dir):
    with pytest.raises(EngineUnavailable, match="ChatTTS") as info:
        launch("audio", audio_doc(tiny_vits_dir, "my-chattts", "ChatTTS", ["text2audio"]))
    assert "pip install" in str(info.value)
