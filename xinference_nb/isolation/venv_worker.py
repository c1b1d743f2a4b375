"""The child side of a virtualenv model: ``python -m xinference_nb.isolation.venv_worker READ_FD WRITE_FD``.

Runs on the venv's Python. Receives ``("load", {...})``, loads the model with the engine loader named
in the message (reporting ``("progress", step, fraction)`` while it loads), answers
``("ready", {"methods", "model_type", "abilities"})``, then serves ``("call", name, args, kwargs)``,
``("memory",)`` and ``("close",)`` until the kernel closes the pipe. Replies are ``("ok", value)``,
``("iter", list)`` for iterator results, or ``("error", {"type", "message", "attrs", "traceback"})``.
"""
from __future__ import annotations

import inspect
import pickle
import sys
import traceback
from pathlib import Path
from typing import Any

_SKIP = {"close", "memory_bytes"}


def _error(exc: BaseException) -> dict[str, Any]:
    attrs = {}
    for key, value in vars(exc).items():
        try:
            pickle.dumps(value)
        except Exception:
            continue
        attrs[key] = value
    return {"type": type(exc).__name__, "message": str(exc), "attrs": attrs,
            "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))}


def _methods(model: Any) -> list[str]:
    names = []
    for name in dir(model):
        if name.startswith("_") or name in _SKIP:
            continue
        try:
            value = getattr(type(model), name, None)
        except Exception:
            continue
        if callable(value) and not isinstance(value, (type, property)):
            names.append(name)
    return names


def _build_request(payload: dict[str, Any], send: Any) -> Any:
    from xinference_nb.engines import DevicePlan, LoadRequest

    req = payload["request"]

    def progress(step: str, fraction: float) -> None:
        send.send(("progress", str(step), float(fraction)))

    return LoadRequest(
        model_uid=req["model_uid"], model_type=req["model_type"], model_name=req["model_name"], spec=req["spec"],
        model_spec=req["model_spec"], model_path=Path(req["model_path"]) if req["model_path"] else None,
        model_format=req["model_format"], quantization=req["quantization"], device=DevicePlan(**req["device"]),
        options=req["options"], progress=progress, family_spec=req["family_spec"],
    )


def _engine(info: dict[str, Any]) -> Any:
    from xinference_nb.engines import ENGINES, Engine

    for engine in ENGINES:
        if engine.model_type == info["model_type"] and engine.loader == info["loader"]:
            return engine
    return Engine(info["name"], info["model_type"], ("*",), info["loader"], (), info["name"], None)


def serve(recv: Any, send: Any) -> int:
    model = None
    while True:
        try:
            message = recv.recv()
        except (EOFError, OSError):
            break
        kind = message[0]
        try:
            if kind == "load":
                payload = message[1]
                request = _build_request(payload, send)
                model = _engine(payload["engine"]).load(request)
                send.send(("ready", {"methods": _methods(model), "model_type": getattr(model, "model_type", ""),
                                     "abilities": list(getattr(model, "abilities", ()) or ())}))
            elif kind == "call":
                _, name, args, kwargs = message
                if model is None:
                    raise RuntimeError("no model loaded")
                result = getattr(model, name)(*args, **kwargs)
                if inspect.isgenerator(result) or (hasattr(result, "__next__") and hasattr(result, "__iter__")
                                                   and not isinstance(result, (str, bytes, dict, list))):
                    send.send(("iter", list(result)))
                else:
                    send.send(("ok", result))
            elif kind == "memory":
                send.send(("ok", model.memory_bytes() if model is not None else None))
            elif kind == "close":
                if model is not None:
                    model.close()
                    model = None
                send.send(("ok", None))
                break
            else:
                raise RuntimeError(f"unknown message {kind!r}")
        except BaseException as exc:  # noqa: BLE001 - everything goes back to the kernel
            try:
                send.send(("error", _error(exc)))
            except Exception:
                send.send(("error", {"type": type(exc).__name__, "message": str(exc), "attrs": {},
                                     "traceback": traceback.format_exc()}))
            if kind == "load":
                break
    if model is not None:
        try:
            model.close()
        except Exception:
            pass
    return 0


def main(argv: list[str]) -> int:
    from multiprocessing.connection import Connection

    read_fd, write_fd = int(argv[0]), int(argv[1])
    recv = Connection(read_fd, writable=False)
    send = Connection(write_fd, readable=False)
    try:
        return serve(recv, send)
    finally:
        recv.close()
        send.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
