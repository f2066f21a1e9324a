"""Accounts from the client: sign-in state, API tokens, users, groups, roles and the audit log."""

from __future__ import annotations

import builtins
from datetime import UTC, datetime

import httpx

from tuplehub.client.base import Handle, call, given
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


def _iso(when: datetime | None) -> str | None:
    """A time for the API, which wants a zone; a naive time is taken as UTC."""
    if when is None:
        return None
    return (when if when.tzinfo is not None else when.replace(tzinfo=UTC)).isoformat()


class Tokens(Handle):
    """API tokens for scripts: ``hub.tokens.create("ci", rights=["dataset:read"])``."""

    def create(self, name: str, *, rights: list[str] | None = None, expires_at: datetime | None = None,
               no_expiry: bool = False) -> ApiTokenCreated:
        """A new API token; without ``expires_at`` it expires after the server's default lifetime."""
        body = given(name=name, rights=rights, expires_at=_iso(expires_at), no_expiry=no_expiry or None)
        return self._call("POST", "/tokens", ApiTokenCreated, json=body)

    def list(self) -> list[ApiTokenRead]:
        return [ApiTokenRead.model_validate(item) for item in self._call("GET", "/tokens")]

    def revoke(self, token_id: str) -> ApiTokenRead:
        return self._call("DELETE", f"/tokens/{token_id}", ApiTokenRead)


class Users(Handle):
    def create(self, name: str, password: str, *, site_roles: list[str] | None = None) -> UserRead:
        body = given(name=name, password=password, site_roles=site_roles)
        return self._call("POST", "/users", UserRead, json=body)

    def list(self, *, offset: int = 0, limit: int = 100) -> Page[UserRead]:
        return self._call("GET", "/users", Page[UserRead], params=given(offset=offset, limit=limit))

    def get(self, name: str) -> UserRead:
        return self._call("GET", f"/users/{name}", UserRead)

    def set_roles(self, name: str, site_roles: builtins.list[str]) -> UserRead:
        return self._call("PUT", f"/users/{name}/roles", UserRead, json={"site_roles": site_roles})

    def reset_password(self, name: str, new_password: str) -> None:
        self._call("PUT", f"/users/{name}/password", json={"new_password": new_password})

    def delete(self, name: str) -> None:
        self._call("DELETE", f"/users/{name}")


class Groups(Handle):
    def create(self, name: str, *, description: str = "") -> GroupRead:
        return self._call("POST", "/groups", GroupRead, json={"name": name, "description": description})

    def list(self, *, offset: int = 0, limit: int = 100) -> Page[GroupRead]:
        return self._call("GET", "/groups", Page[GroupRead], params=given(offset=offset, limit=limit))

    def get(self, name: str) -> GroupRead:
        return self._call("GET", f"/groups/{name}", GroupRead)

    def set_member(self, name: str, user: str, roles: builtins.list[str]) -> GroupRead:
        return self._call("PUT", f"/groups/{name}/members/{user}", GroupRead, json={"roles": roles})

    def remove_member(self, name: str, user: str) -> None:
        self._call("DELETE", f"/groups/{name}/members/{user}")

    def delete(self, name: str) -> None:
        self._call("DELETE", f"/groups/{name}")


class Roles(Handle):
    def list(self) -> list[RoleRecord]:
        return [RoleRecord.model_validate(item) for item in self._call("GET", "/roles")]

    def create(self, name: str, rights: builtins.list[str], *, description: str = "") -> RoleRecord:
        return self._call("POST", "/roles", RoleRecord, json={"name": name, "rights": rights,
                                                               "description": description})

    def delete(self, name: str) -> None:
        self._call("DELETE", f"/roles/{name}")


def whoami(http: httpx.Client, *, usage: bool = False) -> Me:
    return call(http, "GET", "/auth/me", Me, params={"usage": "true"} if usage else None)


def read_audit(http: httpx.Client, *, actor: str | None = None, action: str | None = None,
               target: str | None = None, target_kind: str | None = None, since: datetime | None = None,
               until: datetime | None = None, offset: int = 0, limit: int = 100) -> Page[AuditRecord]:
    params = given(actor=actor, action=action, target=target, target_kind=target_kind, offset=offset, limit=limit,
                     since=_iso(since), until=_iso(until))
    return call(http, "GET", "/audit", Page[AuditRecord], params=params)
