"""Account commands: login/logout/whoami, API tokens, users, groups, roles and the audit log."""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Annotated

import typer

from tuplehub.client.cli import options
from tuplehub.client.cli.options import Yes, client, confirm, group
from tuplehub.client.cli.output import AsJson, Url, done, emit
from tuplehub.client.errors import CommandLineError

PasswordStdin = Annotated[bool, typer.Option("--password-stdin", help="Read the password from stdin.")]
TIME_FORMATS = ["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"]  # no zone: UTC
Time = Annotated[datetime | None, typer.Option(formats=TIME_FORMATS, help="ISO time, UTC if no zone.")]

tokens_app = group("API tokens for scripts and workers.")
users_app = group("User accounts (administrators).")
groups_app = group("Groups and their members.")
roles_app = group("Roles: named bundles of rights.")


def _password(from_stdin: bool, prompt: str = "Password", confirm: bool = False) -> str:
    """The password from stdin, or asked (hidden) on a terminal; without one, a prompt would read a pipe and echo."""
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    if not options.on_terminal():  # looked up here, so tests can stand in a terminal
        raise CommandLineError("there is no terminal to ask for the password",
                               hint="pipe it in and add --password-stdin")
    return typer.prompt(prompt, hide_input=True, confirmation_prompt=confirm)


def login(username: Annotated[str, typer.Option(prompt=True, help="User name.")],
          password_stdin: PasswordStdin = False, url: Url = None, as_json: AsJson = False) -> None:
    """Sign in; the session is kept in the OS keyring or a 0600 file in the config folder."""
    with client(url) as hub:
        me = hub.login(username, _password(password_stdin))
        if as_json:
            emit(me, as_json=True)
        else:
            typer.echo(f"signed in to {hub.url} as {me.name} (session kept in {hub.sessions.where})")


def logout(everywhere: Annotated[bool, typer.Option(help="End every session of this user.")] = False,
           url: Url = None, as_json: AsJson = False) -> None:
    """Sign out: revoke the stored session on the server and forget it here."""
    with client(url) as hub:
        hub.logout(everywhere=everywhere)
        done(f"signed out of {hub.url}", as_json=as_json, signed_out=hub.url)


def whoami(url: Url = None, as_json: AsJson = False) -> None:
    """Who the current credentials belong to, what they may do, and their usage of the server's quotas."""
    with client(url) as hub:
        me = hub.whoami(usage=True)
        emit(me, as_json=as_json, columns=("name", "site_roles", "groups", "token"))
        if not as_json and me.usage is not None:
            typer.echo(f"usage: {me.usage.describe()}")


def audit(actor: Annotated[str | None, typer.Option(help="Who acted (user name).")] = None,
          action: Annotated[str | None, typer.Option(help="e.g. dataset.publish")] = None,
          target: Annotated[str | None, typer.Option(help="Name of what was acted on.")] = None,
          since: Time = None, until: Time = None,
          limit: Annotated[int, typer.Option(help="At most this many.")] = 50,
          offset: Annotated[int, typer.Option(help="Skip this many first.")] = 0,
          url: Url = None, as_json: AsJson = False) -> None:
    """Read the audit log (needs audit:read), newest first."""
    with client(url) as hub:
        emit(hub.audit(actor=actor, action=action, target=target, since=since, until=until, limit=limit,
                       offset=offset), as_json=as_json,
             columns=("created_at", "actor", "action", "target_kind", "target", "details"))


# --- tokens ----------------------------------------------------------------------------------------

@tokens_app.command("create")
def create_token(name: str,
                 right: Annotated[list[str] | None, typer.Option("--right", help="Repeat; default: all yours.")] = None,
                 expires: Annotated[datetime | None, typer.Option(
                     formats=TIME_FORMATS, help="Expiry, ISO time (UTC if no zone).")] = None,
                 no_expiry: Annotated[bool, typer.Option(
                     "--no-expiry", help="Never expire (default: the server's lifetime, 90 days).")] = False,
                 url: Url = None, as_json: AsJson = False) -> None:
    """Create an API token; it is printed once and cannot be shown again."""
    with client(url) as hub:
        created = hub.tokens.create(name, rights=right, expires_at=expires, no_expiry=no_expiry)
        if as_json:
            emit(created, as_json=True)
        else:
            typer.echo(f"{created.token}\n(shown once: store it now; use it as TUPLEHUB_TOKEN)")


@tokens_app.command("list")
def list_tokens(url: Url = None, as_json: AsJson = False) -> None:
    """Your API tokens (never their secrets), with rights, expiry and last use."""
    with client(url) as hub:
        emit(hub.tokens.list(), as_json=as_json,
             columns=("id", "name", "rights", "expires_at", "last_used_at", "revoked"))


@tokens_app.command("revoke")
def revoke_token(token_id: str, yes: Yes = False, url: Url = None, as_json: AsJson = False) -> None:
    """Revoke an API token: scripts using it stop working (asks first; --yes without a terminal)."""
    confirm(f"revoke API token {token_id}", yes)
    with client(url) as hub:
        emit(hub.tokens.revoke(token_id), as_json=as_json, columns=("id", "name", "revoked"))


# --- users -----------------------------------------------------------------------------------------

