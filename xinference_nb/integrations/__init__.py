"""Framework classes over a launched model: LangChain (:mod:`.langchain`) and LlamaIndex (:mod:`.llamaindex`).

Each class takes a model uid and, optionally, a client: ``Client()`` (the default: the model runs in
this kernel) or ``Client("http://host:port")`` (our server or a Xinference cluster). The same code works
with both. The framework packages are optional extras, imported only when one of these modules is::

    pip install "xinference-nb[langchain]"     # or [llamaindex]
"""
