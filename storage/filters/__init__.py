"""The filter language (:mod:`.language`), its meaning in Arrow (:mod:`.arrow`) and pruning (:mod:`.prune`).

Importing this package pulls in pydantic and pyarrow only: the client depends on it.
"""

from tuplehub.storage.filters.arrow import CompiledFilter, compile_filter
from tuplehub.storage.filters.language import F, FieldExpr, Filter, FilterNode

__all__ = ["CompiledFilter", "F", "FieldExpr", "Filter", "FilterNode", "compile_filter"]
