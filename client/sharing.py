"""Changing a record from the client: one implementation for datasets, benchmarks and artifacts."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Generic, Self, TypeVar

import httpx
from pydantic import BaseModel

from tuplehub.client.base import Handle

R = TypeVar("R", bound=BaseModel)


class Shareable(Handle, Generic[R]):
    """A handle on one server record (``record``: what the server last said about it)."""

    def __init__(self, http: httpx.Client, record: R) -> None:
        super().__init__(http)
        self.record = record

    @property
    def _path(self) -> str:
        raise NotImplementedError

    def publish(self, *, groups: Iterable[str] = (), public: bool = False) -> Self:
        """Let members of ``groups`` (and everyone signed in, with ``public``) read it."""
        return self._share("publish", groups, public)

    def unpublish(self, *, groups: Iterable[str] = (), public: bool = False) -> Self:
        """Withdraw it from ``groups`` (and from public view, with ``public``)."""
        return self._share("unpublish", groups, public)

    def delete(self) -> None:
        """Delete it on the server (a dataset with every version; of a benchmark or an artifact, the
        caller's record)."""
        self._call("DELETE", self._path)

    def _share(self, action: str, groups: Iterable[str], public: bool) -> Self:
        return self._change("POST", f"{self._path}/{action}", json={"groups": list(groups), "public": public})

    def _change(self, method: str, path: str, **options: Any) -> Self:
        """Send a change and take the record the server answers with."""
        self.record = self._call(method, path, type(self.record), **options)
        return self
