"""Audio models: text-to-speech and speech recognition.

The family (``model_family``) and the model's ``config.json`` pick the backend:

* families with their own package — ChatTTS (``ChatTTS``), MeloTTS (``melo``), Kokoro (``kokoro``),
  CosyVoice, FishSpeech, F5-TTS, SenseVoice/Paraformer (``funasr``) — need that package; launching
  one without it is an ``EngineUnavailable`` naming the package. ChatTTS and MeloTTS run through
  their own APIs; the others are refused with a LaunchError (not supported here yet).
* anything else runs through transformers: speech recognition (``whisper`` family, a config whose
  model_type is an ASR architecture, or the ``audio2text`` ability) with the
  ``automatic-speech-recognition`` pipeline; text-to-speech (VITS/MMS, Bark, MusicGen, ... or the
  ``text2audio`` ability) with the ``text-to-speech`` pipeline.

``speech`` returns the encoded audio bytes: "wav" (16-bit PCM, stdlib ``wave``), "pcm" (raw 16-bit
little-endian), and "flac", "mp3", "ogg" through ``soundfile`` when its libsndfile can write them.
``transcriptions`` / ``translations`` take audio bytes (any format soundfile reads), a file path or
a float array at the model's sampling rate, and return Xinference's shapes.
"""
from __future__ import annotations

import io
import json
import os
import threading
import wave
from pathlib import Path
from typing import Any, Iterator, Optional

from ..errors import EngineUnavailable, InferenceError, LaunchError
from . import EngineModel, LoadRequest
from ..memory import release_memory
from .flexible import backend_options, torch_memory_bytes

# family (lower-case, prefix match) → (module to import, pip package)
FAMILY_PACKAGES: dict[str, tuple[str, str]] = {
    "chattts": ("ChatTTS", "ChatTTS"),
    "melotts": ("melo", "melotts"),
    "kokoro": ("kokoro", "kokoro"),
    "cosyvoice": ("cosyvoice", "cosyvoice"),
    "fishaudio": ("fish_speech", "fish-speech"),
    "fishspeech": ("fish_speech", "fish-speech"),
    "f5-tts": ("f5_tts", "f5-tts"),
    "f5tts": ("f5_tts", "f5-tts"),
    "sensevoice": ("funasr", "funasr"),
    "paraformer": ("funasr", "funasr"),
    "funasr": ("funasr", "funasr"),
}
ASR_MODEL_TYPES = {"whisper", "wav2vec2", "wav2vec2-conformer", "hubert", "speech_to_text", "seamless_m4t",
                   "seamless_m4t_v2", "moonshine", "wavlm", "data2vec-audio", "unispeech", "unispeech-sat", "sew",
                   "sew-d", "mctct", "speecht5_asr", "parakeet_ctc", "lasr_ctc"}
TTS_MODEL_TYPES = {"vits", "bark", "musicgen", "musicgen_melody", "speecht5", "fastspeech2_conformer",
                   "seamless_m4t", "csm", "dia", "kyutai_speech_to_text"}

SPEECH_FORMATS = ("mp3", "wav", "flac", "pcm", "ogg", "opus", "aac")
# OpenAI's voice names: its SDK requires one, so on a model with one voice each means that voice
OPENAI_VOICES = ("alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer", "verse",
                 "marin", "cedar")
_SF_FORMATS = {"flac": ("FLAC", "PCM_16"), "mp3": ("MP3", "MPEG_LAYER_III"), "ogg": ("OGG", "VORBIS"),
               "opus": ("OGG", "OPUS")}


# ------------------------------------------------------------------------------------------------
# encoding / decoding
# ------------------------------------------------------------------------------------------------

def _as_mono_float(audio: Any):
    import numpy as np

    arr = np.asarray(audio, dtype=np.float32)
    arr = np.squeeze(arr)
    if arr.ndim == 2:  # (channels, samples) or (samples, channels): average the channels
        arr = arr.mean(axis=0 if arr.shape[0] < arr.shape[1] else 1)
    if arr.ndim != 1:
        raise InferenceError(f"audio has shape {arr.shape}; expected one channel of samples")
    return arr


