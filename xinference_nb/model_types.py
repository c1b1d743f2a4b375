"""The model types: one row per type, the one place that says what each type is.

    from xinference_nb.model_types import MODEL_TYPE_TABLE, model_type, type_names
    model_type("Embedding").spec_class()          # EmbeddingSpec (imported on first use)
    model_type("image").routes["inpainting"]      # "/v1/images/inpainting"

spec (document classes, type names), registry (catalog files), manager (which types have
``model_specs``), engines (the type column of the engine table is checked against these names),
handles and remote (handle classes), the REST routes the remote handles call, parse (the reader of
a model folder per type, whether a GGUF file can be one), and the launch widget (the fields it
shows) all read this table. Classes are named by dotted path and imported only when asked for, so
``import xinference_nb`` stays light.

Adding a model type: a row here, its spec module, its handle classes (local and remote, both
satisfying the Protocol named in ``protocol``), its engine(s) in ``engines.ENGINES``, and its
server routes.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional


def _resolve(dotted: str) -> Any:
    """``"package.module:Name"`` → the object (imported now)."""
    module, _, name = dotted.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class ModelType:
    """What one model type is, everywhere in the package."""

    name: str                              # Xinference's spelling: "LLM", "embedding", ...
    aliases: tuple[str, ...]               # other spellings accepted (matched case-insensitively, as the name)
    spec: str                              # "module:Class" of its version-2 document
    handle: str                            # class name in xinference_nb.client.handles
    remote_handle: str                     # class name in xinference_nb.client.remote
    protocol: str                          # typing.Protocol in xinference_nb.protocols both handles satisfy
    routes: Mapping[str, str]              # handle method → its REST route (POST): remote calls, server/routes serve
    has_model_specs: bool                  # documents list model_specs (format / size / quantization choices)
    catalog: Optional[str]                 # built-in catalog file in xinference_nb/registry/builtin, if any
    launch_fields: tuple[str, ...]         # LaunchForm choices shown beyond model / engine / path / uid / GPUs
    parse_dir: Optional[str]               # "module:function" reading a model folder into a document
    parses_gguf: bool = False              # a .gguf file can be parsed as this type
    # handle method → the engine-model methods it runs (default: the method of the same name)
    engine_methods: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    # ------------------------------------------------------------------ lazily resolved names
    def spec_class(self) -> type:
        return _resolve(self.spec)

    def handle_class(self) -> type:
        return _resolve(f"xinference_nb.client.handles:{self.handle}")

    def remote_handle_class(self) -> type:
        return _resolve(f"xinference_nb.client.remote:{self.remote_handle}")

    def protocol_class(self) -> type:
        return _resolve(f"xinference_nb.protocols:{self.protocol}")

    def parser(self) -> Optional[Any]:
        return _resolve(self.parse_dir) if self.parse_dir else None

    @property
    def methods(self) -> tuple[str, ...]:
        """The inference methods of its handles (the Protocol's, besides describe())."""
        return tuple(self.routes)

    def engine_methods_of(self, method: str) -> tuple[str, ...]:
        return tuple(self.engine_methods.get(method, (method,)))

    def engines(self) -> list[Any]:
        """Its engines (installed or not), in preference order: the first is the default."""
        from .engines import engines_for

        return engines_for(self.name)

    @property
    def default_engine(self) -> Optional[str]:
        engines = self.engines()
        return engines[0].name if engines else None

    def matches(self, text: str) -> bool:
        wanted = text.strip().lower()
        return wanted == self.name.lower() or wanted in (a.lower() for a in self.aliases)


_SPEC_FIELDS = ("model_format", "size", "quantization")

MODEL_TYPE_TABLE: tuple[ModelType, ...] = (
    ModelType(
        "LLM", (), "xinference_nb.spec.llm:LLMSpec", "LLMHandle", "RemoteLLMHandle", "LLMHandleProtocol",
        routes={"generate": "/v1/completions", "chat": "/v1/chat/completions",
                "generate_batch": "/v1/completions", "chat_batch": "/v1/chat/completions",
                "map": "/v1/chat/completions"},
        has_model_specs=True, catalog="llm.json", launch_fields=_SPEC_FIELDS,
        parse_dir="xinference_nb.parse.llm:llm_from_dir", parses_gguf=True,
        engine_methods={"generate": ("complete", "stream"), "chat": ("complete", "stream"),
                        "generate_batch": ("complete",), "chat_batch": ("complete",), "map": ("complete",)},
    ),
    ModelType(
        "embedding", (), "xinference_nb.spec.embedding:EmbeddingSpec", "EmbeddingHandle", "RemoteEmbeddingHandle",
        "EmbeddingHandleProtocol",
        routes={"create_embedding": "/v1/embeddings", "convert_ids_to_tokens": "/v1/convert_ids_to_tokens"},
        has_model_specs=True, catalog="embedding.json", launch_fields=_SPEC_FIELDS,
        parse_dir="xinference_nb.parse.text:embedding_from_dir", parses_gguf=True,
    ),
    ModelType(
        "rerank", (), "xinference_nb.spec.rerank:RerankSpec", "RerankHandle", "RemoteRerankHandle",
        "RerankHandleProtocol",
        routes={"rerank": "/v1/rerank"},
        has_model_specs=True, catalog="rerank.json", launch_fields=_SPEC_FIELDS,
        parse_dir="xinference_nb.parse.text:rerank_from_dir",
    ),
    ModelType(
        "image", (), "xinference_nb.spec.image:ImageSpec", "ImageHandle", "RemoteImageHandle", "ImageHandleProtocol",
        routes={"text_to_image": "/v1/images/generations", "image_to_image": "/v1/images/variations",
                "inpainting": "/v1/images/inpainting"},
        has_model_specs=False, catalog="image.json", launch_fields=(),
        parse_dir="xinference_nb.parse.image:image_from_dir",
    ),
    ModelType(
        "audio", (), "xinference_nb.spec.audio:AudioSpec", "AudioHandle", "RemoteAudioHandle", "AudioHandleProtocol",
        routes={"speech": "/v1/audio/speech", "transcriptions": "/v1/audio/transcriptions",
                "translations": "/v1/audio/translations"},
        has_model_specs=False, catalog="audio.json", launch_fields=(),
        parse_dir="xinference_nb.parse.audio:audio_from_dir",
    ),
    ModelType(
        "flexible", (), "xinference_nb.spec.flexible:FlexibleSpec", "FlexibleHandle", "RemoteFlexibleHandle",
        "FlexibleHandleProtocol",
        routes={"infer": "/v1/flexible/infers"},
        has_model_specs=False, catalog=None, launch_fields=(), parse_dir=None,
    ),
)

MODEL_TYPES_BY_NAME: dict[str, ModelType] = {t.name: t for t in MODEL_TYPE_TABLE}


def type_names() -> list[str]:
    """The type names in Xinference's spelling, in the table's order (LLM first)."""
    return [t.name for t in MODEL_TYPE_TABLE]


def find_model_type(text: Any) -> Optional[ModelType]:
    """The row for a spelling of a type name (any case, or an alias); None when it names no type."""
    if not isinstance(text, str):
        return None
    for t in MODEL_TYPE_TABLE:
        if t.matches(text):
            return t
    return None


def model_type(name: str) -> ModelType:
    """The row of a type; a SpecError naming the types for anything else."""
    found = find_model_type(name)
    if found is None:
        from .errors import FieldIssue, SpecError

        raise SpecError([FieldIssue("model_type", f"{name!r} is not a model type; use one of "
                                    f"{', '.join(type_names())}")])
    return found


def spec_types() -> tuple[str, ...]:
    """The types whose documents have model_specs (format / size / quantization to choose from)."""
    return tuple(t.name for t in MODEL_TYPE_TABLE if t.has_model_specs)
