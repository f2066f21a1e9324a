"""The audit trail: who created, published, unpublished, deleted or changed rights on what, and when."""

from __future__ import annotations

from typing import Any

from tuplehub.storage.access import AuditRecord
from tuplehub.storage.catalog import Catalog
from tuplehub.storage.permissions import Principal


async def audit(catalog: Catalog, caller: Principal, action: str, kind: str, target_id: str, target: str,
                **details: Any) -> None:
    """Record an action after it succeeded; ``details`` holds what changed (never a secret)."""
    await catalog.insert_record("audit", AuditRecord(
        actor_id=caller.id, actor=caller.name, action=action, target_kind=kind, target_id=target_id,
        target=target, details=details))
