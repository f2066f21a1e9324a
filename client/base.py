"""One way for the client to ask the server something: send, raise the problem, read the answer.

Every handle (a collection such as ``hub.datasets``, or one record: a dataset, a job) holds the
client's connection and asks through :meth:`Handle._call`; code outside a handle (the upload
helpers, ``whoami``) calls :func:`call`. Options go to httpx as they are, so a POST sent with
``extensions=IDEMPOTENT`` keeps that mark and the connection's retry policy (:mod:`.retries`)
applies unchanged. Streamed answers (downloads) and requests that treat an error as an answer
(signing out of a dead session) use :func:`~tuplehub.client.errors.raise_for_problem` directly.
"""

from __future__ import annotations

from typing import Any, TypeVar, overload

import httpx
from pydantic import BaseModel

from tuplehub.client.errors import raise_for_problem

M = TypeVar("M", bound=BaseModel)


@overload
def call(http: httpx.Client, method: str, path: str, answer: type[M], **options: Any) -> M: ...
@overload
def call(http: httpx.Client, method: str, path: str, answer: None = None, **options: Any) -> Any: ...
def call(http: httpx.Client, method: str, path: str, answer: type[M] | None = None, **options: Any) -> Any:
    """The answer to ``method path``, validated as ``answer`` when given, else its JSON (None for a 204).

    A problem response raises the error the server raised; ``options`` are httpx's (``json``,
    ``params``, ``extensions``, ``timeout``...).
    """
    response = http.request(method, path, **options)
    raise_for_problem(response)
    body = None if response.status_code == 204 else response.json()
    return body if answer is None else answer.model_validate(body)


def given(**values: Any) -> dict[str, Any]:
    """The values that are not None: query parameters and bodies leave out what the caller did not give."""
    return {key: value for key, value in values.items() if value is not None}


class Handle:
    """A part of the API bound to the client's connection."""

    def __init__(self, http: httpx.Client) -> None:
        self._http = http

    @overload
    def _call(self, method: str, path: str, answer: type[M], **options: Any) -> M: ...
    @overload
    def _call(self, method: str, path: str, answer: None = None, **options: Any) -> Any: ...
    def _call(self, method: str, path: str, answer: type[M] | None = None, **options: Any) -> Any:
        return call(self._http, method, path, answer, **options)
