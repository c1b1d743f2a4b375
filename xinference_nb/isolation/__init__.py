"""Running a model apart from the kernel: ``virtualenv.py`` builds a model's own virtualenv (the
requirement policy the server also applies: ``check_package``, ``check_location``) and proxies its
calls to ``venv_worker.py``, the child process that loads the model with the venv's Python."""
