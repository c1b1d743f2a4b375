"""One Protocol per handle type: what ``client.get_model(uid)`` returns, in-kernel or remote.

The in-kernel handles (``xinference_nb.client.handles``) and the remote ones (``xinference_nb.client.remote``)
both satisfy these, with Xinference's method names, arguments and defaults; tests/test_protocols.py
checks every method on both and that each reaches the same engine method (in-kernel) or the REST
route named in ``model_types`` (remote). Code that takes a handle can be typed with them:

    def summarize(llm: LLMHandleProtocol) -> str: ...
"""
from __future__ import annotations

from typing import Any, Iterator, Optional, Protocol, Union, runtime_checkable

Messages = Union[str, list[dict[str, Any]]]


@runtime_checkable
class ModelHandleProtocol(Protocol):
    """What every handle has."""

    model_uid: str
    model_type: str

    def describe(self) -> dict[str, Any]: ...


@runtime_checkable
class LLMHandleProtocol(ModelHandleProtocol, Protocol):
    def generate(self, prompt: str, generate_config: Optional[dict[str, Any]] = None
                 ) -> Union[dict[str, Any], Iterator[dict[str, Any]]]: ...

    def chat(self, messages: Messages, tools: Optional[list[dict[str, Any]]] = None,
             enable_thinking: Optional[bool] = None, generate_config: Optional[dict[str, Any]] = None
             ) -> Union[dict[str, Any], Iterator[dict[str, Any]]]: ...

    def generate_batch(self, prompts: list[str], generate_config: Optional[dict[str, Any]] = None,
                       progress: bool = True) -> list[dict[str, Any]]: ...

    def chat_batch(self, messages_list: list[Messages], generate_config: Optional[dict[str, Any]] = None,
                   progress: bool = True) -> list[dict[str, Any]]: ...

    def map(self, items: Any, prompt: Any = None, *, response_format: Any = None, system: Optional[str] = None,
            generate_config: Optional[dict[str, Any]] = None, cache: Any = False, progress: bool = True) -> Any: ...


@runtime_checkable
class EmbeddingHandleProtocol(ModelHandleProtocol, Protocol):
    def create_embedding(self, input: Any, **kwargs: Any) -> Any: ...  # noqa: A002 - Xinference's name

    def convert_ids_to_tokens(self, input: Any, **kwargs: Any) -> Any: ...  # noqa: A002


@runtime_checkable
class RerankHandleProtocol(ModelHandleProtocol, Protocol):
    def rerank(self, documents: list[Any], query: Any, top_n: Optional[int] = None,
               max_chunks_per_doc: Optional[int] = None, return_documents: Optional[bool] = None,
               return_len: Optional[bool] = None, **kwargs: Any) -> Any: ...


@runtime_checkable
class ImageHandleProtocol(ModelHandleProtocol, Protocol):
    def text_to_image(self, prompt: str, n: int = 1, size: str = "1024*1024", response_format: str = "url",
                      **kwargs: Any) -> Any: ...

    def image_to_image(self, image: Any, prompt: str, negative_prompt: Optional[str] = None, n: int = 1,
                       size: Optional[str] = None, response_format: str = "url", **kwargs: Any) -> Any: ...

    def inpainting(self, image: Any, mask_image: Any, prompt: str, negative_prompt: Optional[str] = None,
                   n: int = 1, size: Optional[str] = None, response_format: str = "url", **kwargs: Any) -> Any: ...


@runtime_checkable
class AudioHandleProtocol(ModelHandleProtocol, Protocol):
    def speech(self, input: str, voice: str = "", response_format: str = "mp3", speed: float = 1.0,  # noqa: A002
               stream: bool = False, **kwargs: Any) -> Any: ...

    def transcriptions(self, audio: Any, language: Optional[str] = None, prompt: Optional[str] = None,
                       response_format: str = "json", temperature: float = 0,
                       timestamp_granularities: Optional[list[str]] = None) -> Any: ...

    def translations(self, audio: Any, language: Optional[str] = None, prompt: Optional[str] = None,
                     response_format: str = "json", temperature: float = 0,
                     timestamp_granularities: Optional[list[str]] = None) -> Any: ...


class SpeechToTextMethods:
    """``transcriptions`` and ``translations`` of both audio handles: the same form, a different
    method; each handle says how it runs one (``_recognize``: the engine in-kernel, the REST route
    remotely)."""

    def transcriptions(self, audio: bytes, language: Optional[str] = None, prompt: Optional[str] = None,
                       response_format: str = "json", temperature: float = 0,
                       timestamp_granularities: Optional[list[str]] = None) -> Any:
        return self._recognize("transcriptions", audio, language, prompt, response_format, temperature,
                               timestamp_granularities)

    def translations(self, audio: bytes, language: Optional[str] = None, prompt: Optional[str] = None,
                     response_format: str = "json", temperature: float = 0,
                     timestamp_granularities: Optional[list[str]] = None) -> Any:
        """Speech in any language → English text (Whisper models)."""
        return self._recognize("translations", audio, language, prompt, response_format, temperature,
                               timestamp_granularities)

    def _recognize(self, method: str, audio: bytes, language: Optional[str], prompt: Optional[str],
                   response_format: str, temperature: float, timestamp_granularities: Optional[list[str]]) -> Any:
        raise NotImplementedError


@runtime_checkable
class FlexibleHandleProtocol(ModelHandleProtocol, Protocol):
    def infer(self, *args: Any, **kwargs: Any) -> Any: ...
