"""An in-memory stand-in for PyMongo's async API, for running the catalog suite without a server.

It wraps mongomock (synchronous, in memory) in the async shapes ``MongoCatalog`` uses:
``await collection.method(...)`` and ``find(...).sort().skip().limit().to_list()``. Only the
calls the catalog makes are provided, so a new call fails loudly here instead of silently
differing from a real server; the same suite runs against a real MongoDB when
``TUPLEHUB_TEST_MONGODB_URL`` is set.
"""

from __future__ import annotations

from typing import Any

import mongomock


class AsyncCursor:
    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor

    def sort(self, *args: Any) -> AsyncCursor:
        self._cursor = self._cursor.sort(*args)
        return self

    def skip(self, count: int) -> AsyncCursor:
        self._cursor = self._cursor.skip(count)
        return self

    def limit(self, count: int) -> AsyncCursor:
        self._cursor = self._cursor.limit(count)
        return self

    async def to_list(self, length: int | None = None) -> list[dict[str, Any]]:
        docs = list(self._cursor)
        return docs if length is None else docs[:length]

    def __aiter__(self) -> AsyncCursor:
        return self

    async def __anext__(self) -> dict[str, Any]:
        try:
            return next(self._cursor)
        except StopIteration:
            raise StopAsyncIteration from None


class AsyncCollection:
    _ASYNC = ("insert_one", "insert_many", "find_one", "replace_one", "update_one", "delete_many", "count_documents",
              "distinct", "create_index",
              "find_one_and_update", "delete_one")

    def __init__(self, collection: Any) -> None:
        self._collection = collection

    def find(self, *args: Any, **kwargs: Any) -> AsyncCursor:
        return AsyncCursor(self._collection.find(*args, **kwargs))

    def __getattr__(self, name: str) -> Any:
        if name not in self._ASYNC:
            raise AttributeError(f"the MongoDB double does not provide {name!r}")
        method = getattr(self._collection, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            return method(*args, **kwargs)

        return call


class AsyncDatabase:
    def __init__(self, database: Any) -> None:
        self._database = database
        self.name: str = database.name

    def __getitem__(self, name: str) -> AsyncCollection:
        return AsyncCollection(self._database[name])

    def __getattr__(self, name: str) -> AsyncCollection:
        if name.startswith("_"):
            raise AttributeError(name)
        return self[name]

    async def command(self, name: str) -> dict[str, Any]:
        return self._database.command(name)

    async def list_collection_names(self) -> list[str]:
        return self._database.list_collection_names()


def memory_database(name: str = "tuplehub") -> AsyncDatabase:
    """A fresh, empty database that behaves like ``AsyncMongoClient(tz_aware=True)[name]``."""
    return AsyncDatabase(mongomock.MongoClient(tz_aware=True)[name])
