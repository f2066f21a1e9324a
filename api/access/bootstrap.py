"""First start: seed the default roles and create the first admin from settings.

There is no default password anywhere. A deployment must set ``TUPLEHUB_ADMIN_PASSWORD`` for its
first start; the embedded default generates one and writes it, with the user name, to a file only
its user can read (``<config>/embedded/<hash of data dir>.json``), which the CLI and the demo read.
"""

from __future__ import annotations

import contextlib
import secrets

from tuplehub.api.access.passwords import check_password_policy, hash_password
from tuplehub.storage.access import DEFAULT_ROLES, RoleRecord, UserRecord
from tuplehub.storage.catalog import Catalog
from tuplehub.storage.errors import ConfigError, Conflict, InvalidRequest, NotFound
from tuplehub.storage.paths import embedded_credentials_file, read_json, write_private
from tuplehub.storage.settings import Settings


async def seed_roles(catalog: Catalog) -> None:
    """Insert missing default roles and bring existing ones up to this version's definition."""
    for name, (rights, description) in DEFAULT_ROLES.items():
        role = RoleRecord(name=name, rights=sorted(rights), description=description, builtin=True)
        try:
            await catalog.insert_record("roles", role, unique=name)
        except Conflict:  # seeded before (or by another replica just now)
            stored = await catalog.get_record("roles", RoleRecord, name=name)
            if set(stored.rights) != set(rights) or stored.description != description:
                await catalog.update_record("roles", RoleRecord, stored.id, rights=role.rights,
                                            description=description, builtin=True)


async def bootstrap(catalog: Catalog, settings: Settings) -> None:
    await seed_roles(catalog)
    if settings.admin_password is None and settings.embedded_catalog:
        await _embedded_admin(catalog, settings)
        return
    _, user_count = await catalog.find_records("users", UserRecord, limit=1)
    if user_count:
        return
    if settings.admin_password is None:
        raise ConfigError("first start of a deployment: set TUPLEHUB_ADMIN_PASSWORD (and TUPLEHUB_ADMIN_USERNAME, "
                          "default 'admin') to create the first admin")
    password = settings.admin_password.get_secret_value()
    try:
        check_password_policy(password, username=settings.admin_username, min_length=settings.password_min_length)
    except InvalidRequest as exc:
        raise ConfigError(f"TUPLEHUB_ADMIN_PASSWORD: {exc.detail}") from exc
    await _create_admin(catalog, settings.admin_username, password)


async def _create_admin(catalog: Catalog, name: str, password: str) -> None:
    with contextlib.suppress(Conflict):  # another replica created it first
        await catalog.insert_record("users", UserRecord(name=name, password_hash=hash_password(password),
                                                        site_roles=["admin"]), unique=name)


async def _embedded_admin(catalog: Catalog, settings: Settings) -> None:
    """The local admin of the embedded default; its password is regenerated if its file was lost."""
    path = embedded_credentials_file(settings.data_dir)
    stored = read_json(path)
    name = settings.admin_username
    try:
        admin = await catalog.get_record("users", UserRecord, name=name)
    except NotFound:
        admin = None
    if admin is not None and stored is not None and stored.get("username") == name:
        return
    password = secrets.token_urlsafe(24)
    write_private(path, {"username": name, "password": password, "data_dir": str(settings.data_dir.resolve())})
    if admin is None:
        await _create_admin(catalog, name, password)
    else:
        await catalog.update_record("users", UserRecord, admin.id, password_hash=hash_password(password))
