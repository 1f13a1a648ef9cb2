"""A package face that imports on first use: the floors loaded at CLI start-up (core, store, study, cli) name
their API in `__init__.py` without importing it, so `ablate --help` never pays for duckdb or torch.

How to run (in a package's __init__.py):
    __all__ = ["Index", "Pool", "token_nll"]
    __getattr__ = lazy(__name__, {"index": ["Index"], "pool": ["Pool"]})   # names by the module they live in
    from ablate.store import Index          # imports ablate.store.index then, and only then
Submodules (token_nll) resolve too, as `from package import module` always did.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys


def lazy(package: str, homes: dict[str, list[str]]):
    """The package's module-level __getattr__: a name listed under a module is that module's attribute."""
    home = {name: module for module, names in homes.items() for name in names}

    def __getattr__(name: str):
        if name in home:
            value = getattr(importlib.import_module(f"{package}.{home[name]}"), name)
        elif not name.startswith("__") and importlib.util.find_spec(f"{package}.{name}") is not None:
            value = importlib.import_module(f"{package}.{name}")
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        setattr(sys.modules[package], name, value)  # the next lookup is a plain attribute
        return value

    return __getattr__
