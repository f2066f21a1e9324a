"""API tokens for scripts and workers: shown once, stored as a hash, narrowed to chosen rights."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter

from tuplehub.api.access.audit import audit
from tuplehub.api.access.tokens import API_TOKEN_PREFIX, new_opaque
from tuplehub.api.deps import Caller, CatalogDep, SettingsDep
from tuplehub.api.problems import problems
from tuplehub.storage.access import ApiTokenCreate, ApiTokenCreated, ApiTokenRead, ApiTokenRecord, Right
from tuplehub.storage.catalog import Catalog
from tuplehub.storage.errors import Forbidden, InvalidRequest, NotFound
from tuplehub.storage.models import utcnow
from tuplehub.storage.permissions import Principal

router = APIRouter(prefix="/tokens", tags=["tokens"])


# What an owner may do to their own content; a token may carry these even where no role grants them,
# since they only ever apply to the owner's items.
OWNER_RIGHTS = Right.content("create", "read", "delete", "publish")


def _read(record: ApiTokenRecord) -> ApiTokenRead:
    return ApiTokenRead.model_validate(record, from_attributes=True)


def _require_full_credential(caller: Principal) -> None:
    """A narrowed token must not see, mint or revoke the tokens that carry more than it does."""
    if caller.token_rights is not None:
        raise Forbidden("managing API tokens needs a sign-in or an API token with all of your rights")


@router.post("", status_code=201, responses=problems(Forbidden, InvalidRequest))
async def create_token(body: ApiTokenCreate, caller: Caller, catalog: CatalogDep,
                       settings: SettingsDep) -> ApiTokenCreated:
    """A new token with some or all of the caller's rights; the response is the only time it is shown.

    Without ``expires_at`` it expires after the server's default lifetime, unless ``no_expiry``
    is set. A token made with another API token expires no later than that one.
    """
    _require_full_credential(caller)
    held = caller.all_rights() | OWNER_RIGHTS
    if body.rights is not None and not set(body.rights) <= held:
        missing = sorted(set(body.rights) - held)
        raise Forbidden(f"a token cannot carry rights you do not hold: {', '.join(missing)}")
    if body.expires_at is not None and body.expires_at <= utcnow():
        raise InvalidRequest("expires_at must lie in the future", field="expires_at")
    expires_at = body.expires_at
    if expires_at is None and not body.no_expiry:  # a forgotten token stops working on its own
        expires_at = utcnow() + timedelta(days=settings.api_token_ttl_days)
    if caller.token_expires_at is not None:
        expires_at = min(expires_at or caller.token_expires_at, caller.token_expires_at)
    rights = sorted(set(body.rights)) if body.rights is not None else None
    token, digest = new_opaque(API_TOKEN_PREFIX)
    record = ApiTokenRecord(hash=digest, user_id=caller.user_id, name=body.name, rights=rights,
                            expires_at=expires_at, parent=caller.token_id)
    await catalog.insert_record("api_tokens", record, unique=digest)
    await audit(catalog, caller, "token.create", "token", record.id, record.name, rights=rights)
    return ApiTokenCreated(**_read(record).model_dump(), token=token)


@router.get("", responses=problems(Forbidden))
async def list_tokens(caller: Caller, catalog: CatalogDep) -> list[ApiTokenRead]:
    """The caller's tokens, with when each was last used (never the token itself)."""
    _require_full_credential(caller)
    records, _ = await catalog.find_records("api_tokens", ApiTokenRecord, where={"user_id": caller.id})
    return [_read(record) for record in records]


@router.delete("/{token_id}", responses=problems(NotFound, Forbidden))
async def revoke_token(token_id: str, caller: Caller, catalog: CatalogDep) -> ApiTokenRead:
    """Revoke one of the caller's tokens, and those made with it; it is refused from the next request on.

    A thief holding an API token could otherwise mint a child that outlives the token's revocation.
    """
    _require_full_credential(caller)
    try:
        record = await catalog.get_record("api_tokens", ApiTokenRecord, id=token_id, user_id=caller.id)
    except NotFound:
        raise NotFound(f"no token {token_id!r}", token=token_id) from None
    revoked = await catalog.update_record("api_tokens", ApiTokenRecord, record.id, revoked=True)
    await audit(catalog, caller, "token.revoke", "token", record.id, record.name)
    await _revoke_children(catalog, caller, record.id)
    return _read(revoked or record)


async def _revoke_children(catalog: Catalog, caller: Principal, parent: str) -> None:
    """Revoke every token made, directly or through others, with the token ``parent``."""
    pending = [parent]
    while pending:
        children, _ = await catalog.find_records("api_tokens", ApiTokenRecord,
                                                 where={"user_id": caller.user_id, "parent": pending.pop()})
        for child in children:
            if not child.revoked:
                await catalog.update_record("api_tokens", ApiTokenRecord, child.id, revoked=True)
                await audit(catalog, caller, "token.revoke", "token", child.id, child.name, parent=child.parent)
            pending.append(child.id)