def encode_audio(samples: Any, sampling_rate: int, response_format: str) -> bytes:
    """Float samples in [-1, 1] → bytes of ``response_format``."""
    import numpy as np

    fmt = (response_format or "mp3").lower()
    arr = _as_mono_float(samples)
    pcm16 = (np.clip(arr, -1.0, 1.0) * 32767.0).astype("<i2")
    if fmt == "wav":
        buf = io.BytesIO()
        with wave.open(buf, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(int(sampling_rate))
            w.writeframes(pcm16.tobytes())
        return buf.getvalue()
    if fmt == "pcm":
        return pcm16.tobytes()
    if fmt in _SF_FORMATS:
        container, subtype = _SF_FORMATS[fmt]
        try:
            import soundfile as sf
        except ImportError:
            raise InferenceError(f"response_format={fmt!r} needs the soundfile package; pip install soundfile, or "
                                 "ask for response_format=\"wav\"") from None
        if container not in sf.available_formats() or subtype not in sf.available_subtypes(container):
            raise InferenceError(f"response_format={fmt!r}: the installed libsndfile ({sf.__libsndfile_version__}) "
                                 f"cannot write {fmt}; upgrade soundfile (pip install -U soundfile, libsndfile>=1.1 "
                                 "writes mp3) or ask for response_format=\"wav\" or \"flac\"")
        buf = io.BytesIO()
        rate = int(sampling_rate)
        if fmt == "opus" and rate not in (8000, 12000, 16000, 24000, 48000):
            raise InferenceError(f"response_format=\"opus\" needs a rate of 8/12/16/24/48 kHz, the model makes {rate} Hz")
        sf.write(buf, pcm16, rate, format=container, subtype=subtype)
        return buf.getvalue()
    raise InferenceError(f"response_format={response_format!r} is not supported; use one of "
                         "\"mp3\", \"wav\", \"flac\", \"pcm\", \"ogg\", \"opus\"")


def decode_audio(audio: Any, target_rate: int) -> tuple[Any, float]:
    """Audio bytes / file path / float array → (mono float32 samples at ``target_rate``, seconds)."""
    import numpy as np

    if isinstance(audio, dict) and "raw" in audio or isinstance(audio, dict) and "array" in audio:
        samples = audio.get("raw", audio.get("array"))
        rate = int(audio.get("sampling_rate") or target_rate)
        arr = _as_mono_float(samples)
    elif isinstance(audio, (bytes, bytearray, memoryview)) or isinstance(audio, (str, os.PathLike)):
        if isinstance(audio, (str, os.PathLike)):
            if not os.path.isfile(audio):
                raise InferenceError(f"audio: {str(audio)!r} is not a file; pass audio bytes or an existing file path")
            source: Any = str(audio)
        else:
            source = io.BytesIO(bytes(audio))
        arr, rate = _read_audio(source)
    elif hasattr(audio, "read"):
        arr, rate = _read_audio(io.BytesIO(audio.read()))
    elif isinstance(audio, (list, tuple)) or type(audio).__name__ == "ndarray":
        arr, rate = _as_mono_float(audio), target_rate
    else:
        raise InferenceError(f"audio must be bytes, a file path or an array of samples, got {type(audio).__name__}")
    if arr.size == 0:
        raise InferenceError("audio is empty (no samples)")
    if rate != target_rate:
        from math import gcd

        from scipy.signal import resample_poly

        g = gcd(int(rate), int(target_rate))
        arr = resample_poly(arr, target_rate // g, rate // g).astype(np.float32)
    return arr, len(arr) / float(target_rate)


def _read_audio(source: Any) -> tuple[Any, int]:
    import numpy as np

    try:
        import soundfile as sf

        data, rate = sf.read(source, dtype="float32", always_2d=False)
        return _as_mono_float(data), int(rate)
    except ImportError:
        pass
    except Exception as exc:
        if not _looks_like_wav(source):
            raise InferenceError(f"audio could not be decoded ({exc}); send wav, flac, ogg or mp3 bytes") from None
    if hasattr(source, "seek"):
        source.seek(0)
    try:
        with wave.open(source, "rb") as w:
            rate, width, channels = w.getframerate(), w.getsampwidth(), w.getnchannels()
            frames = w.readframes(w.getnframes())
    except Exception as exc:
        raise InferenceError(f"audio could not be decoded ({exc}); send 16-bit wav bytes, or pip install soundfile "
                             "for flac/ogg/mp3") from None
    if width != 2:
        raise InferenceError(f"audio: {8 * width}-bit wav is not supported without soundfile; pip install soundfile")
    arr = np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0
    if channels > 1:
        arr = arr.reshape(-1, channels).mean(axis=1)
    return arr, rate


def _looks_like_wav(source: Any) -> bool:
    try:
        if hasattr(source, "getvalue"):
            return source.getvalue()[:4] == b"RIFF"
        with open(source, "rb") as f:
            return f.read(4) == b"RIFF"
    except Exception:
        return False


def _chunks(data: bytes, size: int = 32 * 1024) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start:start + size]


def _check_speech_args(input: Any, response_format: str, speed: Any,  # noqa: A002
                       extra: Optional[dict[str, Any]] = None, takes: str = "") -> None:
    """Refuses bad speech arguments, and any extra keyword of a model whose backend takes none
    (``extra`` given): never dropped silently."""
    unknown = sorted(k for k in (extra or {}) if k != "model")
    if unknown:
        raise InferenceError(f"speech() got {', '.join(unknown)}, which {takes} does not take; it takes input, voice, "
                             "response_format, speed and stream")
    if not isinstance(input, str) or not input.strip():
        raise InferenceError("input must be a non-empty string of text to speak")
    if (response_format or "").lower() not in SPEECH_FORMATS:
        raise InferenceError(f"response_format={response_format!r} is not supported; use one of "
                             "\"mp3\", \"wav\", \"flac\", \"pcm\", \"ogg\", \"opus\"")
    if isinstance(speed, bool) or not isinstance(speed, (int, float)) or not 0.25 <= float(speed) <= 4.0:
        raise InferenceError(f"speed={speed!r}: pass a number from 0.25 to 4.0 (1.0 is normal speed)")


# ------------------------------------------------------------------------------------------------
# transformers models
# ------------------------------------------------------------------------------------------------

class _AudioBase(EngineModel):
    model_type = "audio"

    def __init__(self, model_uid: str, uses_cuda: bool = False):
        self.model_uid = model_uid
        self._uses_cuda = uses_cuda
        self._lock = threading.Lock()

    def _unsupported(self, method: str) -> InferenceError:
        return InferenceError(f"model {self.model_uid!r} ({type(self).__name__}) cannot {method}; "
                              f"it has the abilities {', '.join(self.abilities)}")

    def speech(self, input: str, voice: str = "", response_format: str = "mp3", speed: float = 1.0,  # noqa: A002
               stream: bool = False, **kwargs: Any) -> Any:
        raise self._unsupported("speech (text-to-speech)")

    def transcriptions(self, audio: Any, language: Optional[str] = None, prompt: Optional[str] = None,
                       response_format: str = "json", temperature: float = 0,
                       timestamp_granularities: Optional[list[str]] = None, **kwargs: Any) -> Any:
        raise self._unsupported("transcribe audio")

    def translations(self, audio: Any, language: Optional[str] = None, prompt: Optional[str] = None,
                     response_format: str = "json", temperature: float = 0,
                     timestamp_granularities: Optional[list[str]] = None, **kwargs: Any) -> Any:
        raise self._unsupported("translate audio")

    def _speech_result(self, samples: Any, rate: int, response_format: str, stream: bool) -> Any:
        data = encode_audio(samples, rate, response_format)
        return _chunks(data) if stream else data


class _PipelineAudio(_AudioBase):
    """An audio model served by a transformers pipeline (speech or recognition)."""

    def __init__(self, model_uid: str, pipe: Any, defaults: dict[str, Any], uses_cuda: bool = False):
        super().__init__(model_uid, uses_cuda)
        self.pipe = pipe
        self.defaults = dict(defaults or {})

    def memory_bytes(self) -> Optional[int]:
        return torch_memory_bytes(getattr(self.pipe, "model", None))

    def close(self) -> None:
        self.pipe = None
        release_memory()


class TransformersTTS(_PipelineAudio):
    abilities = ("text2audio",)

    @property
    def sampling_rate(self) -> int:
        return int(self.pipe.sampling_rate)

    def speech(self, input: str, voice: str = "", response_format: str = "mp3", speed: float = 1.0,  # noqa: A002
               stream: bool = False, **kwargs: Any) -> Any:
        """Speak ``input``; returns the encoded audio bytes (an iterator of byte chunks when
        ``stream``). ``speed`` scales the speaking rate of VITS/MMS models; ``voice`` picks the
        speaker id of multi-speaker VITS models; a model with one voice takes "" or an OpenAI voice name
        (the OpenAI SDK requires one) for that voice and refuses any other."""
        _check_speech_args(input, response_format, speed)
        if self.pipe is None:
            raise InferenceError(f"model {self.model_uid!r} is closed")
        kwargs.pop("model", None)
        forward = {**self.defaults, **kwargs}
        model = self.pipe.model
        is_vits = getattr(model.config, "model_type", "") == "vits"
        if float(speed) != 1.0 and not is_vits:
            raise InferenceError(f"speed={speed}: {type(model).__name__} has no speaking-rate control; use speed=1.0")
        speakers = getattr(model.config, "num_speakers", 1) if is_vits else 1
        if speakers <= 1 and voice not in (None, "") and voice not in OPENAI_VOICES:
            raise InferenceError(f"voice={voice!r}: {type(model).__name__} speaks with one voice; leave voice empty "
                                 f"or send one of OpenAI's voice names ({', '.join(OPENAI_VOICES)}), which all "
                                 "mean that voice")
        if speakers > 1 and voice not in (None, ""):
            try:
                forward["speaker_id"] = int(voice)
            except (TypeError, ValueError):
                forward["speaker_id"] = -1
            if not 0 <= forward["speaker_id"] < speakers:
                raise InferenceError(f"voice={voice!r}: this model's voices are speaker ids 0..{speakers - 1}")
        with self._lock:
            old_rate = getattr(model, "speaking_rate", None)
            if is_vits:
                model.speaking_rate = float(speed) * (old_rate or 1.0)
            try:
                out = self.pipe(input, forward_params=forward) if forward else self.pipe(input)
            except (TypeError, ValueError) as exc:
                raise InferenceError(f"speech() failed on its arguments: {exc}") from exc
            finally:
                if is_vits:
                    model.speaking_rate = old_rate
        return self._speech_result(out["audio"], int(out.get("sampling_rate") or self.sampling_rate),
                                   response_format, stream)



class TransformersASR(_PipelineAudio):
    abilities = ("audio2text",)

    def __init__(self, model_uid: str, pipe: Any, defaults: dict[str, Any], uses_cuda: bool = False):
        super().__init__(model_uid, pipe, defaults, uses_cuda)
        self.is_whisper = getattr(pipe.model.config, "model_type", "") == "whisper"

    @property
    def sampling_rate(self) -> int:
        return int(self.pipe.feature_extractor.sampling_rate)

    def transcriptions(self, audio: Any, language: Optional[str] = None, prompt: Optional[str] = None,
                       response_format: str = "json", temperature: float = 0,
                       timestamp_granularities: Optional[list[str]] = None, **kwargs: Any) -> Any:
        return self._recognize("transcribe", audio, language, prompt, response_format, temperature,
                               timestamp_granularities, kwargs)

    def translations(self, audio: Any, language: Optional[str] = None, prompt: Optional[str] = None,
                     response_format: str = "json", temperature: float = 0,
                     timestamp_granularities: Optional[list[str]] = None, **kwargs: Any) -> Any:
        if not self.is_whisper:
            raise InferenceError(f"translations() needs a Whisper model; {type(self.pipe.model).__name__} only "
                                 "transcribes")
        return self._recognize("translate", audio, language, prompt, response_format, temperature,
                               timestamp_granularities, kwargs)

    def _recognize(self, task: str, audio: Any, language: Optional[str], prompt: Optional[str],
                   response_format: str, temperature: float, granularities: Optional[list[str]],
                   kwargs: dict[str, Any]) -> Any:
        if self.pipe is None:
            raise InferenceError(f"model {self.model_uid!r} is closed")
        if response_format not in ("json", "text", "verbose_json", "srt", "vtt"):
            raise InferenceError(f"response_format={response_format!r} is not supported; use \"json\", \"text\", "
                                 "\"verbose_json\", \"srt\" or \"vtt\"")
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or temperature < 0:
            raise InferenceError(f"temperature={temperature!r}: pass a number >= 0")
        granularities = list(granularities or [])
        bad = [g for g in granularities if g not in ("segment", "word")]
        if bad:
            raise InferenceError(f"timestamp_granularities: {bad} not understood; use [\"segment\"] and/or [\"word\"]")
        kwargs.pop("model", None)
        samples, duration = decode_audio(audio, self.sampling_rate)
        generate = {**self.defaults.get("generate_kwargs", {}), **kwargs.pop("generate_kwargs", {})}
        call: dict[str, Any] = {k: v for k, v in self.defaults.items() if k != "generate_kwargs"}
        call.update(kwargs)
        if self.is_whisper:
            generate["task"] = task
            if language:
                generate["language"] = language
            if prompt:
                tokenizer = self.pipe.tokenizer
                if hasattr(tokenizer, "get_prompt_ids"):
                    generate["prompt_ids"] = tokenizer.get_prompt_ids(prompt, return_tensors="pt").to(
                        self.pipe.model.device)
        if temperature and temperature > 0:
            generate.update(do_sample=True, temperature=float(temperature))
        wants_segments = response_format in ("verbose_json", "srt", "vtt")
        if "word" in granularities:
            call["return_timestamps"] = "word"
        elif wants_segments and ("segment" in granularities or response_format in ("srt", "vtt")):
            call["return_timestamps"] = True
        if generate:
            call["generate_kwargs"] = generate
        with self._lock:
            try:
                out = self.pipe({"raw": samples, "sampling_rate": self.sampling_rate}, **call)
            except (TypeError, ValueError) as exc:
                raise InferenceError(f"{task} failed on its arguments: {exc}") from exc
        text = out.get("text", "") if isinstance(out, dict) else str(out)
        if response_format == "json":
            return {"text": text}
        if response_format == "text":
            return text
        chunks = out.get("chunks") or [] if isinstance(out, dict) else []
        segments, words = _segments(text, chunks, duration, word_level="word" in granularities, temperature=temperature)
        if response_format == "srt":
            return _subtitles(segments, srt=True)
        if response_format == "vtt":
            return _subtitles(segments, srt=False)
        result = {"task": task, "language": language or self.defaults.get("language") or "", "duration": duration,
                  "text": text, "segments": segments}
        if words is not None:
            result["words"] = words
        return result



def _segments(text: str, chunks: list[dict], duration: float, word_level: bool,
              temperature: float) -> tuple[list[dict], Optional[list[dict]]]:
    def seg(i: int, start: float, end: float, body: str) -> dict:
        return {"id": i, "seek": 0, "start": start, "end": end, "text": body, "tokens": [],
                "temperature": float(temperature), "avg_logprob": 0.0, "compression_ratio": 0.0,
                "no_speech_prob": 0.0}

    if not chunks:
        return [seg(0, 0.0, round(duration, 3), text)], ([] if word_level else None)
    items = []
    for c in chunks:
        start, end = (c.get("timestamp") or (None, None))
        limit = round(duration, 3)  # a model may stamp past the end of the audio: clamp
        start = min(float(start), limit) if start is not None else 0.0
        end = min(float(end), limit) if end is not None else limit
        items.append((start, end, c.get("text", "")))
    if word_level:
        words = [{"word": t.strip(), "start": s, "end": e} for s, e, t in items]
        return [seg(0, items[0][0], items[-1][1], text)], words
    return [seg(i, s, e, t) for i, (s, e, t) in enumerate(items)], None


def _subtitles(segments: list[dict], srt: bool) -> str:
    def stamp(seconds: float) -> str:
        ms = int(round(seconds * 1000))
        h, ms = divmod(ms, 3_600_000)
        m, ms = divmod(ms, 60_000)
        s, ms = divmod(ms, 1000)
        sep = "," if srt else "."
        return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"

    lines = [] if srt else ["WEBVTT", ""]
    for i, s in enumerate(segments, 1):
        if srt:
            lines.append(str(i))
        lines += [f"{stamp(s['start'])} --> {stamp(s['end'])}", s["text"].strip(), ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# family packages with their own APIs (used only when the package is installed)
# ------------------------------------------------------------------------------------------------

class _PackageTTS(_AudioBase):
    """Text-to-speech through a family's own package (``backend``: the package's model object): the
    speech arguments are checked, ``_synthesize`` makes the samples, they are encoded."""

    abilities = ("text2audio",)
    package = ""           # the package's name, in errors

    def __init__(self, model_uid: str, backend: Any, uses_cuda: bool = False):
        super().__init__(model_uid, uses_cuda)
        self.backend = backend

    def speech(self, input: str, voice: str = "", response_format: str = "mp3", speed: float = 1.0,  # noqa: A002
               stream: bool = False, **kwargs: Any) -> Any:
        _check_speech_args(input, response_format, speed, kwargs, self.package)
        samples, rate = self._synthesize(input, voice, float(speed))
        return self._speech_result(samples, rate, response_format, stream)

    def _synthesize(self, text: str, voice: str, speed: float) -> tuple[Any, int]:
        """(samples, sampling rate) of ``text`` spoken; the backend runs under the model's lock."""
        raise NotImplementedError

    def close(self) -> None:
        self.backend = None
        release_memory()


class ChatTTSModel(_PackageTTS):
    """ChatTTS through its own package (24 kHz). Not exercised by the test-suite (no package here)."""

    package = "ChatTTS"
    sampling_rate = 24000

    def _synthesize(self, text: str, voice: str, speed: float) -> tuple[Any, int]:
        import ChatTTS  # noqa: N813

        params = ChatTTS.Chat.InferCodeParams(spk_emb=voice or None, prompt=f"[speed_{max(0, min(9, int(round(speed * 5))))}]")
        with self._lock:
            wavs = self.backend.infer([text], params_infer_code=params)
        return wavs[0], self.sampling_rate


class MeloTTSModel(_PackageTTS):
    """MeloTTS through the ``melo`` package. Not exercised by the test-suite (no package here)."""

    package = "MeloTTS"

    def _synthesize(self, text: str, voice: str, speed: float) -> tuple[Any, int]:
        speakers = dict(self.backend.hps.data.spk2id)
        if voice and voice not in speakers:
            raise InferenceError(f"voice={voice!r} is not a speaker of this model; use one of {sorted(speakers)}")
        speaker = speakers[voice] if voice else next(iter(speakers.values()))
        with self._lock:
            samples = self.backend.tts_to_file(text, speaker, output_path=None, speed=speed, quiet=True)
        return samples, int(self.backend.hps.data.sampling_rate)


# ------------------------------------------------------------------------------------------------
# loader
# ------------------------------------------------------------------------------------------------

def _family_package(family: str) -> Optional[tuple[str, str]]:
    key = family.lower().replace("_", "-")
    for prefix, pkg in FAMILY_PACKAGES.items():
        if key.startswith(prefix):
            return pkg
    return None


def _config_model_type(path: Optional[Path]) -> Optional[str]:
    if path is None:
        return None
    config = Path(path) / "config.json"
    try:
        return json.loads(config.read_text()).get("model_type")
    except (OSError, ValueError):
        return None


def audio_kind(spec: Any, model_path: Optional[Path]) -> str:
    """"asr" or "tts" for transformers models, from the family, the abilities and config.json."""
    family = (spec.model_family or "").lower()
    abilities = set(spec.model_ability or [])
    model_type = _config_model_type(model_path)
    if "whisper" in family or model_type in ASR_MODEL_TYPES and model_type not in TTS_MODEL_TYPES:
        return "asr"
    if "audio2text" in abilities and not abilities & {"text2audio", "text2music"}:
        return "asr"
    if model_type in TTS_MODEL_TYPES or abilities & {"text2audio", "text2music"}:
        return "tts"
    if model_type is None:
        raise LaunchError(f"audio model {spec.model_name!r}: cannot tell speech recognition from text-to-speech "
                          f"(no config.json under {model_path}); set model_ability to [\"audio2text\"] or "
                          "[\"text2audio\"]")
    raise LaunchError(f"audio model {spec.model_name!r}: family {spec.model_family!r} with config model_type "
                      f"{model_type!r} is neither a known speech-recognition nor text-to-speech architecture; set "
                      "model_ability to [\"audio2text\"] or [\"text2audio\"]")


def load(request: LoadRequest) -> _AudioBase:
    import importlib.util

    spec = request.spec
    family = spec.model_family or ""
    package = _family_package(family)
    device = request.device
    if package is not None:
        module, pip_name = package
        if importlib.util.find_spec(module) is None:
            raise EngineUnavailable(f"Audio family {family!r} runs on the {pip_name} package ({module}), which is not "
                                    "installed.", package=pip_name, extra=None)
        return _load_family(request, module)
    request.progress("load", 0.1)
    try:
        from transformers import pipeline
    except ImportError:  # pragma: no cover - the engine table checks this
        raise EngineUnavailable("Audio models need transformers.", package="transformers", extra="audio") from None
    kind = audio_kind(spec, request.model_path)
    options = backend_options(request.options)
    config = {**(spec.default_model_config or {}), **options}
    pipe_kwargs = {k: config.pop(k) for k in ("torch_dtype", "dtype", "trust_remote_code", "model_kwargs", "chunk_length_s",
                                              "batch_size") if k in config}
    if isinstance(pipe_kwargs.get("torch_dtype"), str):
        pipe_kwargs["dtype"] = pipe_kwargs.pop("torch_dtype")
    pipe = None
    try:
        try:
            task = "automatic-speech-recognition" if kind == "asr" else "text-to-speech"
            pipe = pipeline(task, model=request.source, device=device.device, **pipe_kwargs)
        except Exception as exc:
            raise LaunchError(f"audio model {request.model_name!r}: transformers could not build a {task} pipeline "
                              f"from {request.source}: {type(exc).__name__}: {exc}") from exc
        if kind == "asr":
            defaults = dict(spec.default_transcription_config or {})
            defaults.update(config)
            model: _AudioBase = TransformersASR(request.model_uid, pipe, defaults, device.uses_cuda)
        else:
            model = TransformersTTS(request.model_uid, pipe, config, device.uses_cuda)
    except BaseException:
        pipe = None
        release_memory()
        raise
    request.progress("ready", 1.0)
    return model


def _load_family(request: LoadRequest, module: str) -> _AudioBase:
    spec = request.spec
    device = request.device
    unused = sorted(backend_options(request.options))
    if unused:  # these packages take no loading arguments from us: never drop an option silently
        raise LaunchError(f"audio family {spec.model_family!r} ({module}) takes no launch options; drop "
                          f"{', '.join(unused)}")
    try:
        if module == "ChatTTS":
            import ChatTTS  # noqa: N813

            chat = ChatTTS.Chat()
            ok = chat.load(source="custom", custom_path=str(request.model_path), device=device.device, compile=False)
            if ok is False:
                raise LaunchError(f"ChatTTS could not load {request.model_path}")
            return ChatTTSModel(request.model_uid, chat, device.uses_cuda)
        if module == "melo":
            from melo.api import TTS

            language = (spec.language or ["EN"])[0].upper()
            config = request.model_path / "config.json" if request.model_path else None
            ckpt = next(iter(sorted(request.model_path.glob("*.pth"))), None) if request.model_path else None
            tts = TTS(language=language, device=device.device, config_path=str(config) if config else None,
                      ckpt_path=str(ckpt) if ckpt else None)
            return MeloTTSModel(request.model_uid, tts, device.uses_cuda)
    except LaunchError:
        release_memory()
        raise
    except Exception as exc:
        release_memory()
        raise LaunchError(f"audio model {request.model_name!r} ({spec.model_family}): {type(exc).__name__}: {exc}") from exc
    raise LaunchError(f"audio family {spec.model_family!r} ({module}) is installed but xinference_nb cannot run it "
                      "yet; use a transformers model (whisper, VITS/MMS, Bark, MusicGen) or a flexible model whose "
                      "launcher calls the package")
