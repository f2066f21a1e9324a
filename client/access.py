"""Accounts from the client: sign-in state, API tokens, users, groups, roles and the audit log."""

from __future__ import annotations

import builtins  # inside a class with a list() method, "list" is that method
from datetime import UTC, datetime
from typing import Any

import httpx

from tuplehub.client.errors import raise_for_problem
from tuplehub.storage.access import (
    ApiTokenCreated,
    ApiTokenRead,
    AuditRecord,
    GroupRead,
    Me,
    RoleRecord,
    UserRead,
)
from tuplehub.storage.models import Page


def _call(http: httpx.Client, method: str, path: str, **kwargs: Any) -> Any:
    response = http.request(method, path, **kwargs)
    raise_for_problem(response)
    return None if response.status_code == 204 else response.json()


def _params(**values: Any) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


def _iso(when: datetime | None) -> str | None:
    """A time for the API, which wants a zone; a naive time is taken as UTC."""
    if when is None:
        return None
    return (when if when.tzinfo is not None else when.replace(tzinfo=UTC)).isoformat()


class Tokens:
    """API tokens for scripts: ``hub.tokens.create("ci", rights=["dataset:read"])``."""

    def __init__(self, http: httpx.Client) -> None:
        self._http = http

    def create(self, name: str, *, rights: list[str] | None = None, expires_at: datetime | None = None,
               no_expiry: bool = False) -> ApiTokenCreated:
        """A new API token; without ``expires_at`` it expires after the server's default lifetime."""
        body = _params(name=name, rights=rights, expires_at=_iso(expires_at), no_expiry=no_expiry or None)
        return ApiTokenCreated.model_validate(_call(self._http, "POST", "/tokens", json=body))

    def list(self) -> list[ApiTokenRead]:
        return [ApiTokenRead.model_validate(item) for item in _call(self._http, "GET", "/tokens")]

    def revoke(self, token_id: str) -> ApiTokenRead:
        return ApiTokenRead.model_validate(_call(self._http, "DELETE", f"/tokens/{token_id}"))


class Users:
    def __init__(self, http: httpx.Client) -> None:
        self._http = http

    def create(self, name: str, password: str, *, site_roles: list[str] | None = None) -> UserRead:
        body = _params(name=name, password=password, site_roles=site_roles)
        return UserRead.model_validate(_call(self._http, "POST", "/users", json=body))

    def list(self, *, offset: int = 0, limit: int = 100) -> Page[UserRead]:
        return Page[UserRead].model_validate(_call(self._http, "GET", "/users", params=_params(
            offset=offset, limit=limit)))

    def get(self, name: str) -> UserRead:
        return UserRead.model_validate(_call(self._http, "GET", f"/users/{name}"))

    def set_roles(self, name: str, site_roles: builtins.list[str]) -> UserRead:
        return UserRead.model_validate(_call(self._http, "PUT", f"/users/{name}/roles",
                                             json={"site_roles": site_roles}))

    def reset_password(self, name: str, new_password: str) -> None:
        _call(self._http, "PUT", f"/users/{name}/password", json={"new_password": new_password})

    def delete(self, name: str) -> None:
        _call(self._http, "DELETE", f"/users/{name}")


class Groups:
    def __init__(self, http: httpx.Client) -> None:
        self._http = http

    def create(self, name: str, *, description: str = "") -> GroupRead:
        return GroupRead.model_validate(_call(self._http, "POST", "/groups",
                                              json={"name": name, "description": description}))

    def list(self, *, offset: int = 0, limit: int = 100) -> Page[GroupRead]:
        return Page[GroupRead].model_validate(_call(self._http, "GET", "/groups", params=_params(
            offset=offset, limit=limit)))

    def get(self, name: str) -> GroupRead:
        return GroupRead.model_validate(_call(self._http, "GET", f"/groups/{name}"))

    def set_member(self, name: str, user: str, roles: builtins.list[str]) -> GroupRead:
        return GroupRead.model_validate(_call(self._http, "PUT", f"/groups/{name}/members/{user}",
                                              json={"roles": roles}))

    def remove_member(self, name: str, user: str) -> None:
        _call(self._http, "DELETE", f"/groups/{name}/members/{user}")

    def delete(self, name: str) -> None:
        _call(self._http, "DELETE", f"/groups/{name}")


class Roles:
    def __init__(self, http: httpx.Client) -> None:
        self._http = http

    def list(self) -> list[RoleRecord]:
        return [RoleRecord.model_validate(item) for item in _call(self._http, "GET", "/roles")]

    def create(self, name: str, rights: builtins.list[str], *, description: str = "") -> RoleRecord:
        return RoleRecord.model_validate(_call(self._http, "POST", "/roles", json={
            "name": name, "rights": rights, "description": description}))

    def delete(self, name: str) -> None:
        _call(self._http, "DELETE", f"/roles/{name}")


def whoami(http: httpx.Client, *, usage: bool = False) -> Me:
    return Me.model_validate(_call(http, "GET", "/auth/me", params={"usage": "true"} if usage else None))


def read_audit(http: httpx.Client, *, actor: str | None = None, action: str | None = None,
               target: str | None = None, target_kind: str | None = None, since: datetime | None = None,
               until: datetime | None = None, offset: int = 0, limit: int = 100) -> Page[AuditRecord]:
    params = _params(actor=actor, action=action, target=target, target_kind=target_kind, offset=offset, limit=limit,
                     since=_iso(since), until=_iso(until))
    return Page[AuditRecord].model_validate(_call(http, "GET", "/audit", params=params))
