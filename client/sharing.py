"""Changing a record from the client: one implementation for datasets, benchmarks and artifacts."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Generic, Self, TypeVar

import httpx
from pydantic import BaseModel

from tuplehub.client.errors import raise_for_problem

R = TypeVar("R", bound=BaseModel)


class Shareable(Generic[R]):
    """A handle on one server record (``record``: what the server last said about it)."""

    def __init__(self, http: httpx.Client, record: R) -> None:
        self._http = http
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
        raise_for_problem(self._http.delete(self._path))

    def _share(self, action: str, groups: Iterable[str], public: bool) -> Self:
        return self._apply(self._http.post(f"{self._path}/{action}", json={"groups": list(groups), "public": public}))

    def _apply(self, response: httpx.Response) -> Self:
        """Take the record the server answered with (after a change), or raise its problem."""
        raise_for_problem(response)
        self.record = type(self.record).model_validate(response.json())
        return self
