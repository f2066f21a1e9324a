"""Datasets, their immutable versions, and the episodes of a version."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from tuplehub.api.access.accounts import user_names
from tuplehub.api.access.audit import audit
from tuplehub.api.access.policy import (
    read_scope,
    readable_benchmark,
    readable_dataset,
    require_create,
    require_owner,
    require_publish,
    require_unpublish,
)
from tuplehub.api.deps import Caller, CatalogDep, Limit, Offset, Reader, SettingsDep
from tuplehub.api.problems import problems
from tuplehub.api.routes.groups import visible_group_ids
from tuplehub.storage import quotas, versions
from tuplehub.storage.access import GroupRecord, Publish, UserRecord
from tuplehub.storage.catalog import Catalog
from tuplehub.storage.errors import Conflict, Forbidden, InvalidFilter, NotFound
from tuplehub.storage.filters.language import check_size, parse_filter_json
from tuplehub.storage.metrics import MetricRecord
from tuplehub.storage.models import (
    DatasetCreate,
    DatasetRead,
    DatasetRecord,
    DatasetSummary,
    DatasetUpdate,
    EpisodeRead,
    Page,
)

router = APIRouter(prefix="/datasets", tags=["datasets"])
async def _read(catalog: Catalog, record: DatasetRecord) -> DatasetRead:
    groups, _ = await catalog.find_records("groups", GroupRecord, where={"id": record.groups})
    return DatasetRead(**record.model_dump(), versions=await catalog.list_versions(record.id),
                       published_to=sorted(group.name for group in groups),
                       owner_name=(await user_names(catalog, [record.owner])).get(record.owner))


@router.post("", status_code=201, responses=problems(Conflict, Forbidden, NotFound))
async def create_dataset(body: DatasetCreate, caller: Caller, catalog: CatalogDep,
                         settings: SettingsDep) -> DatasetRead:
    """Create an empty, private dataset; its first upload makes version 1."""
    require_create(caller, "dataset")
    await quotas.require_dataset_slot(catalog, settings, caller.user_id)
    if body.benchmark is not None:
        await readable_benchmark(catalog, caller, body.benchmark)  # linking needs read access to it
    record = await catalog.create_dataset(DatasetRecord(**body.model_dump(), owner=caller.user_id))
    await quotas.settle_dataset_slot(catalog, settings, caller.user_id, record)
    await audit(catalog, caller, "dataset.create", "dataset", record.id, record.name)
    return DatasetRead(**record.model_dump())


@router.get("")
async def list_datasets(caller: Reader, catalog: CatalogDep, name: str | None = None, tag: str | None = None,
                        mine: Annotated[bool, Query(description="Only datasets the caller owns.")] = False,
                        benchmark: Annotated[str | None, Query(description="Recorded on this benchmark.")] = None,
                        owner: Annotated[str | None, Query(description="Owned by this user (name).")] = None,
                        offset: Offset = 0, limit: Limit = 50) -> Page[DatasetSummary]:
    """Datasets the caller may read whose name contains ``name`` and that carry ``tag``, by name."""
    if mine and not caller.signed_in:
        return Page(items=[], total=0, offset=offset, limit=limit)
    owner_id = caller.id if mine else None
    if owner is not None:
        try:  # an unknown name simply matches nothing: the listing says no more than before
            owner_id = (await catalog.get_record("users", UserRecord, name=owner)).id
        except NotFound:
            return Page(items=[], total=0, offset=offset, limit=limit)
    items, total = await catalog.list_datasets(name=name, tag=tag, offset=offset, limit=limit,
                                               readable=read_scope(caller, "dataset"), owner=owner_id,
                                               benchmark=benchmark)
    return Page(items=items, total=total, offset=offset, limit=limit)


@router.get("/{name}", responses=problems(NotFound))
async def get_dataset(name: str, caller: Reader, catalog: CatalogDep) -> DatasetRead:
    """A dataset with all of its versions and their episode and transition counts."""
    return await _read(catalog, await readable_dataset(catalog, caller, name))


@router.patch("/{name}", responses=problems(NotFound, Forbidden))
async def update_dataset(name: str, body: DatasetUpdate, caller: Caller, catalog: CatalogDep) -> DatasetRead:
    """Edit the dataset's card (description, tags, benchmark, authors, license, citation, policies)."""
    dataset = await readable_dataset(catalog, caller, name)
    require_owner(caller, dataset, "dataset", "write")
    changes = _cleared(body.model_dump(exclude_unset=True))
    if changes.get("benchmark") is not None:
        await readable_benchmark(catalog, caller, changes["benchmark"])
    updated = await catalog.update_dataset(dataset.id, **changes) if changes else dataset
    await audit(catalog, caller, "dataset.update", "dataset", dataset.id, dataset.name, fields=sorted(changes))
    return await _read(catalog, updated)


