"""What an export request means for a dataset version: checked once by the API, used by the worker.

Checking at request time turns a bad filter or column name into a 422 answer instead of a failed
job; the same functions give the worker its plan, so the two can never disagree.
"""

from __future__ import annotations

import hashlib
import json

import pyarrow as pa

from tuplehub.storage.errors import InvalidRequest
from tuplehub.storage.filters.arrow import compile_filter
from tuplehub.storage.filters.language import check_size
from tuplehub.storage.models import DeriveSource, ExportCreate, VersionRecord
from tuplehub.storage.schema import TupleSchema


def export_columns(schema: TupleSchema, request: ExportCreate) -> list[str]:
    """The columns an export returns, in order; unknown names are a 422."""
    available = schema.export_columns()
    if request.columns is None:
        columns = [c for c in available if c != "next_observation" or request.next_observation]
    else:
        unknown = [c for c in request.columns if c not in available]
        if unknown:
            raise InvalidRequest(f"unknown export column {unknown[0]!r}; the dataset has {available}",
                                 column=unknown[0])
        columns = list(dict.fromkeys(request.columns))
        if request.next_observation and "next_observation" not in columns:
            columns.append("next_observation")
    return columns


def output_schema(schema: TupleSchema, columns: list[str]) -> pa.Schema:
    stored = schema.stored_schema()
    special = {
        "episode_id": pa.field("episode_id", pa.int64() if schema.episode_id == "int" else pa.string(),
                               nullable=False),
        "next_observation": schema.observation.arrow_field("next_observation", nullable=True),
    }
    return pa.schema([special[c] if c in special else stored.field(c) for c in columns])


def check_selection(schema: TupleSchema, selection: ExportCreate | DeriveSource, *, max_leaves: int) -> None:
    """Refuse, as a 422, filters that are too big or do not fit the version (exports and derives).

    Sizes are checked first, before anything walks a filter that a request may have made huge.
    """
    filters = [(selection.episodes, "episode"), (selection.where, "tuple")]
    if selection.rebalance is not None:
        filters.append((selection.rebalance.keep, "tuple"))
    for node, _ in filters:
        check_size(node, max_leaves=max_leaves)
    for node, scope in filters:
        compile_filter(node, scope, schema)  # type: ignore[arg-type]


def check_export(version: VersionRecord, request: ExportCreate, *, max_leaves: int) -> None:
    """Raise the 422 a worker would otherwise fail the job with."""
    check_selection(version.tuple_schema, request, max_leaves=max_leaves)
    export_columns(version.tuple_schema, request)


def dedup_key(dataset_id: str, version: int, request: ExportCreate, owner: str) -> str:
    """One caller's identical requests on one (immutable) version share a key, and so one result.

    The owner is part of the key: jobs and their results are visible to their owner only.
    """
    canonical = json.dumps({"dataset": dataset_id, "version": version, "owner": owner,
                            "request": request.model_dump(mode="json", exclude={"version"})},
                           sort_keys=True, separators=(",", ":"))
    return "export:" + hashlib.sha256(canonical.encode()).hexdigest()
