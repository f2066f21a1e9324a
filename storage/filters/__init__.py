"""The filter language (:mod:`.language`), its meaning in Arrow (:mod:`.arrow`) and pruning (:mod:`.prune`).

Importing this package pulls in pydantic only: the client depends on it. The Arrow half loads on
first use, so a command that never filters rows never imports pyarrow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tuplehub.storage.filters.language import F, FieldExpr, Filter, FilterNode

if TYPE_CHECKING:
    from tuplehub.storage.filters.arrow import CompiledFilter, compile_filter

__all__ = ["CompiledFilter", "F", "FieldExpr", "Filter", "FilterNode", "compile_filter"]


def __getattr__(name: str) -> Any:
    if name in ("CompiledFilter", "compile_filter"):
        from tuplehub.storage.filters import arrow

        return getattr(arrow, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
