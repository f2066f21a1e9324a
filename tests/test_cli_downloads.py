"""Downloads (exports, artifacts) write the file only once it is complete, and Ctrl-C says so (issue 11, C6).

Before, ``-o out.parquet`` was opened at once and written as bytes arrived: Ctrl-C or a dropped
connection left a truncated Parquet file there (or over an older, complete one), silently.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from tuplehub.client.cli import app
from tuplehub.client.cli.server import EmbeddedServer
from tuplehub.client.exports import Export
from tuplehub.client.progress import save
from tuplehub.client.uploads import table_from_arrays

from .conftest import admin_token
from .factories import episode_arrays


def _cut_after(first: bytes, error: BaseException) -> Iterator[bytes]:
    yield first
    raise error


@pytest.mark.parametrize("error", [KeyboardInterrupt(), httpx.ReadError("connection reset")])
def test_an_interrupted_download_leaves_the_older_file_and_no_part(tmp_path: Path, error: BaseException) -> None:
    target = tmp_path / "out.parquet"
    target.write_bytes(b"the complete older copy")
    with pytest.raises(type(error)):
        save(_cut_after(b"PAR1 half of it", error), target, desc="download", total=100, progress=False)
    assert target.read_bytes() == b"the complete older copy"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.parquet"]
    assert save(iter([b"all ", b"of it"]), target, desc="download", total=None, progress=False) == target
    assert target.read_bytes() == b"all of it"


def test_ctrl_c_while_an_export_downloads_says_nothing_was_written(hub_server: EmbeddedServer, tmp_path: Path,
                                                                   unique_name: str,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "tuples.parquet"
    pq.write_table(table_from_arrays(episode_arrays(episodes=3, length=10)), source)
    runner = CliRunner(env={"TUPLEHUB_TOKEN": admin_token(hub_server)})
    for args in (["datasets", "create", unique_name], ["upload", unique_name, str(source)]):
        assert runner.invoke(app, [*args, "--url", hub_server.url]).exit_code == 0

    def interrupted(self: Export, path: Path, **_: object) -> Path:
        raise KeyboardInterrupt

    monkeypatch.setattr(Export, "download", interrupted)
    out = tmp_path / "subset.parquet"
    result = runner.invoke(app, ["export", unique_name, "-o", str(out), "--url", hub_server.url])
    assert result.exit_code == 130
    assert f"download interrupted: nothing was written to {out}" in result.output
    assert "the same command again reuses it" in result.output
