"""Who may read what: the principal (a user's rights by scope) and the read rule, shared by API and workers.

A user's rights are the union of the rights of their roles, kept apart by scope: site roles apply
to the site (create content, publish it publicly, administer users, groups and roles), group roles
apply inside one group. An API token can only narrow them. The API resolves a principal per request
(``api.access.principal``); the workers resolve the job owner's with :func:`principal_of`, so a
scheduled sweep reads exactly what its owner could read through the API.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from tuplehub.storage.access import CONTENT_KINDS, ApiTokenRecord, MembershipRecord, Right, RoleRecord, UserRecord
from tuplehub.storage.catalog import Catalog
from tuplehub.storage.errors import Unauthenticated


@dataclass(frozen=True)
class Principal:
    id: str | None
    name: str
    site_roles: tuple[str, ...] = ()
    site_rights: frozenset[Right] = frozenset()
    group_roles: Mapping[str, tuple[str, ...]] = field(default_factory=dict)    # group id -> roles
    group_rights: Mapping[str, frozenset[Right]] = field(default_factory=dict)  # group id -> rights
    token_rights: frozenset[Right] | None = None   # an API token's narrowing; None: no narrowing
    token_expires_at: datetime | None = None       # when the API token in use expires
    token_id: str | None = None                    # the API token in use, parent of those it makes
    via: str = "access"

    @property
    def signed_in(self) -> bool:
        return self.id is not None

    @property
    def user_id(self) -> str:
        """The caller's id on routes that only signed-in callers reach."""
        if self.id is None:
            raise Unauthenticated("sign in first: send 'Authorization: Bearer <token>'")
        return self.id

    def allows(self, right: Right) -> bool:
        """Whether the credential in use permits ``right`` at all (API tokens may narrow)."""
        return self.token_rights is None or right in self.token_rights

    def holds(self, right: Right) -> bool:
        """A site-wide right."""
        return self.allows(right) and right in self.site_rights

    def holds_in(self, right: Right, group_id: str) -> bool:
        """A right inside one group; site-wide group administration counts in every group."""
        if not self.allows(right):
            return False
        site_wide = right.startswith("group:") and right in self.site_rights
        return site_wide or right in self.group_rights.get(group_id, ())

    def groups_holding(self, right: Right) -> frozenset[str]:
        if not self.allows(right):
            return frozenset()
        return frozenset(group for group, rights in self.group_rights.items() if right in rights)

    def rights_in(self, group_id: str | None) -> frozenset[Right]:
        """What the caller may hand out in a scope (None: site): "you cannot grant what you do not hold".

        Inside a group that is what they hold there, plus site-wide group administration, plus the
        content rights of kinds they administer site-wide. A site-wide read right is *not* a read
        right inside a group (it only reaches public content), so it cannot be granted there.
        """
        held: frozenset[Right] | set[Right]
        if group_id is None:
            held = self.site_rights
        else:
            held = set(self.group_rights.get(group_id, frozenset()))
            held |= {right for right in self.site_rights if right.startswith("group:") or right == Right.user_read}
            for kind in CONTENT_KINDS:
                if Right(f"{kind}:delete") in self.site_rights:
                    held |= {right for right in Right if right.startswith(f"{kind}:")}
            held = frozenset(held)
        return held if self.token_rights is None else held & self.token_rights

    def all_rights(self) -> frozenset[Right]:
        held = self.site_rights.union(*self.group_rights.values())
        return held if self.token_rights is None else held & self.token_rights


ANONYMOUS = Principal(id=None, name="anonymous", via="anonymous")


async def role_rights(catalog: Catalog) -> dict[str, frozenset[Right]]:
    roles, _ = await catalog.find_records("roles", RoleRecord)
    return {role.name: frozenset(role.rights) for role in roles}


def rights_of(roles: list[str] | tuple[str, ...], table: Mapping[str, frozenset[Right]]) -> frozenset[Right]:
    """Unknown (deleted) roles grant nothing."""
    return frozenset().union(*(table.get(role, frozenset()) for role in roles))


async def principal_of(catalog: Catalog, user: UserRecord, *, token: ApiTokenRecord | None = None) -> Principal:
    table = await role_rights(catalog)
    memberships, _ = await catalog.find_records("memberships", MembershipRecord, where={"user_id": user.id})
    return Principal(
        id=user.id, name=user.name, site_roles=tuple(user.site_roles), site_rights=rights_of(user.site_roles, table),
        group_roles={m.group_id: tuple(m.roles) for m in memberships},
        group_rights={m.group_id: rights_of(m.roles, table) for m in memberships},
        token_rights=None if token is None or token.rights is None else frozenset(token.rights),
        token_expires_at=token.expires_at if token else None, token_id=token.id if token else None,
        via="api-token" if token else "access")


class Shared(Protocol):
    owner: str
    public: bool
    groups: list[str]


def content_right(kind: str, action: str) -> Right:
    """The right to do ``action`` (read, create, delete, publish) on content of ``kind``."""
    return Right(f"{kind}:{action}")


def manages_all(caller: Principal, kind: str) -> bool:
    """Content admins (site-wide ``<kind>:delete``) reach every item of the kind."""
    return caller.holds(content_right(kind, "delete"))


def can_read(caller: Principal, item: Shared, kind: str) -> bool:
    """The one read rule, for a person's request (API) and a stored request re-run as its owner (workers)."""
    if not caller.allows(content_right(kind, "read")):
        return False
    if item.public or manages_all(caller, kind):
        return True
    if caller.id is not None and item.owner == caller.id:
        return True
    return bool(caller.groups_holding(content_right(kind, "read")).intersection(item.groups))
