"""PEP 562 lazy attributes for a package's ``__init__``: names imported on first use.

    __getattr__, __dir__ = lazy_exports(__name__, {"probe": "probing", ...}, globals())

``jsae.probe`` then imports ``jsae.probing`` only when first read (and caches it in the
package's namespace), so importing the package stays cheap. Imports nothing itself.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping

__all__ = ["lazy_exports"]


def lazy_exports(package: str, table: Mapping[str, str],
                 namespace: dict[str, Any]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: ``table`` maps a name to the submodule
    (relative to ``package``) that defines it; ``namespace`` is the package's ``globals()``."""
    def __getattr__(name: str) -> Any:
        if name in table:
            value = getattr(importlib.import_module(f".{table[name]}", package), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(list(namespace) + list(table))

    return __getattr__, __dir__
