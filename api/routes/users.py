"""User administration: site-wide ``user:*`` rights, and never over someone who holds more rights."""

from __future__ import annotations

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field

from tuplehub.api.access.accounts import (
    check_grant,
    check_not_last_admin,
    check_outranks,
    create_user,
    end_sessions,
    set_password,
)
from tuplehub.api.access.audit import audit
from tuplehub.api.access.policy import require_password_sign_in
from tuplehub.api.deps import Caller, CatalogDep, Limit, Offset, SettingsDep
from tuplehub.api.problems import problems
from tuplehub.storage.access import (
    ApiTokenRecord,
    MembershipRecord,
    RefreshTokenRecord,
    Right,
    SiteRolesUpdate,
    UserCreate,
    UserRead,
    UserRecord,
)
from tuplehub.storage.catalog import Catalog
from tuplehub.storage.catalog.base import RecordKind
from tuplehub.storage.errors import Conflict, Forbidden, InvalidRequest, NotFound
from tuplehub.storage.models import Page
from tuplehub.storage.permissions import Principal

router = APIRouter(prefix="/users", tags=["users"])


class PasswordReset(BaseModel):
    model_config = ConfigDict(extra="forbid")

    new_password: str = Field(max_length=1024)


def _read(user: UserRecord) -> UserRead:
    return UserRead.model_validate(user, from_attributes=True)


def _require(caller: Principal, right: Right) -> None:
    if not caller.holds(right):
        raise Forbidden(f"this needs the site-wide right {right}")


async def visible_user(catalog: Catalog, caller: Principal, name: str) -> UserRecord:
    """Users see themselves; user administrators see everyone; nobody else learns who exists."""
    try:
        user = await catalog.get_record("users", UserRecord, name=name)
    except NotFound:
        user = None
    if user is None or (user.id != caller.id and not caller.holds(Right.user_read)):
        raise NotFound(f"no user named {name!r}", name=name)
    return user


@router.post("", status_code=201, responses=problems(Forbidden, Conflict, InvalidRequest))
async def create(body: UserCreate, caller: Caller, catalog: CatalogDep, settings: SettingsDep) -> UserRead:
    """Create an account with site roles the caller could hold themselves."""
    _require(caller, Right.user_create)
    roles = list(settings.default_roles) if body.site_roles is None else body.site_roles
    await check_grant(catalog, caller, roles, None)
    user = await create_user(catalog, settings, body.name, body.password, roles)
    await audit(catalog, caller, "user.create", "user", user.id, user.name, site_roles=roles)
    return _read(user)


@router.get("", responses=problems(Forbidden))
async def list_users(caller: Caller, catalog: CatalogDep, offset: Offset = 0,
                     limit: Limit = 100) -> Page[UserRead]:
    _require(caller, Right.user_read)
    users, total = await catalog.find_records("users", UserRecord, offset=offset, limit=limit)
    return Page(items=[_read(user) for user in users], total=total, offset=offset, limit=limit)


@router.get("/{name}", responses=problems(NotFound))
async def get_user(name: str, caller: Caller, catalog: CatalogDep) -> UserRead:
    return _read(await visible_user(catalog, caller, name))


@router.put("/{name}/roles", responses=problems(NotFound, Forbidden, InvalidRequest, Conflict))
async def set_roles(name: str, body: SiteRolesUpdate, caller: Caller, catalog: CatalogDep) -> UserRead:
    """Replace a user's site roles."""
    user = await visible_user(catalog, caller, name)
    _require(caller, Right.user_update)
    await check_outranks(catalog, caller, user)
    await check_grant(catalog, caller, body.site_roles, None)
    await check_not_last_admin(catalog, user, body.site_roles)
    updated = await catalog.update_record("users", UserRecord, user.id, site_roles=body.site_roles)
    await audit(catalog, caller, "user.roles", "user", user.id, user.name,
                before=user.site_roles, after=body.site_roles)
    return _read(updated or user)


@router.put("/{name}/password", status_code=204, responses=problems(NotFound, Forbidden, InvalidRequest))
async def reset_password(name: str, body: PasswordReset, caller: Caller, catalog: CatalogDep,
                         settings: SettingsDep) -> Response:
    """Set another user's password, ending their sessions and revoking their API tokens (account
    recovery); never for someone with more rights."""
    user = await visible_user(catalog, caller, name)
    _require(caller, Right.user_update)
    if user.id == caller.user_id:
        require_password_sign_in(caller)
    await check_outranks(catalog, caller, user)
    await set_password(catalog, settings, user, body.new_password, revoke_api_tokens_too=True)
    await audit(catalog, caller, "user.password", "user", user.id, user.name)
    return Response(status_code=204)


@router.delete("/{name}", status_code=204, responses=problems(NotFound, Forbidden))
async def delete_user(name: str, caller: Caller, catalog: CatalogDep) -> Response:
    """Remove an account, its memberships and tokens. Its content stays, owned by its (unique) id,
    so a later account with the same name does not inherit it."""
    user = await visible_user(catalog, caller, name)
    _require(caller, Right.user_delete)
    if user.id == caller.id:
        raise Forbidden("you cannot delete your own account")
    await check_outranks(catalog, caller, user)
    await end_sessions(catalog, user.id)
    owned: tuple[tuple[RecordKind, type[BaseModel]], ...] = (
        ("memberships", MembershipRecord), ("api_tokens", ApiTokenRecord), ("refresh_tokens", RefreshTokenRecord))
    for kind, model in owned:
        await catalog.delete_records(kind, model, user_id=user.id)
    await catalog.delete_records("users", UserRecord, id=user.id)
    await audit(catalog, caller, "user.delete", "user", user.id, user.name)
    return Response(status_code=204)
