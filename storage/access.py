"""Who may do what: rights, roles, users, groups, tokens and the audit trail, as shared models.

Rights are bundled into roles; a user holds roles *site-wide* (they apply everywhere) and *per
group* (they apply to what is published to that group and to the group itself). Every dataset,
benchmark and artifact has an owner and is private until it is published to named groups or made
public. The rules that combine these live in ``storage.permissions`` and ``api.access.policy``; this module only
says what the records are, so the client can use the same names.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, computed_field, model_validator

from tuplehub.storage.models import new_id, utcnow

CONTENT_KINDS = ("dataset", "benchmark", "artifact")

# Users and groups share one namespace, and these names belong to neither: they would read as
# scopes ("public", "global") or as special accounts.
RESERVED_NAMES = frozenset({
    "admin", "administrator", "all", "anonymous", "everyone", "global", "group", "groups", "guest", "me",
    "nobody", "private", "public", "root", "site", "system", "token", "tokens", "tuplehub", "user", "users",
})
PRINCIPAL_PATTERN = r"^[a-z][a-z0-9_-]{1,38}[a-z0-9]$"
PrincipalName = Annotated[str, Field(pattern=PRINCIPAL_PATTERN, examples=["alice"], description=(
    "3-40 lowercase letters, digits, '_' or '-', starting with a letter; users and groups share these names."))]
RoleName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{1,39}$", examples=["contributor"])]


class Right(StrEnum):
    dataset_create = "dataset:create"
    dataset_read = "dataset:read"
    dataset_delete = "dataset:delete"
    dataset_publish = "dataset:publish"
    benchmark_create = "benchmark:create"
    benchmark_read = "benchmark:read"
    benchmark_delete = "benchmark:delete"
    benchmark_publish = "benchmark:publish"
    artifact_create = "artifact:create"
    artifact_read = "artifact:read"
    artifact_delete = "artifact:delete"
    artifact_publish = "artifact:publish"
    user_create = "user:create"
    user_read = "user:read"
    user_update = "user:update"
    user_delete = "user:delete"
    group_create = "group:create"
    group_read = "group:read"
    group_update = "group:update"
    group_delete = "group:delete"
    role_manage = "role:manage"
    audit_read = "audit:read"
    job_manage = "job:manage"

    @classmethod
    def content(cls, *actions: str) -> frozenset[Right]:
        return frozenset(cls(f"{kind}:{action}") for kind in CONTENT_KINDS for action in actions)


_USER = frozenset(r for r in Right if r.startswith("user:"))
_GROUP = frozenset(r for r in Right if r.startswith("group:"))

# The seven roles PyTupli ships (its "global_member" is folded into site-wide "member"), seeded
# on every start, so a new version's definition replaces an old one; they cannot be deleted.
# Custom roles sit beside them.
DEFAULT_ROLES: dict[str, tuple[frozenset[Right], str]] = {
    "admin": (frozenset(Right), "Every right, everywhere."),
    "content_admin": (Right.content("create", "read", "delete", "publish"), "Manage all content."),
    "user_admin": (_USER, "Create, read, update and delete users."),
    "group_admin": (_GROUP | {Right.user_read}, "Manage a group and its members."),
    "contributor": (Right.content("create", "read", "publish") | {Right.group_create},
                    "Create content, read and publish it."),
    "member": (Right.content("read") | {Right.group_read, Right.user_read}, "Read content and see members."),
    "guest": (Right.content("read"), "Read content."),
}


class StoredRecord(BaseModel):
    """What the catalog needs of every access record: an id and a creation time to order by."""

    id: str = Field(default_factory=new_id)
    created_at: datetime = Field(default_factory=utcnow)


class SharedRecord(StoredRecord):
    """An owned record that can be published to groups or to everyone (benchmarks, artifacts)."""

    owner: str
    public: bool = False
    groups: list[str] = Field(default_factory=list, description="Ids of the groups it is published to.")

    @computed_field
    @property
    def visibility(self) -> Literal["private", "groups", "public"]:
        return "public" if self.public else "groups" if self.groups else "private"


# --- users ------------------------------------------------------------------------------------

class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: PrincipalName
    password: str = Field(min_length=1, max_length=1024)
    site_roles: list[RoleName] | None = Field(None, description="Roles that apply everywhere; default from settings.")


class UserRecord(StoredRecord):
    name: str
    password_hash: str
    site_roles: list[str] = Field(default_factory=list)
    active: bool = True
    # Access tokens issued before this are refused: a password change or logout-everywhere moves it.
    sessions_valid_after: datetime = Field(default_factory=utcnow)


class UserRead(BaseModel):
    id: str
    name: str
    site_roles: list[str]
    active: bool
    created_at: datetime


class Usage(BaseModel):
    """What a user uses of each per-user quota, and the limits (None: no limit on this server)."""

    stored_bytes: int = Field(description="Decoded bytes of their datasets' rows plus their artifacts.")
    datasets: int = Field(description="Datasets they own.")
    concurrent_jobs: int = Field(description="Their jobs queued or running.")
    limits: dict[str, int | None] = Field(description="Quota name -> limit; None where there is none.")

    def describe(self) -> str:
        """One line for people: "12.3 MB stored (of 1.0 GB), 2 datasets, 0 jobs queued or running"."""
        def of(name: str, shown: Callable[[int], str] = str) -> str:
            limit = self.limits.get(name)
            return "" if limit is None else f" (of {shown(limit)})"
        return (f"{_size(self.stored_bytes)} stored{of('stored_bytes', _size)}, "
                f"{self.datasets} datasets{of('datasets')}, "
                f"{self.concurrent_jobs} jobs queued or running{of('concurrent_jobs')}")


def _size(n: int) -> str:
    if n < 1000:
        return f"{n} bytes"
    power = min(int(math.log10(n)) // 3, 4)
    return f"{n / 1000**power:.1f} {('kB', 'MB', 'GB', 'TB')[power - 1]}"


class Me(UserRead):
    groups: dict[str, list[str]] = Field(description="Group name -> the roles held there.")
    rights: list[str] = Field(description="Rights held site-wide (limited by the token in use).")
    token: str = Field(description="How this request signed in: 'access', 'api-token' or 'anonymous'.")
    usage: Usage | None = Field(None, description="The caller's usage and quota limits.")


class PasswordChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    current_password: str = Field(max_length=1024)
    new_password: str = Field(max_length=1024)


class SiteRolesUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    site_roles: list[RoleName]


# --- groups, memberships, roles ----------------------------------------------------------------

class GroupCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: PrincipalName
    description: str = Field("", max_length=2000)


class GroupRecord(StoredRecord):
    name: str
    description: str = ""
    created_by: str


class MembershipRecord(StoredRecord):
    group_id: str
    user_id: str
    roles: list[str]

    @staticmethod
    def key(group_id: str, user_id: str) -> str:
        return f"{group_id}:{user_id}"


class Member(BaseModel):
    user: str = Field(description="User name.")
    roles: list[RoleName]


class GroupRead(BaseModel):
    id: str
    name: str
    description: str
    created_at: datetime
    members: list[Member] | None = Field(None, description="Shown to those who may read the group.")


class RoleCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: RoleName
    rights: list[Right]
    description: str = Field("", max_length=500)


class RoleRecord(StoredRecord):
    name: str
    rights: list[Right]
    description: str = ""
    builtin: bool = False


# --- sessions and tokens --------------------------------------------------------------------------

class Login(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(max_length=64)
    password: str = Field(max_length=1024)


class Refresh(BaseModel):
    model_config = ConfigDict(extra="forbid")

    refresh_token: str = Field(max_length=4096)


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str
    token_type: str = "bearer"
    expires_in: int = Field(description="Seconds until the access token expires.")


class RefreshTokenRecord(StoredRecord):
    """A refresh token is random, stored only as its hash, and used once: each use rotates it."""

    hash: str
    user_id: str
    family: str = Field(description="Every token rotated from one login; reuse of a spent one revokes all.")
    expires_at: datetime
    spent: bool = False
    revoked: bool = False


class ApiTokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    rights: list[Right] | None = Field(None, description="A subset of the creator's rights; all of them if omitted.")
    expires_at: AwareDatetime | None = Field(None, description=(
        "With a time zone, e.g. 2027-01-31T00:00:00Z; omitted: the server's default lifetime "
        "(TUPLEHUB_API_TOKEN_TTL_DAYS)."))
    no_expiry: bool = Field(False, description="Never expire (unless made with an API token that does).")

    @model_validator(mode="after")
    def _one_expiry(self) -> ApiTokenCreate:
        if self.no_expiry and self.expires_at is not None:
            raise ValueError("give expires_at or no_expiry, not both")
        return self


class ApiTokenRecord(StoredRecord):
    hash: str
    user_id: str
    name: str
    rights: list[Right] | None
    expires_at: datetime | None
    revoked: bool = False
    last_used_at: datetime | None = None
    parent: str | None = Field(None, description="The API token this one was made with; revoking it revokes this.")


class ApiTokenRead(BaseModel):
    id: str
    name: str
    rights: list[Right] | None
    expires_at: datetime | None
    revoked: bool
    last_used_at: datetime | None
    created_at: datetime


class ApiTokenCreated(ApiTokenRead):
    token: str = Field(description="Shown once: only its hash is kept.")


# --- sharing and audit ---------------------------------------------------------------------------

class Publish(BaseModel):
    """Publish to named groups and/or everyone; unpublish takes the same body."""

    model_config = ConfigDict(extra="forbid")

    groups: list[PrincipalName] = Field(default_factory=list, max_length=100)
    public: bool = False


class AuditRecord(StoredRecord):
    actor_id: str | None
    actor: str
    action: str = Field(examples=["dataset.publish"])
    target_kind: str
    target_id: str
    target: str
    details: dict[str, Any] = Field(default_factory=dict)
