"""Modules imported on first use, so a command that never touches numpy or pyarrow never pays for them.

``tuplehub --help`` and ``tuplehub datasets list`` must start in well under a second, and importing
numpy, pyarrow and gymnasium alone takes most of that. A module that needs one of them only inside
its functions binds a stand-in instead of importing it::

    if TYPE_CHECKING:
        import numpy as np
    else:
        np = deferred("numpy")

The first attribute read (``np.dtype``) imports the real module; after that every read goes
straight to it. ``tests/test_layering.py`` checks which modules the CLI's start-up imports.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class _Deferred(ModuleType):
    """Stands in for a module until an attribute is read, then forwards to the imported module."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.__dict__["_module"] = None

    def __getattr__(self, attribute: str) -> Any:
        module = self.__dict__["_module"]
        if module is None:
            module = importlib.import_module(self.__name__)
            self.__dict__["_module"] = module
        return getattr(module, attribute)

    def __repr__(self) -> str:
        return f"<deferred module {self.__name__!r}>"


def deferred(name: str) -> Any:
    """A stand-in for the module ``name`` (e.g. ``"pyarrow.parquet"``) that imports it on first use."""
    return _Deferred(name)
