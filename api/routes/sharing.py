"""Publishing and unpublishing records kept in the catalog's record store (benchmarks, artifacts)."""

from __future__ import annotations

from typing import Literal, TypeVar

from tuplehub.api.access.audit import audit
from tuplehub.api.access.policy import require_publish, require_unpublish
from tuplehub.api.routes.groups import visible_group_ids
from tuplehub.storage.access import Publish
from tuplehub.storage.artifacts import ArtifactRecord
from tuplehub.storage.benchmarks import BenchmarkRecord
from tuplehub.storage.catalog import Catalog
from tuplehub.storage.permissions import Principal

R = TypeVar("R", BenchmarkRecord, ArtifactRecord)


async def change_sharing(catalog: Catalog, caller: Principal, record: R, body: Publish, *,
                         action: Literal["publish", "unpublish"], target_id: str, label: str) -> R:
    """Apply a publish or unpublish request to ``record`` after the rights checks; audit it."""
    kind = "benchmark" if isinstance(record, BenchmarkRecord) else "artifact"
    group_ids = await visible_group_ids(catalog, caller, body.groups)
    if action == "publish":
        require_publish(caller, record, kind, group_ids, body.public)
        public, groups = record.public or body.public, sorted(set(record.groups) | set(group_ids))
    else:
        require_unpublish(caller, record, kind, group_ids if not body.public else [])
        public, groups = record.public and not body.public, sorted(set(record.groups) - set(group_ids))
    updated = await catalog.update_record(f"{kind}s", type(record), record.id,  # type: ignore[arg-type]
                                          public=public, groups=groups)
    await audit(catalog, caller, f"{kind}.{action}", kind, target_id, label, groups=body.groups, public=body.public)
    return updated or record