@users_app.command("create")
def create_user(name: str, role: Annotated[list[str] | None, typer.Option("--role", help="Site role; repeat.")] = None,
                password_stdin: PasswordStdin = False, url: Url = None, as_json: AsJson = False) -> None:
    """Create a user account (asks for the password twice, or reads it from stdin)."""
    with client(url) as hub:
        user = hub.users.create(name, _password(password_stdin, confirm=not password_stdin), site_roles=role)
        emit(user, as_json=as_json, columns=("name", "site_roles", "created_at"))


@users_app.command("list")
def list_users(limit: Annotated[int, typer.Option(help="At most this many.")] = 100,
               offset: Annotated[int, typer.Option(help="Skip this many first.")] = 0,
               url: Url = None, as_json: AsJson = False) -> None:
    """User accounts, with their site roles."""
    with client(url) as hub:
        emit(hub.users.list(limit=limit, offset=offset), as_json=as_json,
             columns=("name", "site_roles", "active", "created_at"))


@users_app.command("roles")
def set_user_roles(name: str, role: Annotated[list[str], typer.Option("--role", help="Site role; repeat.")],
                   url: Url = None, as_json: AsJson = False) -> None:
    """Replace a user's site roles."""
    with client(url) as hub:
        emit(hub.users.set_roles(name, role), as_json=as_json, columns=("name", "site_roles"))


@users_app.command("password")
def reset_password(name: str, password_stdin: PasswordStdin = False, url: Url = None,
                   as_json: AsJson = False) -> None:
    """Set another user's password; their sessions end."""
    with client(url) as hub:
        hub.users.reset_password(name, _password(password_stdin, "New password", confirm=not password_stdin))
        done(f"password of {name} changed; their sessions have ended", as_json=as_json, password_changed=name)


@users_app.command("delete")
def delete_user(name: str, yes: Yes = False, url: Url = None, as_json: AsJson = False) -> None:
    """Delete a user account (asks first; --yes without a terminal)."""
    confirm(f"delete user {name}", yes)
    with client(url) as hub:
        hub.users.delete(name)
        done(f"deleted user {name}", as_json=as_json, deleted="user", name=name)


# --- groups ----------------------------------------------------------------------------------------

@groups_app.command("create")
def create_group(name: str, description: Annotated[str, typer.Option(help="What the group is for.")] = "",
                 url: Url = None, as_json: AsJson = False) -> None:
    """Create a group; you become its group admin."""
    with client(url) as hub:
        emit(hub.groups.create(name, description=description), as_json=as_json,
             columns=("name", "description", "members"))


@groups_app.command("list")
def list_groups(url: Url = None, as_json: AsJson = False) -> None:
    """The groups you belong to (all of them, for administrators)."""
    with client(url) as hub:
        emit(hub.groups.list(), as_json=as_json, columns=("name", "description", "created_at"))


@groups_app.command("show")
def show_group(name: str, url: Url = None, as_json: AsJson = False) -> None:
    """A group and its members with their roles."""
    with client(url) as hub:
        emit(hub.groups.get(name), as_json=as_json, columns=("name", "description", "members"))


@groups_app.command("add")
def add_member(name: str, user: str,
               role: Annotated[list[str] | None, typer.Option("--role", help="Role in the group; repeat.")] = None,
               url: Url = None, as_json: AsJson = False) -> None:
    """Add a member (default role: member) or replace their roles."""
    with client(url) as hub:
        emit(hub.groups.set_member(name, user, role or ["member"]), as_json=as_json, columns=("name", "members"))


@groups_app.command("remove")
def remove_member(name: str, user: str, url: Url = None, as_json: AsJson = False) -> None:
    """Remove a member from a group."""
    with client(url) as hub:
        hub.groups.remove_member(name, user)
        done(f"removed {user} from {name}", as_json=as_json, removed=user, group=name)


@groups_app.command("delete")
def delete_group(name: str, yes: Yes = False, url: Url = None, as_json: AsJson = False) -> None:
    """Delete a group; what was published to it is no longer shared (asks first; --yes without a terminal)."""
    confirm(f"delete group {name}", yes)
    with client(url) as hub:
        hub.groups.delete(name)
        done(f"deleted group {name}", as_json=as_json, deleted="group", name=name)


# --- roles -----------------------------------------------------------------------------------------

@roles_app.command("list")
def list_roles(url: Url = None, as_json: AsJson = False) -> None:
    """Roles and the rights each one grants."""
    with client(url) as hub:
        emit(hub.roles.list(), as_json=as_json, columns=("name", "builtin", "rights"))


@roles_app.command("create")
def create_role(name: str, right: Annotated[list[str], typer.Option("--right", help="Repeat for each right.")],
                description: Annotated[str, typer.Option(help="What the role is for.")] = "",
                url: Url = None, as_json: AsJson = False) -> None:
    """Create a role from rights (see `tuplehub roles list` for the built-in ones)."""
    with client(url) as hub:
        emit(hub.roles.create(name, right, description=description), as_json=as_json, columns=("name", "rights"))


@roles_app.command("delete")
def delete_role(name: str, yes: Yes = False, url: Url = None, as_json: AsJson = False) -> None:
    """Delete a role (asks first; --yes without a terminal)."""
    confirm(f"delete role {name}", yes)
    with client(url) as hub:
        hub.roles.delete(name)
        done(f"deleted role {name}", as_json=as_json, deleted="role", name=name)
