"""Benchmarks: fully specified environments, stored as JSON under their content hash.

One spec may be stored by several users; each keeps their own record (and visibility) under the
same id, and a caller is shown the one they may read, their own first.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict

from tuplehub.api.access.audit import audit
from tuplehub.api.access.policy import (
    read_scope,
    readable_benchmark,
    require_create,
    require_owner,
)
from tuplehub.api.deps import Caller, CatalogDep, Limit, Offset, Reader
from tuplehub.api.problems import problems
from tuplehub.api.routes.sharing import change_sharing
from tuplehub.storage.access import Publish
from tuplehub.storage.benchmarks import BenchmarkCreate, BenchmarkRead, BenchmarkRecord, space_from_json
from tuplehub.storage.errors import Conflict, Forbidden, InvalidRequest, NotFound
from tuplehub.storage.models import DatasetSummary, Page
from tuplehub.storage.permissions import can_read

router = APIRouter(prefix="/benchmarks", tags=["benchmarks"])
KIND = "benchmark"


class References(BaseModel):
    """Reference returns for normalised metrics (trajectory quality)."""

    model_config = ConfigDict(extra="forbid")

    random_return: float | None = None
    expert_return: float | None = None


def _parameter(text: str) -> tuple[str, Any]:
    """``key=value`` with a JSON value (``g=9.81``, ``mode="hard"``); a bare word is a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise InvalidRequest(f"param {text!r}: write key=value", field="param")
    try:
        return key, json.loads(raw)
    except ValueError:
        return key, raw


@router.post("", status_code=201, responses={**problems(Forbidden, InvalidRequest),
                                               200: {"description": "The caller had stored this spec already."}})
async def create_benchmark(body: BenchmarkCreate, caller: Caller, catalog: CatalogDep,
                           response: Response) -> BenchmarkRead:
    """Store a benchmark; storing the same spec again returns the same id (and the same record)."""
    require_create(caller, KIND)
    for which in ("observation_space", "action_space"):
        try:
            space_from_json(getattr(body.spec, which))
        except InvalidRequest:
            raise
        except Exception as exc:  # gymnasium asserts on bad sizes; any failure means a bad description
            raise InvalidRequest(f"spec.{which} does not describe a gymnasium space: {exc!r}", field=which) from exc
    benchmark_id = body.spec.content_id()
    record = BenchmarkRecord(benchmark_id=benchmark_id, family=body.spec.family, owner=caller.user_id,
                             **body.model_dump(exclude={"spec"}), spec=body.spec)
    try:
        await catalog.insert_record("benchmarks", record, unique=f"{caller.user_id}/{benchmark_id}")
    except Conflict:
        response.status_code = 200
        return BenchmarkRead.from_record(await readable_benchmark(catalog, caller, benchmark_id))
    await audit(catalog, caller, "benchmark.create", KIND, benchmark_id, record.name or record.family)
    return BenchmarkRead.from_record(record)


@router.get("")
async def list_benchmarks(caller: Reader, catalog: CatalogDep,
                          family: Annotated[str | None, Query(description="Env id or entry point.")] = None,
                          param: Annotated[list[str] | None, Query(description="kwargs to match, key=value (JSON).",
                                                                  examples=["g=9.81"])] = None,
                          name: Annotated[str | None, Query(description="Label contains this.")] = None,
                          offset: Offset = 0,
                          limit: Limit = 100) -> Page[BenchmarkRead]:
    """Readable benchmarks, newest first; ``family`` with ``param`` lists one point of a parameter sweep."""
    wanted = dict(_parameter(text) for text in param or [])
    records, _ = await catalog.find_records("benchmarks", BenchmarkRecord, where={"family": family} if family else None,
                                            newest_first=True)
    seen: set[str] = set()
    matches = []
    for record in sorted(records, key=lambda r: r.owner != caller.id):  # one entry per id, the caller's own first
        if record.benchmark_id in seen or not can_read(caller, record, KIND):
            continue
        if name and name.lower() not in record.name.lower():
            continue
        if any(record.spec.kwargs.get(key) != value for key, value in wanted.items()):
            continue
        seen.add(record.benchmark_id)
        matches.append(record)
    matches.sort(key=lambda r: r.created_at, reverse=True)
    return Page(items=[BenchmarkRead.from_record(r) for r in matches[offset:offset + limit]], total=len(matches),
                offset=offset, limit=limit)


@router.get("/{benchmark_id}", responses=problems(NotFound))
async def get_benchmark(benchmark_id: str, caller: Reader, catalog: CatalogDep) -> BenchmarkRead:
    return BenchmarkRead.from_record(await readable_benchmark(catalog, caller, benchmark_id))


@router.get("/{benchmark_id}/datasets", responses=problems(NotFound))
async def benchmark_datasets(benchmark_id: str, caller: Reader, catalog: CatalogDep,
                             offset: Offset = 0,
                             limit: Limit = 100) -> Page[DatasetSummary]:
    """The datasets recorded on this benchmark that the caller may read."""
    await readable_benchmark(catalog, caller, benchmark_id)
    items, total = await catalog.list_datasets(name=None, tag=None, offset=offset, limit=limit,
                                               readable=read_scope(caller, "dataset"), benchmark=benchmark_id)
    return Page(items=items, total=total, offset=offset, limit=limit)


async def _own(catalog: CatalogDep, caller: Caller, benchmark_id: str, action: str) -> BenchmarkRecord:
    record = await readable_benchmark(catalog, caller, benchmark_id)
    require_owner(caller, record, KIND, action)
    return record


@router.put("/{benchmark_id}/references", responses=problems(NotFound, Forbidden))
async def set_references(benchmark_id: str, body: References, caller: Caller, catalog: CatalogDep) -> BenchmarkRead:
    """Set the random and expert reference returns that normalised metrics use."""
    record = await _own(catalog, caller, benchmark_id, "write")
    updated = await catalog.update_record("benchmarks", BenchmarkRecord, record.id, **body.model_dump())
    await audit(catalog, caller, "benchmark.references", KIND, benchmark_id, record.name or record.family,
                **body.model_dump())
    return BenchmarkRead.from_record(updated or record)


@router.post("/{benchmark_id}/publish", responses=problems(NotFound, Forbidden))
async def publish_benchmark(benchmark_id: str, body: Publish, caller: Caller, catalog: CatalogDep) -> BenchmarkRead:
    record = await readable_benchmark(catalog, caller, benchmark_id)
    return BenchmarkRead.from_record(await change_sharing(catalog, caller, record, body, action="publish",
                                                          target_id=benchmark_id, label=record.name or record.family))


@router.post("/{benchmark_id}/unpublish", responses=problems(NotFound, Forbidden))
async def unpublish_benchmark(benchmark_id: str, body: Publish, caller: Caller,
                              catalog: CatalogDep) -> BenchmarkRead:
    record = await readable_benchmark(catalog, caller, benchmark_id)
    return BenchmarkRead.from_record(await change_sharing(catalog, caller, record, body, action="unpublish",
                                                          target_id=benchmark_id, label=record.name or record.family))


@router.delete("/{benchmark_id}", status_code=204, responses=problems(NotFound, Forbidden))
async def delete_benchmark(benchmark_id: str, caller: Caller, catalog: CatalogDep) -> Response:
    """Delete the caller's record of a benchmark (datasets keep naming its id)."""
    record = await _own(catalog, caller, benchmark_id, "delete")
    await catalog.delete_records("benchmarks", BenchmarkRecord, id=record.id)
    await audit(catalog, caller, "benchmark.delete", KIND, benchmark_id, record.name or record.family)
    return Response(status_code=204)
