"""Accounts: creating users, changing passwords, ending sessions, and the "cannot grant what you
do not hold" rule that every role change goes through."""

from __future__ import annotations

from collections.abc import Iterable

from tuplehub.api.access.passwords import check_password_policy, hash_password
from tuplehub.api.access.principal import Principal, rights_of, role_rights
from tuplehub.storage.access import RESERVED_NAMES, RefreshTokenRecord, Right, UserRecord
from tuplehub.storage.catalog import Catalog
from tuplehub.storage.errors import Conflict, Forbidden, InvalidRequest
from tuplehub.storage.models import utcnow
from tuplehub.storage.settings import Settings


def check_name(name: str) -> None:
    """Reserved names would read as scopes or special accounts (PyTupli's ``global`` takeover)."""
    if name in RESERVED_NAMES:
        raise InvalidRequest(f"the name {name!r} is reserved", field="name")


async def grantable_rights(catalog: Catalog, roles: Iterable[str]) -> frozenset[Right]:
    """The rights the named roles carry; an unknown role name is an error, not a silent no-op."""
    table = await role_rights(catalog)
    unknown = sorted(set(roles) - set(table))
    if unknown:
        raise InvalidRequest(f"no role named {', '.join(map(repr, unknown))}", field="roles")
    return rights_of(tuple(roles), table)


async def check_grant(catalog: Catalog, caller: Principal, roles: Iterable[str], group_id: str | None) -> None:
    """Nobody hands out a right they do not hold themselves in that scope."""
    missing = await grantable_rights(catalog, roles) - caller.rights_in(group_id)
    if missing:
        raise Forbidden(f"you cannot grant rights you do not hold: {', '.join(sorted(missing))}")


async def check_outranks(catalog: Catalog, caller: Principal, target: UserRecord) -> None:
    """Changing another account (password, roles, deletion) needs at least all of its site rights."""
    missing = rights_of(tuple(target.site_roles), await role_rights(catalog)) - caller.rights_in(None)
    if missing:
        raise Forbidden(f"{target.name} holds rights you do not ({', '.join(sorted(missing))})")


async def create_user(catalog: Catalog, settings: Settings, name: str, password: str,
                      roles: list[str]) -> UserRecord:
    check_name(name)
    check_password_policy(password, username=name, min_length=settings.password_min_length)
    await grantable_rights(catalog, roles)
    user = UserRecord(name=name, password_hash=hash_password(password), site_roles=roles)
    try:
        await catalog.insert_record("users", user, unique=name)
    except Conflict:
        raise Conflict(f"the name {name!r} is taken by a user or a group", name=name) from None
    return user


async def end_sessions(catalog: Catalog, user_id: str, *, family: str | None = None) -> None:
    """Revoke refresh tokens (one family, or all); without a family, access tokens die too."""
    where = {"user_id": user_id, "revoked": False} | ({"family": family} if family else {})
    tokens, _ = await catalog.find_records("refresh_tokens", RefreshTokenRecord, where=where)
    for token in tokens:
        await catalog.update_record("refresh_tokens", RefreshTokenRecord, token.id, revoked=True)
    if family is None:
        await catalog.update_record("users", UserRecord, user_id, sessions_valid_after=utcnow())


async def set_password(catalog: Catalog, settings: Settings, user: UserRecord, password: str) -> None:
    check_password_policy(password, username=user.name, min_length=settings.password_min_length)
    await catalog.update_record("users", UserRecord, user.id, password_hash=hash_password(password))
    await end_sessions(catalog, user.id)
