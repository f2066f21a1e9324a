"""Dependencies: how a route gets the catalog, the object store, the queue and its caller.

Everything is opened once in the app's lifespan and read from ``request.state``. Every route
takes its caller from :func:`get_caller`, the single place where access control will plug in.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from pydantic import BaseModel

from tuplehub.storage.catalog import Catalog
from tuplehub.storage.objects import ObjectStore
from tuplehub.storage.queue import Queue
from tuplehub.storage.settings import Settings


class Principal(BaseModel):
    """Who is calling. Until users exist, every request comes from the one local user."""

    id: str
    name: str


LOCAL_USER = Principal(id="local", name="local")


def get_settings(request: Request) -> Settings:
    return request.state.settings


def get_catalog(request: Request) -> Catalog:
    return request.state.catalog


def get_objects(request: Request) -> ObjectStore:
    return request.state.objects


def get_queue(request: Request) -> Queue:
    return request.state.queue


async def get_caller(request: Request) -> Principal:
    return LOCAL_USER


SettingsDep = Annotated[Settings, Depends(get_settings)]
CatalogDep = Annotated[Catalog, Depends(get_catalog)]
ObjectsDep = Annotated[ObjectStore, Depends(get_objects)]
QueueDep = Annotated[Queue, Depends(get_queue)]
Caller = Annotated[Principal, Depends(get_caller)]
