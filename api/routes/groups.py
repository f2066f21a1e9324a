"""Groups: who belongs, with which roles. Members see their groups; nobody else learns they exist."""

from __future__ import annotations

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict

from tuplehub.api.access.accounts import check_grant, check_name
from tuplehub.api.access.audit import audit
from tuplehub.api.deps import Caller, CatalogDep, Limit, Offset
from tuplehub.api.problems import problems
from tuplehub.storage.access import (
    GroupCreate,
    GroupRead,
    GroupRecord,
    Member,
    MembershipRecord,
    Right,
    RoleName,
    UserRecord,
)
from tuplehub.storage.catalog import Catalog
from tuplehub.storage.errors import Conflict, Forbidden, InvalidRequest, NotFound
from tuplehub.storage.models import Page
from tuplehub.storage.permissions import Principal

router = APIRouter(prefix="/groups", tags=["groups"])
CREATOR_ROLES = ["group_admin", "contributor"]


class MemberRoles(BaseModel):
    model_config = ConfigDict(extra="forbid")

    roles: list[RoleName]


async def visible_group(catalog: Catalog, caller: Principal, name: str) -> GroupRecord:
    try:
        group = await catalog.get_record("groups", GroupRecord, name=name)
    except NotFound:
        group = None
    if group is None or (group.id not in caller.group_roles and not caller.holds(Right.group_read)):
        raise NotFound(f"no group named {name!r}", name=name)
    return group


async def visible_group_ids(catalog: Catalog, caller: Principal, names: list[str]) -> list[str]:
    return [(await visible_group(catalog, caller, name)).id for name in names]


async def _members(catalog: Catalog, group: GroupRecord) -> list[Member]:
    memberships, _ = await catalog.find_records("memberships", MembershipRecord, where={"group_id": group.id})
    users, _ = await catalog.find_records("users", UserRecord, where={"id": [m.user_id for m in memberships]})
    names = {user.id: user.name for user in users}
    return sorted((Member(user=names[m.user_id], roles=m.roles) for m in memberships if m.user_id in names),
                  key=lambda member: member.user)


def _read(group: GroupRecord, members: list[Member] | None = None) -> GroupRead:
    return GroupRead(id=group.id, name=group.name, description=group.description, created_at=group.created_at,
                     members=members)


def _require_in(caller: Principal, right: Right, group: GroupRecord) -> None:
    if not caller.holds_in(right, group.id):
        raise Forbidden(f"this needs the right {right} in group {group.name!r}")


@router.post("", status_code=201, responses=problems(Forbidden, Conflict, InvalidRequest))
async def create_group(body: GroupCreate, caller: Caller, catalog: CatalogDep) -> GroupRead:
    """Found a group; the founder becomes its group admin and a contributor in it."""
    if not caller.holds(Right.group_create):
        raise Forbidden("creating a group needs the right group:create")
    check_name(body.name)
    group = GroupRecord(name=body.name, description=body.description, created_by=caller.user_id)
    try:
        await catalog.insert_record("groups", group, unique=body.name)
    except Conflict:
        raise Conflict(f"the name {body.name!r} is taken by a user or a group", name=body.name) from None
    await catalog.insert_record("memberships", MembershipRecord(
        id=MembershipRecord.key(group.id, caller.user_id), group_id=group.id, user_id=caller.user_id,
        roles=CREATOR_ROLES))
    await audit(catalog, caller, "group.create", "group", group.id, group.name)
    return _read(group, [Member(user=caller.name, roles=CREATOR_ROLES)])


@router.get("")
async def list_groups(caller: Caller, catalog: CatalogDep, offset: Offset = 0,
                      limit: Limit = 100) -> Page[GroupRead]:
    """The groups the caller belongs to (every group for those with site-wide group:read)."""
    where = None if caller.holds(Right.group_read) else {"id": list(caller.group_roles)}
    groups, total = await catalog.find_records("groups", GroupRecord, where=where, offset=offset, limit=limit)
    return Page(items=[_read(group) for group in groups], total=total, offset=offset, limit=limit)


@router.get("/{name}", responses=problems(NotFound))
async def get_group(name: str, caller: Caller, catalog: CatalogDep) -> GroupRead:
    """A group, with its members for those holding group:read in it."""
    group = await visible_group(catalog, caller, name)
    members = await _members(catalog, group) if caller.holds_in(Right.group_read, group.id) else None
    return _read(group, members)


@router.delete("/{name}", status_code=204, responses=problems(NotFound, Forbidden))
async def delete_group(name: str, caller: Caller, catalog: CatalogDep) -> Response:
    """Dissolve a group. What was published to it becomes invisible to its former members; its id is
    never reused, so a new group of the same name does not see that content."""
    group = await visible_group(catalog, caller, name)
    _require_in(caller, Right.group_delete, group)
    await catalog.delete_records("memberships", MembershipRecord, group_id=group.id)
    await catalog.delete_records("groups", GroupRecord, id=group.id)
    await audit(catalog, caller, "group.delete", "group", group.id, group.name)
    return Response(status_code=204)


@router.put("/{name}/members/{user}", responses=problems(NotFound, Forbidden, InvalidRequest))
async def set_member(name: str, user: str, body: MemberRoles, caller: Caller, catalog: CatalogDep) -> GroupRead:
    """Add a user to the group or replace their roles there (with rights the caller holds there)."""
    group = await visible_group(catalog, caller, name)
    _require_in(caller, Right.group_update, group)
    try:
        member = await catalog.get_record("users", UserRecord, name=user)
    except NotFound:
        raise NotFound(f"no user named {user!r}", name=user) from None
    await check_grant(catalog, caller, body.roles, group.id)
    key = MembershipRecord.key(group.id, member.id)
    try:
        current = await catalog.get_record("memberships", MembershipRecord, id=key)
    except NotFound:
        current = None
    if current is None:
        await catalog.insert_record("memberships", MembershipRecord(
            id=key, group_id=group.id, user_id=member.id, roles=body.roles))
    else:
        await check_grant(catalog, caller, current.roles, group.id)  # no demoting someone above you
        await catalog.update_record("memberships", MembershipRecord, key, roles=body.roles)
    await audit(catalog, caller, "group.member", "group", group.id, group.name, user=user, roles=body.roles,
                before=current.roles if current else None)
    return _read(group, await _members(catalog, group))


@router.delete("/{name}/members/{user}", status_code=204, responses=problems(NotFound, Forbidden))
async def remove_member(name: str, user: str, caller: Caller, catalog: CatalogDep) -> Response:
    """Remove a member (anyone may leave a group themselves)."""
    group = await visible_group(catalog, caller, name)
    if user != caller.name:
        _require_in(caller, Right.group_update, group)
    try:
        member = await catalog.get_record("users", UserRecord, name=user)
        current = await catalog.get_record("memberships", MembershipRecord,
                                           id=MembershipRecord.key(group.id, member.id))
    except NotFound:
        raise NotFound(f"{user!r} is not a member of {name!r}", name=user) from None
    if user != caller.name:
        await check_grant(catalog, caller, current.roles, group.id)
    await catalog.delete_records("memberships", MembershipRecord, id=current.id)
    await audit(catalog, caller, "group.member.remove", "group", group.id, group.name, user=user)
    return Response(status_code=204)