def _cleared(changes: dict[str, Any]) -> dict[str, Any]:
    """An explicit ``null`` clears a field (empty text or list, no benchmark); a left-out field is kept."""
    fields = DatasetRecord.model_fields
    return {key: fields[key].get_default(call_default_factory=True) if value is None else value
            for key, value in changes.items()}


@router.delete("/{name}", status_code=204, responses=problems(NotFound, Forbidden))
async def delete_dataset(name: str, caller: Caller, catalog: CatalogDep) -> Response:
    """Delete a dataset and all its versions (their blocks are swept by the workers)."""
    dataset = await readable_dataset(catalog, caller, name)
    require_owner(caller, dataset, "dataset", "delete")
    await catalog.delete_dataset(dataset.id)
    await catalog.delete_records("metrics", MetricRecord, dataset_id=dataset.id)
    await audit(catalog, caller, "dataset.delete", "dataset", dataset.id, dataset.name)
    return Response(status_code=204)


@router.post("/{name}/publish", responses=problems(NotFound, Forbidden))
async def publish_dataset(name: str, body: Publish, caller: Caller, catalog: CatalogDep) -> DatasetRead:
    """Make a dataset readable by the members of named groups and/or by everyone signed in."""
    dataset = await readable_dataset(catalog, caller, name)
    group_ids = await visible_group_ids(catalog, caller, body.groups)
    require_publish(caller, dataset, "dataset", group_ids, body.public)
    updated = await catalog.share_dataset(dataset.id, add_groups=group_ids, public=True if body.public else None)
    await audit(catalog, caller, "dataset.publish", "dataset", dataset.id, dataset.name,
                groups=body.groups, public=body.public)
    return await _read(catalog, updated)


@router.post("/{name}/unpublish", responses=problems(NotFound, Forbidden))
async def unpublish_dataset(name: str, body: Publish, caller: Caller, catalog: CatalogDep) -> DatasetRead:
    """Withdraw a dataset from named groups and/or from public view."""
    dataset = await readable_dataset(catalog, caller, name)
    group_ids = await visible_group_ids(catalog, caller, body.groups)
    require_unpublish(caller, dataset, "dataset", group_ids if not body.public else [])
    updated = await catalog.share_dataset(dataset.id, remove_groups=group_ids,
                                          public=False if body.public else None)
    await audit(catalog, caller, "dataset.unpublish", "dataset", dataset.id, dataset.name,
                groups=body.groups, public=body.public)
    return await _read(catalog, updated)


@router.get("/{name}/versions/{version}/episodes", responses=problems(NotFound, InvalidFilter))
async def list_episodes(name: str, version: int, caller: Reader, catalog: CatalogDep,
                        where: Annotated[str | None, Query(description="Episode filter as JSON", examples=[
                            '{"op": "gt", "field": "return", "value": 100}'])] = None,
                        offset: Offset = 0, limit: Limit = 100, *, settings: SettingsDep) -> Page[EpisodeRead]:
    """Episodes of one version that pass an episode filter, in version order."""
    dataset = await readable_dataset(catalog, caller, name)
    record = await versions.get_version(catalog, dataset, version)
    node = parse_filter_json(where)
    check_size(node, max_leaves=settings.filter_max_leaves)
    return await versions.list_episodes(catalog, record, node, offset=offset, limit=limit)
