"""How the client signs its requests: a fixed token, or a session that refreshes itself.

An access token lives minutes; :class:`SessionAuth` refreshes it shortly before it expires (read
from the token's own ``exp``, which needs no key) and once more if the server answers 401, then
stores the rotated pair so the next process starts from it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import time
from collections.abc import Generator

import httpx

from tuplehub.client.sessions import Session, SessionStore

REFRESH_MARGIN_S = 60.0


class BearerAuth(httpx.Auth):
    """A fixed token: an API token, or an access token the caller manages."""

    def __init__(self, token: str) -> None:
        self.token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self.token}"
        yield request


def expires_at(access_token: str) -> float:
    """The ``exp`` of a JWT, unverified (only used to decide when to refresh); 0 if unreadable."""
    try:
        payload = access_token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return float(claims["exp"])
    except (IndexError, ValueError, KeyError, TypeError):
        return 0.0


class SessionAuth(httpx.Auth):
    """Not ``requires_response_body``: that would buffer every streamed download; the refresh
    response is read explicitly instead (this client is synchronous)."""

    def __init__(self, url: str, session: Session, store: SessionStore | None, *, api_url: str,
                 password: str | None = None) -> None:
        self.url = url
        self.session = session
        self.store = store
        self.api_url = api_url
        self._password = password  # only for the embedded local admin, whose password is on disk anyway
        self._lock = threading.Lock()

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if expires_at(self.session.access_token) - time.time() < REFRESH_MARGIN_S:
            yield from self._refresh(self.session.access_token)
        request.headers["Authorization"] = f"Bearer {self.session.access_token}"
        response = yield request
        if response.status_code == 401:
            used = self.session.access_token
            yield from self._refresh(used)
            if self.session.access_token != used:
                request.headers["Authorization"] = f"Bearer {self.session.access_token}"
                yield request

    def _refresh(self, stale: str) -> Generator[httpx.Request, httpx.Response, None]:
        """Swap the refresh token for a new pair, unless another thread or process already did."""
        with self._lock, self.store.locked() if self.store else contextlib.nullcontext():
            if self.store is not None:
                stored = self.store.load(self.url)
                if stored is not None and stored.access_token != stale:
                    self.session = stored  # refreshed by someone else meanwhile
                    return
            if self.session.access_token != stale:
                return
            response = yield httpx.Request("POST", f"{self.api_url}/auth/refresh",
                                           json={"refresh_token": self.session.refresh_token})
            if response.status_code != 200 and self._password is not None:
                response = yield httpx.Request("POST", f"{self.api_url}/auth/login", json={
                    "username": self.session.username, "password": self._password})
            if response.status_code != 200:
                return  # the original request then fails with the server's 401, which says why
            pair = json.loads(response.read())
            self.session = Session(self.session.username, pair["access_token"], pair["refresh_token"])
            if self.store is not None:
                self.store.save(self.url, self.session)

