"""Signing in and out: password login, refresh-token rotation, sign-up when open, the caller's profile."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from tuplehub.api.access.accounts import create_user, end_sessions, grantable_rights, set_password
from tuplehub.api.access.audit import audit
from tuplehub.api.access.passwords import verify_password
from tuplehub.api.access.policy import require_password_sign_in
from tuplehub.api.access.tokens import REFRESH_PREFIX, Signer, hash_token, new_opaque
from tuplehub.api.deps import Caller, CatalogDep, LimiterDep, SettingsDep, SignerDep
from tuplehub.api.problems import problems
from tuplehub.storage import quotas
from tuplehub.storage.access import (
    AuditRecord,
    GroupRecord,
    Login,
    Me,
    PasswordChange,
    Refresh,
    RefreshTokenRecord,
    TokenPair,
    UserCreate,
    UserRead,
    UserRecord,
)
from tuplehub.storage.catalog import Catalog
from tuplehub.storage.errors import Conflict, Forbidden, InvalidRequest, NotFound, RateLimited, Unauthenticated
from tuplehub.storage.models import new_id, utcnow
from tuplehub.storage.settings import Settings

router = APIRouter(prefix="/auth", tags=["auth"])
_WRONG = "wrong user name or password"


async def _issue(catalog: Catalog, signer: Signer, settings: Settings, user: UserRecord, family: str) -> TokenPair:
    refresh, digest = new_opaque(REFRESH_PREFIX)
    await catalog.insert_record("refresh_tokens", RefreshTokenRecord(
        hash=digest, user_id=user.id, family=family,
        expires_at=utcnow() + timedelta(seconds=settings.refresh_token_ttl_s)), unique=digest)
    return TokenPair(access_token=signer.issue(user.id), refresh_token=refresh, expires_in=signer.ttl_s)


@router.post("/login", responses=problems(Unauthenticated, RateLimited))
async def login(body: Login, request: Request, catalog: CatalogDep, signer: SignerDep, limiter: LimiterDep,
                settings: SettingsDep) -> TokenPair:
    """Exchange a user name and password for a short-lived access token and a refresh token."""
    address = _address(request)
    await limiter.attempt(body.username, address)
    try:
        user: UserRecord | None = await catalog.get_record("users", UserRecord, name=body.username)
    except NotFound:
        user = None
    if not await verify_password(user.password_hash if user else None, body.password) or not user or not user.active:
        raise Unauthenticated(_WRONG)
    await limiter.succeeded(body.username, address)
    return await _issue(catalog, signer, settings, user, family=new_id())


def _address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def _spend(catalog: Catalog, token: str) -> RefreshTokenRecord:
    """Use a refresh token once; a second use means it was stolen, so its whole family dies."""
    if not token.startswith(REFRESH_PREFIX):
        raise Unauthenticated("that is not a refresh token")
    try:
        record = await catalog.get_record("refresh_tokens", RefreshTokenRecord, hash=hash_token(token))
    except NotFound:
        raise Unauthenticated("unknown refresh token") from None
    if record.revoked:
        raise Unauthenticated("the refresh token was revoked; sign in again")
    if record.expires_at <= utcnow():
        raise Unauthenticated("the refresh token has expired; sign in again")
    spent = await catalog.update_record("refresh_tokens", RefreshTokenRecord, record.id,
                                        expected={"spent": False, "revoked": False}, spent=True)
    if spent is None:
        current = await catalog.get_record("refresh_tokens", RefreshTokenRecord, id=record.id)
        if current.revoked:  # revoked between our read and the swap (a logout)
            raise Unauthenticated("the refresh token was revoked; sign in again")
        await end_sessions(catalog, record.user_id, family=record.family)
        raise Unauthenticated("this refresh token was already used: every session from that sign-in is revoked")
    return record


@router.post("/refresh", responses=problems(Unauthenticated))
async def refresh(body: Refresh, catalog: CatalogDep, signer: SignerDep, settings: SettingsDep) -> TokenPair:
    """Rotate a refresh token: the old one is spent, a new pair is returned."""
    record = await _spend(catalog, body.refresh_token)
    try:
        user = await catalog.get_record("users", UserRecord, id=record.user_id)
    except NotFound:
        raise Unauthenticated("the token's user no longer exists") from None
    if not user.active:
        raise Unauthenticated("the user is deactivated")
    pair = await _issue(catalog, signer, settings, user, family=record.family)
    # A logout or reuse detection that listed the family before our insert has revoked the parent.
    if (await catalog.get_record("refresh_tokens", RefreshTokenRecord, id=record.id)).revoked:
        await end_sessions(catalog, record.user_id, family=record.family)
        raise Unauthenticated("the refresh token was revoked; sign in again")
    return pair


@router.post("/logout", status_code=204, responses=problems(Unauthenticated))
async def logout(body: Refresh, catalog: CatalogDep,
                 everywhere: Annotated[bool, Query(description="End every session of this user.")] = False
                 ) -> Response:
    """Revoke this sign-in's refresh tokens (or, with ``everywhere``, all sessions and access tokens).

    Ending every session needs a live refresh token (unused, unrevoked, unexpired): an old one, found
    in a backup or a log, must not be enough to sign the owner out everywhere.
    """
    try:
        record = await catalog.get_record("refresh_tokens", RefreshTokenRecord, hash=hash_token(body.refresh_token))
    except NotFound:
        raise Unauthenticated("unknown refresh token") from None
    if everywhere and (record.revoked or record.spent or record.expires_at <= utcnow()):
        raise Unauthenticated("ending every session needs the refresh token of a live sign-in; sign in again")
    await end_sessions(catalog, record.user_id, family=None if everywhere else record.family)
    return Response(status_code=204)


@router.get("/me")
async def me(caller: Caller, catalog: CatalogDep, settings: SettingsDep, usage: Annotated[bool, Query(
        description="Also count what the caller stores and runs against the quotas (reads their versions).")] = False,
        ) -> Me:
    """Who the token belongs to, the roles they hold, the site-wide rights it carries and, with
    ``usage=true``, their quota usage. Counting usage reads every version the caller owns, so a
    sign-in (which asks who it is) does not pay for it."""
    user = await catalog.get_record("users", UserRecord, id=caller.user_id)
    groups, _ = await catalog.find_records("groups", GroupRecord, where={"id": list(caller.group_roles)})
    return Me(**UserRead.model_validate(user, from_attributes=True).model_dump(),
              groups={group.name: list(caller.group_roles[group.id]) for group in groups},
              rights=sorted(caller.rights_in(None)), token=caller.via,
              usage=await quotas.usage(catalog, settings, user.id) if usage else None)


@router.put("/password", status_code=204, responses=problems(Forbidden, InvalidRequest, RateLimited))
async def change_password(body: PasswordChange, request: Request, caller: Caller, catalog: CatalogDep,
                          limiter: LimiterDep, settings: SettingsDep) -> Response:
    """Change one's own password; every session and access token of the user ends (API tokens stay).

    Needs a sign-in with the password: an API token, however narrow, never changes the password.
    """
    require_password_sign_in(caller)
    user = await catalog.get_record("users", UserRecord, id=caller.user_id)
    await limiter.attempt(user.name, _address(request))  # a stolen token must not become a password oracle
    if not await verify_password(user.password_hash, body.current_password):
        raise Forbidden("the current password is wrong")
    await limiter.succeeded(user.name, _address(request))
    await set_password(catalog, settings, user, body.new_password)
    await audit(catalog, caller, "user.password", "user", user.id, user.name)
    return Response(status_code=204)


@router.post("/signup", status_code=201, responses=problems(Forbidden, Conflict, InvalidRequest, RateLimited))
async def signup(body: UserCreate, request: Request, catalog: CatalogDep, limiter: LimiterDep,
                 settings: SettingsDep) -> UserRead:
    """Create one's own account, when the deployment has opened sign-up (closed by default)."""
    if not settings.open_signup:
        raise Forbidden("sign-up is closed on this server; ask an administrator for an account")
    if body.site_roles is not None:
        raise Forbidden("roles are given by administrators, not chosen at sign-up")
    await limiter.signup(_address(request))
    roles = list(settings.default_roles)
    await grantable_rights(catalog, roles)  # the configured defaults must name existing roles
    user = await create_user(catalog, settings, body.name, body.password, roles)
    await catalog.insert_record("audit", _self_audit(user))
    return UserRead.model_validate(user, from_attributes=True)


def _self_audit(user: UserRecord) -> AuditRecord:
    return AuditRecord(actor_id=user.id, actor=user.name, action="user.signup", target_kind="user",
                       target_id=user.id, target=user.name, details={"site_roles": user.site_roles})

