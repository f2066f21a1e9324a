"""Roles: named bundles of rights. Everyone signed in may read them; ``role:manage`` changes them."""

from __future__ import annotations

from fastapi import APIRouter, Response

from tuplehub.api.access.accounts import check_name
from tuplehub.api.access.audit import audit
from tuplehub.api.deps import Caller, CatalogDep
from tuplehub.api.problems import problems
from tuplehub.storage.access import MembershipRecord, Right, RoleCreate, RoleRecord, UserRecord
from tuplehub.storage.errors import Conflict, Forbidden, InvalidRequest, NotFound
from tuplehub.storage.permissions import Principal

router = APIRouter(prefix="/roles", tags=["roles"])


def _require_manage(caller: Principal) -> None:
    if not caller.holds(Right.role_manage):
        raise Forbidden("managing roles needs the site-wide right role:manage")


@router.get("")
async def list_roles(caller: Caller, catalog: CatalogDep) -> list[RoleRecord]:
    roles, _ = await catalog.find_records("roles", RoleRecord)
    return roles


@router.post("", status_code=201, responses=problems(Forbidden, Conflict, InvalidRequest))
async def create_role(body: RoleCreate, caller: Caller, catalog: CatalogDep) -> RoleRecord:
    """A custom role, made only of rights the caller holds site-wide."""
    _require_manage(caller)
    check_name(body.name)
    missing = set(body.rights) - caller.rights_in(None)
    if missing:
        raise Forbidden(f"you cannot bundle rights you do not hold: {', '.join(sorted(missing))}")
    role = RoleRecord(name=body.name, rights=sorted(set(body.rights)), description=body.description)
    try:
        await catalog.insert_record("roles", role, unique=body.name)
    except Conflict:
        raise Conflict(f"a role named {body.name!r} exists", name=body.name) from None
    await audit(catalog, caller, "role.create", "role", role.id, role.name, rights=role.rights)
    return role


@router.delete("/{name}", status_code=204, responses=problems(NotFound, Forbidden, Conflict))
async def delete_role(name: str, caller: Caller, catalog: CatalogDep) -> Response:
    """Delete a custom role that nobody holds (a name left behind would come back to life, with
    whatever rights a later role of that name bundles)."""
    _require_manage(caller)
    role = await catalog.get_record("roles", RoleRecord, name=name)
    if role.builtin:
        raise Conflict(f"{name!r} is a default role and cannot be deleted", name=name)
    users, _ = await catalog.find_records("users", UserRecord)
    memberships, _ = await catalog.find_records("memberships", MembershipRecord)
    holders = sum(name in user.site_roles for user in users) + sum(name in m.roles for m in memberships)
    if holders:
        raise Conflict(f"{name!r} is still held {holders} time(s); take it away from its holders first", name=name)
    await catalog.delete_records("roles", RoleRecord, id=role.id)
    await audit(catalog, caller, "role.delete", "role", role.id, role.name)
    return Response(status_code=204)
