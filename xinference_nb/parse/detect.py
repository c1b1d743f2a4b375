"""Which type of model a folder or GGUF file holds, from its files alone: a diffusers pipeline is
an image model, a sentence-transformers folder an embedding model, a one-label sequence classifier a
reranker, a speech config an audio model, a causal LM an LLM."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

from ..errors import ParseError
from ..metadata import hf
from ..metadata.gguf import GGUFInfo, is_projector
from .context import Ctx

# config.json model_type → (audio family, abilities)
AUDIO_TYPES: dict[str, tuple[str, list[str]]] = {
    "whisper": ("whisper", ["audio2text"]),
    "moonshine": ("moonshine", ["audio2text"]),
    "wav2vec2": ("wav2vec2", ["audio2text"]),
    "wav2vec2-conformer": ("wav2vec2", ["audio2text"]),
    "hubert": ("hubert", ["audio2text"]),
    "speech_to_text": ("speech_to_text", ["audio2text"]),
    "qwen3_asr": ("qwen3_asr", ["audio2text"]),
    "vits": ("vits", ["text2audio"]),
    "speecht5": ("speecht5", ["text2audio"]),
    "bark": ("bark", ["text2audio"]),
    "fastspeech2_conformer": ("fastspeech2_conformer", ["text2audio"]),
    "kokoro": ("Kokoro", ["text2audio"]),
    "musicgen": ("musicgen", ["text2music"]),
    "musicgen_melody": ("musicgen", ["text2music"]),
    "qwen3_tts": ("qwen3_tts", ["text2audio"]),
}
AUDIO_ARCH = re.compile(r"(ForSpeechSeq2Seq|ForCTC|ForTextToSpeech|ForTextToWaveform|ForTextToSpectrogram)$")
_ENCODER_TYPES = {"bert", "roberta", "xlm-roberta", "mpnet", "distilbert", "electra", "deberta", "deberta-v2",
                  "nomic_bert", "camembert", "new", "modernbert", "jina_bert", "e5", "albert", "t5"}
_ENCODER_ARCHS = {"BertModel", "RobertaModel", "XLMRobertaModel", "MPNetModel", "DistilBertModel", "NomicBertModel",
                  "ElectraModel", "DebertaModel", "DebertaV2Model", "ModernBertModel", "JinaBertModel", "NewModel",
                  "T5EncoderModel", "CamembertModel", "AlbertModel", "XLMRobertaLoRA", "BertForMaskedLM"}
ROBERTA_LIKE = {"roberta", "xlm-roberta", "camembert", "xlm-roberta-xl"}
LLM_ARCH = re.compile(r"(ForCausalLM|LMHeadModel|ForConditionalGeneration|ChatModel|ForCausalLMPipe)$")


def architectures(config: dict) -> list[str]:
    value = config.get("architectures")
    return [a for a in value if isinstance(a, str)] if isinstance(value, list) else []


def _num_labels(config: dict) -> Optional[int]:
    if isinstance(config.get("num_labels"), int):
        return config["num_labels"]
    id2label = config.get("id2label")
    if isinstance(id2label, dict) and id2label:
        return len(id2label)
    return None


def st_modules(folder: Path) -> Optional[list[dict]]:
    """modules.json of a sentence-transformers folder, None when there is none."""
    data = hf.read_json(folder / "modules.json", "sentence-transformers modules") if (
        folder / "modules.json").is_file() else None
    if data is None:
        return None
    if not isinstance(data, list):
        raise ParseError(f"{folder / 'modules.json'}: expected a list of modules")
    return [m for m in data if isinstance(m, dict)]


def module_dir(folder: Path, modules: Optional[list[dict]], kind: str) -> list[Path]:
    """Folders of the sentence-transformers modules whose type ends with ``kind``, in order."""
    out = []
    for m in modules or []:
        if str(m.get("type", "")).endswith(kind):
            out.append(folder / str(m.get("path") or ""))
    return out


def detect_type(ctx: Ctx, folder: Path, names: set[str], config: Optional[dict],
                st_config: Optional[dict], modules: Optional[list[dict]]) -> tuple[str, str]:
    """(model type, why) of a model folder."""
    if "model_index.json" in names:
        return "image", "model_index.json (a diffusers pipeline)"
    st_kind = (st_config or {}).get("model_type")
    if st_kind == "CrossEncoder":
        return "rerank", "config_sentence_transformers.json model_type 'CrossEncoder'"
    cfg = config or {}
    archs = architectures(cfg)
    mtype = str(cfg.get("model_type") or "")
    if any(a.endswith("ForSequenceClassification") for a in archs):
        labels = _num_labels(cfg)
        if labels == 1:
            return "rerank", f"config.json architectures {archs} with one label (a cross-encoder)"
        if not (modules or st_config):
            raise ParseError(f"{folder / 'config.json'}: a sequence classifier with {labels or 'several'} labels "
                             f"({archs[0]}) is neither a reranker (one label) nor an embedding model; pass "
                             "model_type=... if you know better")
    if modules is not None or st_config is not None or "sentence_bert_config.json" in names:
        which = "modules.json" if modules is not None else (
            "config_sentence_transformers.json" if st_config is not None else "sentence_bert_config.json")
        return "embedding", f"{which} (a sentence-transformers model)"
    if mtype in AUDIO_TYPES:
        return "audio", f"config.json model_type {mtype!r}"
    if any(AUDIO_ARCH.search(a) for a in archs):
        return "audio", f"config.json architectures {archs}"
    name = ctx.loc.name_hint.lower()
    if "rerank" in name and (archs or mtype):
        return "rerank", f"the name {ctx.loc.name_hint!r} says reranker"
    if any(LLM_ARCH.search(a) for a in archs):
        return "LLM", f"config.json architectures {archs}"
    if mtype in _ENCODER_TYPES or any(a in _ENCODER_ARCHS or a.endswith("ForMaskedLM") for a in archs):
        what = f"model_type {mtype!r}" if mtype in _ENCODER_TYPES else f"architectures {archs}"
        return "embedding", f"config.json {what} (an encoder)"
    if any(isinstance(cfg.get(k), dict) for k in ("text_config", "llm_config")) or (
            any(k in cfg for k in ("vocab_size", "padded_vocab_size"))
            and any(k in cfg for k in hf.LAYER_KEYS)):
        return "LLM", f"config.json{' architectures ' + str(archs) if archs else ''} (a decoder's sizes)"
    raise ParseError(f"{folder / 'config.json'}: cannot tell the model type (architectures={archs or None}, "
                     f"model_type={mtype or None}); pass model_type='LLM' / 'embedding' / 'rerank' / 'image' / 'audio'")


GGUF_EMBEDDING_ARCHS = {"bert", "nomic-bert", "nomic-bert-moe", "jina-bert-v2", "jina-bert-v3", "modern-bert",
                        "xlm-roberta", "t5encoder"}


def detect_gguf_type(ctx: Ctx, info: GGUFInfo, wanted_type: Optional[str]) -> str:
    """LLM or embedding, from the GGUF header (an encoder architecture or a pooling type is an
    embedding model) or the model_type argument; other types are refused."""
    path = info.path
    if is_projector(info):
        raise ParseError(f"{path}: a multimodal projector (mmproj: general.architecture 'clip'), not a model; parse "
                         "the model's .gguf beside it, whose document then lists this file in multimodal_projectors")
    if wanted_type is None:
        if info.architecture in GGUF_EMBEDDING_ARCHS or info.pooling_type:
            ctx.src("model_type", f"detected: GGUF general.architecture {info.architecture!r} (an encoder)")
            return "embedding"
        ctx.src("model_type", f"detected: a GGUF file (general.architecture {info.architecture!r})")
        return "LLM"
    ctx.src("model_type", "model_type argument")
    from ..model_types import MODEL_TYPE_TABLE

    gguf_types = [t.name for t in MODEL_TYPE_TABLE if t.parses_gguf]
    if wanted_type not in gguf_types:
        raise ParseError(f"{path}: a GGUF file cannot be parsed as a {wanted_type} model ({' or '.join(gguf_types)} "
                         "only)")
    return wanted_type
