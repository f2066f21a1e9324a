"""Dependencies: how a route gets the catalog, the object store, the queue and its caller.

Everything is opened once in the app's lifespan and read from ``request.state``. Every route
takes its caller from :func:`get_caller` (signed in) or :func:`get_reader` (anonymous allowed
when the deployment enables anonymous reads): the one place a request becomes a principal.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from tuplehub.api.access.principal import authenticate
from tuplehub.api.access.ratelimit import LoginLimiter
from tuplehub.api.access.tokens import Signer
from tuplehub.storage import logs
from tuplehub.storage.catalog import Catalog
from tuplehub.storage.errors import Unauthenticated
from tuplehub.storage.objects import ObjectStore
from tuplehub.storage.permissions import Principal
from tuplehub.storage.queue import Queue
from tuplehub.storage.settings import Settings


def get_settings(request: Request) -> Settings:
    return request.state.settings


def get_catalog(request: Request) -> Catalog:
    return request.state.catalog


def get_objects(request: Request) -> ObjectStore:
    return request.state.objects


def get_queue(request: Request) -> Queue:
    return request.state.queue


def get_signer(request: Request) -> Signer:
    return request.state.signer


def get_limiter(request: Request) -> LoginLimiter:
    return request.state.limiter


# Declares the bearer scheme in the OpenAPI document (the docs page's "Authorize"); the header itself is
# read by :func:`authenticate`, which words its own errors.
BEARER = HTTPBearer(auto_error=False, scheme_name="bearer", description=(
    "An access token from POST /api/v1/auth/login, or an API token (tht_...) from POST /api/v1/tokens."))
Documented = Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)]


async def get_reader(request: Request, _: Documented) -> Principal:
    """The caller of a read route: anonymous only where the deployment allows anonymous reads."""
    caller = await authenticate(request.state.catalog, request.state.signer, request.headers.get("authorization"))
    logs.annotate(user=caller.id)
    if not caller.signed_in and not request.state.settings.anonymous_read:
        raise Unauthenticated("sign in first: send 'Authorization: Bearer <token>'")
    return caller


async def get_caller(request: Request, _: Documented) -> Principal:
    caller = await authenticate(request.state.catalog, request.state.signer, request.headers.get("authorization"))
    logs.annotate(user=caller.id)
    if not caller.signed_in:
        raise Unauthenticated("sign in first: send 'Authorization: Bearer <token>'")
    return caller


SettingsDep = Annotated[Settings, Depends(get_settings)]
CatalogDep = Annotated[Catalog, Depends(get_catalog)]
ObjectsDep = Annotated[ObjectStore, Depends(get_objects)]
QueueDep = Annotated[Queue, Depends(get_queue)]
SignerDep = Annotated[Signer, Depends(get_signer)]
LimiterDep = Annotated[LoginLimiter, Depends(get_limiter)]
Caller = Annotated[Principal, Depends(get_caller)]
Reader = Annotated[Principal, Depends(get_reader)]

# One bound for every paged listing: an offset past this is no real page, and without a bound a huge
# one overflows the catalogs' 64-bit integers (SQLite and MongoDB) into a 500.
MAX_OFFSET = 10**9
MAX_LIMIT = 1000
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Items to skip.")]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Most items to return.")]
