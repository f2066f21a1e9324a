"""The catalog: one interface (:mod:`.base`), an SQLite and a MongoDB implementation."""

from tuplehub.storage.catalog.base import Catalog, open_catalog

__all__ = ["Catalog", "open_catalog"]
