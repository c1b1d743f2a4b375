"""Built-in catalog plus custom registrations, persisted under XINFERENCE_NB_HOME."""
from .registry import Registry, builtin_family, builtin_specs, get_registry
from .store import SpecStore, nb_home

__all__ = ["Registry", "SpecStore", "builtin_family", "builtin_specs", "get_registry", "nb_home"]
