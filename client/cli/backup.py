"""``tuplehub backup`` and ``tuplehub restore``: what the settings name to a backup folder and back.

The embedded default (its data folder) or a deployment (its MongoDB catalog and object store, as
``TUPLEHUB_CATALOG_URL`` and ``TUPLEHUB_OBJECTS_URL`` name them: run inside the API container).
The work is done by :mod:`tuplehub.storage.backup` and :mod:`tuplehub.storage.restore`, imported
when a command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from tuplehub.client.cli.output import AsJson, done

DataDir = Annotated[Path | None, typer.Option(envvar="TUPLEHUB_DATA_DIR", help=(
    "Data folder of the embedded default (default: the one `tuplehub serve` uses)."))]


def _megabytes(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def _counts(summary: dict[str, Any]) -> str:
    counts = summary.get("counts") or {}
    return ", ".join(f"{counts[name]} {name}" for name in ("datasets", "versions", "users", "artifacts")
                     if name in counts)


def backup(dest: Annotated[Path, typer.Argument(help="New folder to write the backup to (must not exist or be "
                                                      "empty); keep it on another disk.")],
           data_dir: DataDir = None, as_json: AsJson = False) -> None:
    """Back up the embedded default or a deployment (MongoDB + object store); safe while the servers run.

    Embedded: catalog snapshot, blocks, objects, signing key and local admin. Deployment (the
    settings name a MongoDB catalog): every collection and every object; keep the deployment's
    .env beside it. The backup folder (0700, files 0600) has a manifest.json with every file's
    size and SHA-256; `tuplehub restore` checks them.
    """
    from tuplehub.client.cli.server import load_settings
    from tuplehub.storage.backup import create_backup

    summary = create_backup(load_settings(data_dir=data_dir), dest)
    notes = "".join(f"\nnote: {note}" for note in summary["notes"])
    done(f"backed up {summary['source']} to {summary['path']}: {summary['files']} files, "
         f"{_megabytes(summary['bytes'])} ({_counts(summary)}) in {summary['seconds']:.1f} s{notes}",
         as_json=as_json, **summary)


def restore(source: Annotated[Path, typer.Argument(help="Backup folder written by `tuplehub backup`.")],
            data_dir: DataDir = None,
            check: Annotated[bool, typer.Option("--check", help=(
                "Only verify the backup against its manifest; restore nothing."))] = False,
            as_json: AsJson = False) -> None:
    """Restore a backup into a new (or empty) data folder, or an empty deployment, after checking every file.

    Refuses a data folder that holds anything or whose server runs (move the old one aside first),
    and a MongoDB database or object store that holds anything. A damaged or partial backup
    restores nothing; a deployment restore that stops midway is finished by running it again.
    """
    from tuplehub.client.cli.server import load_settings
    from tuplehub.storage.restore import restore_backup

    summary = restore_backup(load_settings(data_dir=data_dir), source, check_only=check)
    if check:
        done(f"{summary['source']} is a complete backup of {summary['created_at']}: {summary['files']} files, "
             f"{_megabytes(summary['bytes'])} ({_counts(summary)}), every one matching its manifest",
             as_json=as_json, **summary)
        return
    notes = "".join(f"\nnote: {note}" for note in summary["notes"])
    start = (f"tuplehub serve --data-dir {summary['path']}" if summary["kind"] == "embedded"
             else "the API and workers on these settings (docker compose up -d)")
    done(f"restored {summary['source']} (taken {summary['created_at']}) into {summary['path']}: "
         f"{summary['files']} files, {_megabytes(summary['bytes'])} ({_counts(summary)})\n"
         f"start it with: {start}{notes}", as_json=as_json, **summary)
