"""``tuplehub deploy init``: the ``.env`` of a compose deployment (``compose/compose.yaml``), with fresh secrets.

Nothing in the repository holds a default secret and ``compose.yaml`` refuses to start without
them, so this command is the first step of every deployment. It writes:

- ``DIR/.env`` (0600, created with ``O_EXCL``: never readable by others, not even for a moment):
  the domain, the TLS mode, and every secret (signing key, admin password, MongoDB, S3 and Redis
  credentials, the metrics token), each from :func:`secrets.token_urlsafe` or ``token_hex``;
- ``DIR/secrets/metrics-token``: the metrics token again, for Prometheus, which reads no environment
  variables. It runs as ``nobody`` and compose mounts the file as it is, so the file is 0444 and the
  folder that holds it 0700: other accounts on the host cannot reach it.

Standard library only: ``tuplehub --help`` imports this module.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import secrets
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from tuplehub.client.cli.options import group
from tuplehub.client.cli.output import AsJson, done
from tuplehub.client.errors import CommandLineError

ENV_FILE = ".env"
TOKEN_FILE = Path("secrets") / "metrics-token"
COMPOSE_FILE = "compose.yaml"
ADMIN_USERNAME = "admin"
MONGO_USER = "tuplehub"
# A DNS name of letters, digits and hyphens per label; s3.<domain> must be one too.
_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_DOMAIN = re.compile(rf"^{_LABEL}(\.{_LABEL})*$")
# What an ACME account e-mail may hold here: the value goes unquoted into .env and the Caddyfile.
_EMAIL = re.compile(r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")

deploy_app = group("Set up a deployment of tuplehub with docker compose (compose/compose.yaml); see "
                   "docs/deployment.md.")


def fresh_secrets() -> dict[str, str]:
    """Every secret of a deployment, new. URL-safe characters only: they go into mongodb:// and redis:// URLs
    unescaped. MinIO takes an access key of 3 to 20 characters and a secret key of 8 to 40."""
    return {
        "TUPLEHUB_JWT_SECRET": secrets.token_urlsafe(48),
        "TUPLEHUB_ADMIN_PASSWORD": secrets.token_urlsafe(18),
        "TUPLEHUB_MONGO_USER": MONGO_USER,
        "TUPLEHUB_MONGO_PASSWORD": secrets.token_urlsafe(24),
        "TUPLEHUB_S3_ACCESS_KEY_ID": secrets.token_hex(10),
        "TUPLEHUB_S3_SECRET_ACCESS_KEY": secrets.token_urlsafe(30),
        "TUPLEHUB_REDIS_PASSWORD": secrets.token_urlsafe(24),
        "TUPLEHUB_METRICS_TOKEN": secrets.token_urlsafe(32),
    }


def default_dir() -> Path:
    """Beside the compose file: here if it is here, else ``compose/`` of a checkout."""
    if Path(COMPOSE_FILE).is_file() or not (Path("compose") / COMPOSE_FILE).is_file():
        return Path(".")
    return Path("compose")


def checked_domain(domain: str, *, option: str) -> str:
    name = domain.strip().rstrip(".").lower()
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(name)
        raise CommandLineError(f"{option} {domain!r} is an address; the proxy needs a name (and s3.NAME for the "
                               "object store)", hint="give the machine a name in your DNS, or in each client's "
                               "/etc/hosts, and pass it with --domain")
    if not _DOMAIN.match(name) or len(name) > 250:
        raise CommandLineError(f"{option} {domain!r} is not a DNS name",
                               hint="use letters, digits, '-' and dots, e.g. --domain hub.example.org")
    return name


def _env_text(values: dict[str, str]) -> str:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"# tuplehub deployment, written by `tuplehub deploy init` on {stamp}.",
             "# Secrets: keep this file 0600 and back it up with the data (docs/deployment.md). MongoDB and",
             "# MinIO take their credentials at their first start only: changing them later needs the same",
             "# change inside those services.",
             *(f"{key}={value}" for key, value in values.items()),
             "# Optional, with these defaults:",
             "# TUPLEHUB_BIND=0.0.0.0",
             "# TUPLEHUB_HTTP_PORT=80",
             "# (another HTTPS port: add :PORT to TUPLEHUB_S3_PUBLIC_ENDPOINT_URL too)",
             "# TUPLEHUB_HTTPS_PORT=443",
             "# TUPLEHUB_IMAGE=localhost/tuplehub:latest",
             "# TUPLEHUB_TORCH_IMAGE=localhost/tuplehub:latest-torch",
             "# TUPLEHUB_TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu",
             "# TUPLEHUB_S3_BUCKET=tuplehub",
             "# TUPLEHUB_LOG_LEVEL=INFO",
             "# TUPLEHUB_SHUTDOWN_GRACE_S=25",
             "# TUPLEHUB_ACME_CA=https://acme-v02.api.letsencrypt.org/directory",
             "# TUPLEHUB_ACME_CA_ROOT=/etc/ssl/certs/ca-certificates.crt"]
    return "\n".join(lines) + "\n"


def _refusal(path: Path) -> CommandLineError:
    return CommandLineError(f"{path} already exists: a deployment was set up here", hint=(
        "keep it (its secrets are the ones MongoDB, MinIO and the signed tokens already use), or replace "
        "every secret with --force on a deployment that has no data yet"))


def _write_new(path: Path, text: str, mode: int, *, force: bool) -> None:
    """Create ``path`` with ``mode`` from its first byte (``O_EXCL``, never a chmod after); with ``force``
    an existing file is replaced by a new one made the same way, so it is never half-written."""
    target = path
    if force and path.exists():
        target = path.with_name(f".{path.name}.{secrets.token_hex(4)}.new")
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
    except FileExistsError:
        raise _refusal(path) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        if target != path:
            os.replace(target, path)
    except BaseException:
        with contextlib.suppress(OSError):
            target.unlink()
        raise


def init(domain: Annotated[str | None, typer.Option(help=(
             "The public name clients reach, e.g. hub.example.org; DNS must point it and s3.NAME at this "
             "server. Without it: a LAN deployment named after this machine, with Caddy's own CA."))] = None,
         email: Annotated[str | None, typer.Option(help=(
             "E-mail address for the ACME (Let's Encrypt) account: expiry notices; needed with --domain "
             "unless --lan."))] = None,
         lan: Annotated[bool, typer.Option("--lan", help=(
             "Use Caddy's own CA (tls internal) even with --domain: a name only your network resolves."))] = False,
         folder: Annotated[Path | None, typer.Option("--dir", help=(
             "Folder for .env and secrets/ (default: here if compose.yaml is here, else compose/)."))] = None,
         force: Annotated[bool, typer.Option("--force", help=(
             "Replace an existing .env and metrics token with new secrets (only before the first start: "
             "MongoDB and MinIO keep the credentials they started with)."))] = False,
         as_json: AsJson = False) -> None:
    """Write the deployment's .env (0600) with fresh secrets and the domain, then print what to run next.

    Refuses to overwrite an existing .env without --force. The admin password is in the .env
    (TUPLEHUB_ADMIN_PASSWORD); nothing secret is printed.
    """
    folder = folder if folder is not None else default_dir()
    if domain is None:
        source = "hostname"
        name = checked_domain(socket.gethostname(), option="this machine's hostname")
    else:
        source = "option"
        name = checked_domain(domain, option="--domain")
    internal = domain is None or lan
    if not internal and email is None:
        raise CommandLineError("certificates by ACME need an e-mail address for the account",
                               hint=f"add --email you@{name.partition('.')[2] or name}, or --lan for a name only "
                                    "your network resolves (Caddy's own CA)")
    if email is not None and not _EMAIL.match(email):
        raise CommandLineError(f"--email {email!r} is not an e-mail address", hint="e.g. --email ops@example.org")
    folder.mkdir(parents=True, exist_ok=True)
    env_path, token_path = (folder / ENV_FILE).absolute(), (folder / TOKEN_FILE).absolute()
    for path in (env_path, token_path):
        if path.exists() and not force:
            raise _refusal(path)  # before anything is written: both files or neither
    values = {"TUPLEHUB_DOMAIN": name, "TUPLEHUB_TLS": "internal" if internal else str(email),
              "TUPLEHUB_S3_PUBLIC_ENDPOINT_URL": f"https://s3.{name}", **fresh_secrets(),
              "TUPLEHUB_METRICS_TOKEN_FILE": str(token_path)}
    token_path.parent.mkdir(mode=0o700, exist_ok=True)
    # Prometheus runs as nobody and reads the file as compose mounts it: 0444, in a 0700 folder.
    _write_new(token_path, values["TUPLEHUB_METRICS_TOKEN"], 0o444, force=force)
    _write_new(env_path, _env_text(values), 0o600, force=force)

    compose = next((path for path in (folder / COMPOSE_FILE, Path(COMPOSE_FILE),
                                                    Path("compose") / COMPOSE_FILE) if path.is_file()),
                   Path("PATH/TO/tuplehub/compose") / COMPOSE_FILE)
    compose_arg = "" if compose == Path(COMPOSE_FILE) else f"-f {compose} "
    up = f"docker compose {compose_arg}--env-file {folder / ENV_FILE} up -d"
    dns = [name, f"s3.{name}"]
    login = f"tuplehub login --url https://{name} --username {ADMIN_USERNAME}"
    tls = ("tls internal: Caddy's own CA; clients trust its root, see docs/deployment.md#a-lan-without-a-domain"
           if internal else f"certificates by ACME for {name} and s3.{name}, account {email}")
    named = " (this machine's hostname; choose another with --domain)" if source == "hostname" else ""
    done("\n".join([
        f"wrote {env_path} (0600) with fresh secrets, and the metrics token for Prometheus in {token_path}",
        f"domain: {name}{named}",
        f"TLS: {tls}",
        "next:",
        f"  1. DNS: point {' and '.join(dns)} at this server (A/AAAA records"
        + (", or each client's /etc/hosts on a LAN" if internal else "") + "); open ports 80 and 443",
        f"  2. start it: {up}",
        f"  3. sign in: {login}  (the password is TUPLEHUB_ADMIN_PASSWORD in {env_path})",
    ]), as_json=as_json, env_file=str(env_path), metrics_token_file=str(token_path), domain=name,
        domain_from=source, tls="internal" if internal else "acme", acme_email=None if internal else email,
        dns_names=dns, next=[up, login], admin_username=ADMIN_USERNAME,
        admin_password=f"TUPLEHUB_ADMIN_PASSWORD in {env_path}")


deploy_app.command("init")(init)
