"""Ctrl-C during ``tuplehub upload`` outside the byte phase, and the resume hint of a replace (issue 11, C6)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from tuplehub.client import Client
from tuplehub.client.cli import app
from tuplehub.client.cli.server import EmbeddedServer
from tuplehub.client.errors import UploadInterrupted
from tuplehub.client.uploads import table_from_arrays

from .conftest import admin_token
from .factories import episode_arrays


def _cli(server: EmbeddedServer, *args: str, code: int = 0) -> str:
    result = CliRunner(env={"TUPLEHUB_TOKEN": admin_token(server)}).invoke(app, [*args, "--url", server.url])
    assert "Traceback" not in result.output
    assert result.exit_code == code, result.output
    return result.output


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "tuples.parquet"
    pq.write_table(table_from_arrays(episode_arrays(episodes=3, length=10)), path)
    return path


def test_the_resume_hint_of_a_replace_upload_resumes_it(hub_server: EmbeddedServer, hub: Client, source: Path,
                                                         unique_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hint left out --mode replace, and a resume only picks a session of its own mode: following it started
    a new append upload and left the interrupted replace open."""
    _cli(hub_server, "datasets", "create", unique_name)
    _cli(hub_server, "upload", unique_name, str(source))

    def interrupted(http: httpx.Client, session: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        raise UploadInterrupted(session["id"], 0, 1)
    monkeypatch.setattr("tuplehub.client.uploads.send_parts", interrupted)
    shown = _cli(hub_server, "upload", unique_name, str(source), "--mode", "replace", code=130)
    monkeypatch.undo()
    hint = shown.split("resume with `", 1)[1].split("`", 1)[0]
    assert hint.endswith("--mode replace")
    assert len(hub._http.get(f"/datasets/{unique_name}/uploads").json()) == 1
    _cli(hub_server, *shlex.split(hint)[1:])
    assert hub._http.get(f"/datasets/{unique_name}/uploads").json() == []  # the replace session was resumed
    record = hub.datasets.get(unique_name).record
    assert [v.mode for v in record.versions] == ["append", "replace"]


def test_ctrl_c_before_the_bytes_move_says_what_to_do(hub_server: EmbeddedServer, source: Path, unique_name: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C while the file's footer was read, a resume checked the parts or the upload was being completed ended
    the command with no word (exit 130)."""
    _cli(hub_server, "datasets", "create", unique_name)

    def pressed(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt
    monkeypatch.setattr("tuplehub.client.uploads.parquet_schema", pressed)
    shown = _cli(hub_server, "upload", unique_name, str(source), code=130)
    assert "upload interrupted before its ingest job started: `tuplehub jobs list --kind upload` shows" in shown
    assert f"`tuplehub upload --resume {unique_name} {source}` sends only what is missing" in shown
