"""Derived datasets: a version made on the server from whole episodes of other versions."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter

from tuplehub.api.access.policy import readable_dataset, require_owner
from tuplehub.api.deps import Caller, CatalogDep, QueueDep, SettingsDep
from tuplehub.api.problems import problems
from tuplehub.storage import quotas, versions
from tuplehub.storage.errors import Forbidden, InvalidFilter, InvalidRequest, InvalidUpload, NotFound
from tuplehub.storage.exports import check_selection, output_schema
from tuplehub.storage.models import DeriveCreate, JobKind, JobRead, JobRecord, UploadMode

if TYPE_CHECKING:
    import pyarrow as pa

router = APIRouter(tags=["datasets"])


@router.post("/datasets/{name}/derive", status_code=202,
             responses=problems(NotFound, Forbidden, InvalidFilter, InvalidRequest))
async def derive_dataset(name: str, body: DeriveCreate, caller: Caller, catalog: CatalogDep,
                         queue: QueueDep, settings: SettingsDep) -> JobRead:
    """Start a ``derive`` job: what the sources select becomes this dataset's next version.

    Used for saving an export as a dataset, merging datasets and splitting one (two derives with
    complementary samples). Each source must be readable by the caller; the target must be theirs.
    Row-level selections cut episodes into pieces, each its own (renumbered) episode.
    """
    target = await readable_dataset(catalog, caller, name)
    require_owner(caller, target, "dataset", "write")
    sources: list[dict[str, Any]] = []
    schemas: list[pa.Schema] = []
    most = 0  # the decoded bytes the derive can store at most: every row of every source
    for number, source in enumerate(body.sources):
        dataset = await readable_dataset(catalog, caller, source.dataset)
        version = await versions.get_version(catalog, dataset, source.version)
        most += version.transitions * version.tuple_schema.row_bytes()
        check_selection(version.tuple_schema, source, max_leaves=settings.filter_max_leaves)
        columns = version.tuple_schema.export_columns()
        schema = output_schema(version.tuple_schema, columns)
        if body.renumber:
            schema = schema.remove(schema.get_field_index("episode_id"))
        if schemas and not schema.equals(schemas[0]):
            raise InvalidRequest(f"source {number} ({source.dataset}@{version.number}) has other columns or types "
                                 "than source 0; only alike datasets can be merged", field="sources")
        schemas.append(schema)
        sources.append({"dataset": dataset.name, "dataset_id": dataset.id, "version": version.number,
                        **source.model_dump(mode="json", include={"episodes", "where", "sample", "rebalance"},
                                            exclude_none=True)})
    if body.mode == UploadMode.append:
        latest = (await catalog.list_versions(target.id))[-1:]
        source_version = await versions.get_version(catalog, await catalog.get_dataset(sources[0]["dataset"]),
                                                    sources[0]["version"])
        schema = source_version.tuple_schema
        if body.renumber:  # the job writes integer ids
            schema = schema.model_copy(update={"episode_id": "int"})
        if latest:
            try:
                versions.check_appendable(latest[0], schema)
            except InvalidUpload as exc:
                raise InvalidRequest(exc.detail, field="mode") from exc
    job = JobRecord(kind=JobKind.derive, owner=caller.user_id, params={
        "dataset": target.name, "dataset_id": target.id, "mode": body.mode.value, "renumber": body.renumber,
        "sources": sources})
    await quotas.require_job_slot(catalog, settings, caller.user_id)
    await quotas.require_bytes(catalog, settings, caller.user_id, most)  # a derived version is stored data too
    stored = await catalog.create_job(job)
    await queue.enqueue(stored)
    return JobRead.from_record(stored)
