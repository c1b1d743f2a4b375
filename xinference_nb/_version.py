"""The package version, in one module low enough for everything to import (`__init__`, the server).
pyproject.toml states the same number for the build."""

__version__ = "0.1.0"
