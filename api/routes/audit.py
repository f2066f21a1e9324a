"""The audit log, for those holding ``audit:read``: filter by actor, action, target and time."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import AwareDatetime

from tuplehub.api.deps import Caller, CatalogDep, Limit, Offset
from tuplehub.api.problems import problems
from tuplehub.storage.access import AuditRecord, Right
from tuplehub.storage.errors import Forbidden
from tuplehub.storage.models import Page

router = APIRouter(prefix="/audit", tags=["audit"])


@router.get("", responses=problems(Forbidden))
async def read_audit(caller: Caller, catalog: CatalogDep,
                     actor: Annotated[str | None, Query(description="User name of who acted.")] = None,
                     action: Annotated[str | None, Query(examples=["dataset.publish"])] = None,
                     target: Annotated[str | None, Query(description="Name of what was acted on.")] = None,
                     target_kind: Annotated[str | None, Query(examples=["dataset"])] = None,
                     since: AwareDatetime | None = None, until: AwareDatetime | None = None,
                     offset: Offset = 0,
                     limit: Limit = 100) -> Page[AuditRecord]:
    """Audit records, newest first."""
    if not caller.holds(Right.audit_read):
        raise Forbidden("reading the audit log needs the right audit:read")
    where: dict[str, Any] = {key: value for key, value in (
        ("actor", actor), ("action", action), ("target", target), ("target_kind", target_kind)) if value}
    records, total = await catalog.find_records("audit", AuditRecord, where=where, since=since, until=until,
                                                newest_first=True, offset=offset, limit=limit)
    return Page(items=records, total=total, offset=offset, limit=limit)
