"""Datasets, their immutable versions, and the episodes of a version."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import TypeAdapter, ValidationError

from tuplehub.api.deps import Caller, CatalogDep
from tuplehub.api.problems import problems
from tuplehub.storage import versions
from tuplehub.storage.errors import Conflict, InvalidFilter, NotFound
from tuplehub.storage.filters.language import Filter, FilterNode
from tuplehub.storage.models import DatasetCreate, DatasetRead, DatasetRecord, DatasetSummary, EpisodeRead, Page

router = APIRouter(prefix="/datasets", tags=["datasets"])
Offset = Annotated[int, Query(ge=0, le=10**9)]
Limit = Annotated[int, Query(ge=1, le=1000)]
_FILTER = TypeAdapter(Filter)


def parse_filter(text: str | None) -> FilterNode | None:
    """A filter passed as a JSON query parameter; a malformed one is a 422 naming the problem."""
    if text is None or not text.strip():
        return None
    try:
        return _FILTER.validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "filter"
        raise InvalidFilter(f"{where}: {first['msg']}") from exc


@router.post("", status_code=201, responses=problems(Conflict))
async def create_dataset(body: DatasetCreate, caller: Caller, catalog: CatalogDep) -> DatasetRead:
    """Create an empty dataset; its first upload makes version 1."""
    record = await catalog.create_dataset(DatasetRecord(**body.model_dump(), owner=caller.id))
    return DatasetRead(**record.model_dump())


@router.get("")
async def list_datasets(caller: Caller, catalog: CatalogDep, name: str | None = None, tag: str | None = None,
                        offset: Offset = 0, limit: Limit = 50) -> Page[DatasetSummary]:
    """Datasets whose name contains ``name`` and that carry ``tag``, by name."""
    items, total = await catalog.list_datasets(name=name, tag=tag, offset=offset, limit=limit)
    return Page(items=items, total=total, offset=offset, limit=limit)


@router.get("/{name}", responses=problems(NotFound))
async def get_dataset(name: str, caller: Caller, catalog: CatalogDep) -> DatasetRead:
    """A dataset with all of its versions and their episode and transition counts."""
    record = await catalog.get_dataset(name)
    return DatasetRead(**record.model_dump(), versions=await catalog.list_versions(record.id))


@router.get("/{name}/versions/{version}/episodes", responses=problems(NotFound, InvalidFilter))
async def list_episodes(name: str, version: int, caller: Caller, catalog: CatalogDep,
                        where: Annotated[str | None, Query(description="Episode filter as JSON", examples=[
                            '{"op": "gt", "field": "return", "value": 100}'])] = None,
                        offset: Offset = 0, limit: Limit = 100) -> Page[EpisodeRead]:
    """Episodes of one version that pass an episode filter, in version order."""
    dataset = await catalog.get_dataset(name)
    record = await versions.get_version(catalog, dataset, version)
    return await versions.list_episodes(catalog, record, parse_filter(where), offset=offset, limit=limit)
