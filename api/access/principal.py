"""Who is calling: the :class:`~tuplehub.storage.permissions.Principal` behind a request's bearer token."""

from __future__ import annotations

from datetime import timedelta

from tuplehub.api.access.tokens import API_TOKEN_PREFIX, REFRESH_PREFIX, Signer, hash_token
from tuplehub.storage.access import ApiTokenRecord, UserRecord
from tuplehub.storage.catalog import Catalog
from tuplehub.storage.errors import NotFound, Unauthenticated
from tuplehub.storage.models import utcnow
from tuplehub.storage.permissions import ANONYMOUS, Principal, principal_of

_LAST_USED_RESOLUTION = timedelta(minutes=1)  # write "last used" at most this often per token


async def authenticate(catalog: Catalog, signer: Signer, authorization: str | None) -> Principal:
    """The caller behind an ``Authorization`` header; anonymous without one, 401 for a bad one."""
    if not authorization:
        return ANONYMOUS
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated("use 'Authorization: Bearer <token>'")
    if token.startswith(REFRESH_PREFIX):
        raise Unauthenticated("a refresh token cannot be used as an access token; exchange it at /auth/refresh")
    if token.startswith(API_TOKEN_PREFIX):
        return await _from_api_token(catalog, token)
    claims = signer.verify(token)
    user = await _active_user(catalog, claims.user_id)
    if claims.issued_at < user.sessions_valid_after.timestamp():
        raise Unauthenticated("the access token was revoked (sign-out or password change); sign in again")
    return await principal_of(catalog, user)


async def _active_user(catalog: Catalog, user_id: str) -> UserRecord:
    try:
        user = await catalog.get_record("users", UserRecord, id=user_id)
    except NotFound:
        raise Unauthenticated("the token's user no longer exists") from None
    if not user.active:
        raise Unauthenticated("the token's user is deactivated")
    return user


async def _from_api_token(catalog: Catalog, token: str) -> Principal:
    try:
        record = await catalog.get_record("api_tokens", ApiTokenRecord, hash=hash_token(token))
    except NotFound:
        raise Unauthenticated("unknown API token") from None
    now = utcnow()
    if record.revoked:
        raise Unauthenticated("the API token was revoked")
    if record.expires_at is not None and record.expires_at <= now:
        raise Unauthenticated("the API token has expired")
    user = await _active_user(catalog, record.user_id)
    if record.last_used_at is None or now - record.last_used_at > _LAST_USED_RESOLUTION:
        await catalog.update_record("api_tokens", ApiTokenRecord, record.id, last_used_at=now)
    return await principal_of(catalog, user, token=record)
