"""The public path every engine test takes: register a document with Client, launch it in the
kernel (CPU), get its handle; terminate it after."""
from __future__ import annotations

import json


def launch(model_type, doc, **kwargs):
    from xinference_nb.client import Client

    client = Client()
    client.register_model(model_type, json.dumps(doc), persist=False, overwrite=True)
    uid = client.launch_model(model_name=doc["model_name"], model_type=model_type, n_gpu=None, **kwargs)
    return uid, client.get_model(uid)


def terminate(uid, handle=None):
    from xinference_nb.client import Client

    Client().terminate_model(uid)


def launch_by_path(manager, path, **kwargs):
    """A tiny model's own folder launched by ``model_path`` as the built-in qwen2.5-instruct family
    (no registration), transformers engine, no progress bar; returns the uid."""
    return manager.launch_model("qwen2.5-instruct", model_engine="transformers", model_path=str(path),
                                show_progress=False, **kwargs)


def shared_manager(prefix):
    """For a module fixture: the process-wide manager (the one a Client, and so the server, uses);
    at teardown the models whose uid starts with ``prefix`` are terminated."""
    from xinference_nb.manager import get_manager

    m = get_manager()
    yield m
    for uid in list(m.list_models()):
        if uid.startswith(prefix):
            m.terminate_model(uid)


def own_manager():
    """For a fixture: a ModelManager of the test's own (not the process-wide one); at teardown the
    idle TTL is turned off and every model it runs is terminated."""
    from xinference_nb.manager import ModelManager

    m = ModelManager()
    yield m
    m.set_idle_ttl(None)
    m.terminate_all()


def concurrently(fn, items):
    """``[fn(x) for x in items]``, each in its own thread at once (so a batching engine gets them
    together); every error is raised as one AssertionError after all have ended."""
    import threading

    out, errors = [None] * len(items), []

    def run(i):
        try:
            out[i] = fn(items[i])
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(items))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    return out
