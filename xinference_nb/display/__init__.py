"""Rich displays of the plain results (chats, images, audio, tables). They wrap, never change:
``ChatView(result) == result``. Use ``as_display(result)`` or ``show(result)``; the magics and
widgets use them to show what Client and the handles return.

It reads the chunk shapes (``chat``) and the document flattening (``parse.where``), takes a
registration's ``client.registrations.Registration`` lazily, and imports IPython only when it displays."""
from .views import (AudioView, CachedModelsTable, LaunchedModel, ChatTranscript, ChatView, EmbeddingView, ImageView, Message, ModelsTable, ParsedView,
                    RegistrationsTable, RerankView, StreamAccumulator, TranscriptionView, as_display, detect_kind,
                    flatten_document, show, sniff_mime, stream_chat, transcript)

__all__ = ["AudioView", "CachedModelsTable", "LaunchedModel", "ChatTranscript", "ChatView", "EmbeddingView", "ImageView", "Message", "ModelsTable",
           "ParsedView", "RegistrationsTable", "RerankView", "StreamAccumulator", "TranscriptionView", "as_display",
           "detect_kind", "flatten_document", "show", "sniff_mime", "stream_chat", "transcript"]
