"""Accounts: creating users, changing passwords, ending sessions, and the "cannot grant what you
do not hold" rule that every role change goes through."""

from __future__ import annotations

from collections.abc import Iterable

from tuplehub.api.access.passwords import check_password_policy, hash_password
from tuplehub.storage.access import RESERVED_NAMES, ApiTokenRecord, RefreshTokenRecord, Right, UserRecord
from tuplehub.storage.catalog import Catalog
from tuplehub.storage.errors import Conflict, Forbidden, InvalidRequest
from tuplehub.storage.models import utcnow
from tuplehub.storage.permissions import Principal, principal_of, rights_of, role_rights
from tuplehub.storage.settings import Settings


async def user_names(catalog: Catalog, user_ids: Iterable[str]) -> dict[str, str]:
    """The user names of these account ids in one query (an id whose account is gone is left out):
    what a read model shows next to an ``owner`` id."""
    wanted = sorted(set(user_ids))
    users, _ = await catalog.find_records("users", UserRecord, where={"id": wanted}) if wanted else ([], 0)
    return {user.id: user.name for user in users}


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
    """Changing another account (password, roles, deletion) needs, site-wide, every right it holds
    anywhere: otherwise resetting a group admin's password would hand over their groups."""
    missing = (await principal_of(catalog, target)).all_rights() - caller.rights_in(None)
    if missing:
        raise Forbidden(f"{target.name} holds rights you do not ({', '.join(sorted(missing))})")


async def check_not_last_admin(catalog: Catalog, target: UserRecord, new_roles: list[str]) -> None:
    """The site must keep someone who can administer it."""
    if "admin" in target.site_roles and "admin" not in new_roles:
        admins, _ = await catalog.find_records("users", UserRecord, where={"active": True})
        if sum("admin" in user.site_roles for user in admins) <= 1:
            raise Conflict(f"{target.name} is the last admin; make someone else admin first", name=target.name)


async def create_user(catalog: Catalog, settings: Settings, name: str, password: str,
                      roles: list[str]) -> UserRecord:
    """Store a new account; the caller has checked that ``roles`` exist and may be granted."""
    check_name(name)
    check_password_policy(password, username=name, min_length=settings.password_min_length)
    user = UserRecord(name=name, password_hash=hash_password(password), site_roles=roles)
    try:
        await catalog.insert_record("users", user, unique=name)
    except Conflict:
        raise Conflict(f"the name {name!r} is taken by a user or a group", name=name) from None
    return user


_REVOKE_PASSES = 5


async def end_sessions(catalog: Catalog, user_id: str, *, family: str | None = None) -> None:
    """Revoke refresh tokens (one family, or all); without a family, access tokens die too.

    A refresh running at the same moment may insert a token after the first pass has listed the
    family; it checks its parent right after inserting (see ``routes/auth.py``), and the passes
    repeat until nothing live is left, so one of the two always catches it.
    """
    if family is None:
        await catalog.update_record("users", UserRecord, user_id, sessions_valid_after=utcnow())
    where = {"user_id": user_id, "revoked": False} | ({"family": family} if family else {})
    for _ in range(_REVOKE_PASSES):
        tokens, _ = await catalog.find_records("refresh_tokens", RefreshTokenRecord, where=where)
        if not tokens:
            return
        for token in tokens:
            await catalog.update_record("refresh_tokens", RefreshTokenRecord, token.id, revoked=True)


async def revoke_api_tokens(catalog: Catalog, user_id: str) -> None:
    tokens, _ = await catalog.find_records("api_tokens", ApiTokenRecord, where={"user_id": user_id, "revoked": False})
    for token in tokens:
        await catalog.update_record("api_tokens", ApiTokenRecord, token.id, revoked=True)


async def set_password(catalog: Catalog, settings: Settings, user: UserRecord, password: str, *,
                       revoke_api_tokens_too: bool = False) -> None:
    """New password; every session ends. An administrator's reset (account recovery) also
    revokes the user's API tokens, which a thief may have minted."""
    check_password_policy(password, username=user.name, min_length=settings.password_min_length)
    await catalog.update_record("users", UserRecord, user.id, password_hash=hash_password(password))
    await end_sessions(catalog, user.id)
    if revoke_api_tokens_too:
        await revoke_api_tokens(catalog, user.id)
