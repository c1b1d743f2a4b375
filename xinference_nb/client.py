"""Client(): the one object users hold. In-kernel by default; ``Client("http://host:port")`` will
drive a remote server with the same methods. Method names, signatures and return shapes follow
Xinference's RESTful client so notebooks move between the two unchanged."""
from __future__ import annotations

from typing import Any, Optional

from .registry import get_registry
from .spec import normalize_model_type, to_document


class Client:
    def __init__(self, endpoint: Optional[str] = None, api_key: Optional[str] = None):
        if endpoint is not None:
            raise NotImplementedError("Client(endpoint) for a remote server is not available yet; use Client()")
        self.endpoint = None
        self.api_key = api_key

    def __repr__(self) -> str:
        return "Client(in-kernel)"

    # ------------------------------------------------------------------ registrations
    def register_model(self, model_type: str, model: Any, persist: bool = False, worker_ip: Optional[str] = None,
                       overwrite: bool = False) -> None:
        """Register a custom model. ``model`` is a JSON string, a dict or a spec object.
        ``persist=True`` keeps it across sessions under XINFERENCE_NB_HOME."""
        get_registry().register(model_type, model, persist=persist, overwrite=overwrite)

    def unregister_model(self, model_type: str, model_name: str) -> None:
        get_registry().unregister(model_type, model_name)

    def list_model_registrations(self, model_type: str, detailed: bool = False) -> list[dict[str, Any]]:
        return get_registry().list(model_type, detailed=detailed)

    def get_model_registration(self, model_type: str, model_name: str) -> dict[str, Any]:
        model_type = normalize_model_type(model_type)
        return to_document(get_registry().get(model_type, model_name))
