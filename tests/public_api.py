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
