"""Uploads as a user meets them (issue 11): progress, Ctrl-C, resume, bounded memory, early refusals, limits."""

from __future__ import annotations

import hashlib
import json
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tuplehub.client import Client
from tuplehub.client.cli.server import EmbeddedServer, serve_in_thread
from tuplehub.client.errors import ServerUnreachable, UploadInterrupted
from tuplehub.client.jobs import Job
from tuplehub.client.parts import READ_CHUNK
from tuplehub.client.retries import RetryPolicy
from tuplehub.client.uploads import table_from_arrays
from tuplehub.storage.errors import InvalidUpload

from .conftest import admin_client, admin_token, make_settings
from .factories import episode_arrays

PART = 2**16  # the smallest part the API takes, so a small file has many parts


@pytest.fixture
def api(hub_server: EmbeddedServer) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {admin_token(hub_server)}"}
    with httpx.Client(base_url=hub_server.url + "/api/v1", timeout=60, headers=headers) as client:
        yield client


def _parquet(path: Path, *, episodes: int = 80, dtype: str = "float32", **options: Any) -> dict[str, np.ndarray]:
    """A Parquet file of random (incompressible) tuples, and the arrays it holds."""
    arrays = episode_arrays(episodes=episodes, length=50, obs_dim=16, dtype=dtype, seed=3, **options)
    pq.write_table(table_from_arrays(arrays), path, compression="none")
    return arrays


def _part_puts(hub: Client) -> list[int]:
    """Record the number of every part the hub's client sends from now on."""
    sent: list[int] = []

    def record(request: httpx.Request) -> None:
        if request.method == "PUT" and "/parts/" in request.url.path:
            sent.append(int(request.url.path.rsplit("/", 1)[1]))
    hub._http.event_hooks["request"].append(record)
    return sent


# --- progress and Ctrl-C -------------------------------------------------------------------------

def test_upload_and_download_show_byte_bars(hub: Client, unique_name: str, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "tuples.parquet"
    _parquet(path)
    dataset = hub.datasets.create(unique_name)
    dataset.upload(path, part_size=PART, progress=True).wait(progress=False)
    export = dataset.export(format="parquet")
    export.wait(progress=False)
    export.download(tmp_path / "out.parquet", progress=True)
    shown = capsys.readouterr().err
    assert "upload tuples.parquet: 100%" in shown
    assert "download out.parquet: 100%" in shown
    assert "B/s" in shown  # a rate, and (tqdm) the size and time left

    dataset.upload(path, mode="replace", part_size=PART).wait(progress=False)  # not a terminal: quiet
    assert "upload" not in capsys.readouterr().err


def _interrupt_after(hub: Client, parts: int) -> None:
    """Press Ctrl-C (SIGINT to the main thread) once ``parts`` parts have been received."""
    main = threading.main_thread().ident
    received = []
    signal.signal(signal.SIGINT, signal.default_int_handler)  # whatever an earlier test in this process left

    def answer(response: httpx.Response) -> None:
        if response.request.method == "PUT" and "/parts/" in response.request.url.path:
            received.append(response.status_code)
            if len(received) == parts:
                signal.pthread_kill(main, signal.SIGINT)  # type: ignore[arg-type]
    hub._http.event_hooks["response"].append(answer)


def test_ctrl_c_keeps_the_parts_and_resume_sends_only_the_missing_ones(
        hub: Client, unique_name: str, tmp_path: Path) -> None:
    path = tmp_path / "tuples.parquet"
    arrays = _parquet(path)
    total = -(-path.stat().st_size // PART)
    assert total >= 8
    dataset = hub.datasets.create(unique_name)
    _interrupt_after(hub, 3)
    with pytest.raises(UploadInterrupted) as interrupted:
        dataset.upload(path, part_size=PART, parallel=1)
    stopped = interrupted.value
    assert 3 <= stopped.sent < total
    assert stopped.total == total
    assert f"upload interrupted: {stopped.sent} of {total} parts sent; resume with `tuplehub upload --resume " \
           f"{unique_name} {path}`" in stopped.detail
    assert not isinstance(stopped, Exception)  # `except Exception` in a script does not swallow Ctrl-C
    hub._http.event_hooks["response"].clear()

    held = hub._http.get(f"/uploads/{stopped.upload_id}/parts").json()
    assert len(held) == stopped.sent
    with path.open("rb") as handle:
        for part in held:  # every etag is the MD5 of the bytes the store holds
            handle.seek((part["number"] - 1) * PART)
            assert part["etag"] == hashlib.md5(handle.read(part["size"])).hexdigest()

    sent = _part_puts(hub)
    job = dataset.upload(path, part_size=PART, resume=True).wait(progress=False)
    assert sorted(sent) == sorted(set(range(1, total + 1)) - {p["number"] for p in held})
    assert job.result["version"] == 1
    np.testing.assert_array_equal(dataset.export().to_numpy()["observation"], arrays["observation"])
    assert hub._http.get(f"/datasets/{unique_name}/uploads").json() == []  # nothing left open


def test_a_dropped_connection_keeps_the_session_and_says_how_to_resume(
        hub: Client, unique_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "tuples.parquet"
    _parquet(path, episodes=30)
    assert -(-path.stat().st_size // PART) >= 4
    dataset = hub.datasets.create(unique_name)
    sent = _part_puts(hub)
    monkeypatch.setattr(hub._http, "retries", RetryPolicy(retries=1, on_retry=lambda _: None))

    def drop(request: httpx.Request) -> None:
        if len(sent) >= 3:  # from the third part on, past the client's retries
            raise httpx.WriteError("connection reset by peer", request=request)
    hub._http.event_hooks["request"].append(drop)
    with pytest.raises(ServerUnreachable) as dropped:
        dataset.upload(path, mode="replace", part_size=PART, parallel=1)
    hub._http.event_hooks["request"].clear()
    hint = dropped.value.extra["hint"]
    assert "lost the connection to the server" in dropped.value.detail
    assert "gave up after 2 attempts" in dropped.value.detail
    assert f"the upload session is kept: once the server answers, send only the missing parts with `tuplehub " \
           f"upload --resume {unique_name} {path} --mode replace`" in hint
    assert len(hub._http.get(f"/datasets/{unique_name}/uploads").json()) == 1  # kept, not aborted
    assert dataset.upload(path, mode="replace", resume=True).wait(progress=False).result["version"] == 1


def test_resume_resends_a_part_the_server_holds_differently(hub: Client, unique_name: str, tmp_path: Path,
                                                             api: httpx.Client) -> None:
    path = tmp_path / "tuples.parquet"
    arrays = _parquet(path, episodes=12)
    dataset = hub.datasets.create(unique_name)
    _interrupt_after(hub, 2)
    with pytest.raises(UploadInterrupted) as interrupted:
        dataset.upload(path, part_size=PART, parallel=1)
    hub._http.event_hooks["response"].clear()
    api.put(f"/uploads/{interrupted.value.upload_id}/parts/1", content=b"not the file" * 100)
    sent = _part_puts(hub)
    dataset.upload(path, part_size=PART, resume=True).wait(progress=False)
    assert 1 in sent
    assert 2 not in sent
    np.testing.assert_array_equal(dataset.export().to_numpy()["reward"], arrays["reward"])


def test_resume_with_nothing_to_resume_uploads_whole(hub: Client, unique_name: str, tmp_path: Path) -> None:
    path = tmp_path / "tuples.parquet"
    _parquet(path, episodes=4)
    dataset = hub.datasets.create(unique_name)
    assert dataset.upload(path, resume=True).wait(progress=False).result["version"] == 1
    with pytest.raises(ValueError, match="needs the path of a Parquet file"):
        dataset.upload(episode_arrays(episodes=2), resume=True)


def test_ctrl_c_on_an_in_memory_source_cancels_the_session(hub: Client, unique_name: str) -> None:
    dataset = hub.datasets.create(unique_name)
    _interrupt_after(hub, 1)
    arrays = episode_arrays(episodes=200, length=50, obs_dim=16, seed=1)
    with pytest.raises(UploadInterrupted, match="the session was cancelled and nothing was stored"):
        dataset.upload(arrays, part_size=PART, parallel=1, compression=None)
    assert hub._http.get(f"/datasets/{unique_name}/uploads").json() == []
    assert dataset.refresh().record.versions == []


def test_cli_ctrl_c_says_what_was_kept(hub_cli, tmp_path: Path, unique_name: str,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "tuples.parquet"
    _parquet(path, episodes=4)
    hub_cli("datasets", "create", unique_name)

    def interrupted(*args: Any, **kwargs: Any) -> None:
        raise UploadInterrupted("abc", 2, 5)
    monkeypatch.setattr("tuplehub.client.uploads.send_parts", interrupted)
    shown = hub_cli("upload", unique_name, str(path), code=130)
    assert f"upload interrupted: 2 of 5 parts sent; resume with `tuplehub upload --resume {unique_name} " in shown
    assert "Traceback" not in shown
    monkeypatch.undo()

    def pressed(self: Job, **kwargs: Any) -> Job:
        raise KeyboardInterrupt
    monkeypatch.setattr(Job, "wait", pressed)
    shown = hub_cli("upload", unique_name, str(path), "--resume", code=130)
    job = shown.strip().splitlines()[-1].split()[2]
    assert f"ingest job {job} continues on the server; follow it with `tuplehub jobs show {job}`" in shown
    waited = hub_cli("jobs", "wait", job, code=130)  # Ctrl-C on `jobs wait` says the same
    assert f"ingest job {job} continues on the server; follow it with `tuplehub jobs show {job}`" in waited
    assert "Traceback" not in waited
    monkeypatch.undo()
    assert json.loads(hub_cli("jobs", "wait", job, "--json"))["status"] == "succeeded"


def test_resume_on_an_s3_store_through_presigned_urls(tmp_path: Path, redis_url: str, s3_endpoint: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    settings = make_settings(tmp_path, redis_url, objects_url="s3://tuplehub/resume", s3_endpoint_url=s3_endpoint)
    path = tmp_path / "tuples.parquet"
    arrays = _parquet(path, episodes=1400)
    part_size = 5 * 2**20  # S3's smallest
    total = -(-path.stat().st_size // part_size)
    assert total >= 3
    main = threading.main_thread().ident
    puts: list[int] = []

    def answer(response: httpx.Response) -> None:  # parts go straight to S3, not through the API client
        if response.request.method == "PUT":
            puts.append(int(response.request.url.params["partNumber"]))
            if len(puts) == 1:
                signal.pthread_kill(main, signal.SIGINT)  # type: ignore[arg-type]
    real = httpx.Client

    class Watched(real):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, event_hooks={"response": [answer]}, **kwargs)
    with serve_in_thread(settings) as server, admin_client(server) as hub, monkeypatch.context() as patch:
        patch.setattr("tuplehub.client.parts.httpx.Client", Watched)
        dataset = hub.datasets.create("on-s3")
        with pytest.raises(UploadInterrupted) as interrupted:
            dataset.upload(path, part_size=part_size, parallel=1)
        held = hub._http.get(f"/uploads/{interrupted.value.upload_id}/parts").json()
        assert [part["number"] for part in held] == list(range(1, interrupted.value.sent + 1))
        assert held[0]["etag"].strip('"') == hashlib.md5(path.read_bytes()[:part_size]).hexdigest()
        dataset.upload(path, resume=True).wait(progress=False)
        assert sorted(puts) == list(range(1, total + 1))  # each part once: none held was sent again
        np.testing.assert_array_equal(dataset.export().to_numpy()["observation"],
                                      arrays["observation"])


# --- client memory ---------------------------------------------------------------------------------

class _Recording(httpx.BaseTransport):
    """The real transport, noting how large each piece of a part's body is as it is sent."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner, self.pieces = inner, []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "PUT" and "/parts/" in request.url.path:
            stream = request.stream

            def pieces() -> Iterator[bytes]:
                for piece in stream:  # type: ignore[union-attr]
                    self.pieces.append(len(piece))
                    yield piece
            request.stream = httpx.ByteStream(b"") if stream is None else _Iterated(pieces())
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


class _Iterated(httpx.SyncByteStream):
    def __init__(self, pieces: Iterator[bytes]) -> None:
        self._pieces = pieces

    def __iter__(self) -> Iterator[bytes]:
        return self._pieces


def test_a_file_is_streamed_a_chunk_at_a_time_never_a_whole_part(hub: Client, unique_name: str,
                                                                 tmp_path: Path) -> None:
    path = tmp_path / "tuples.parquet"
    _parquet(path, episodes=400)
    part_size = 2 * READ_CHUNK
    assert path.stat().st_size > 2 * part_size
    recording = _Recording(hub._http._transport)
    hub._http._transport = recording
    hub.datasets.create(unique_name).upload(path, part_size=part_size).wait(progress=False)
    assert sum(recording.pieces) == path.stat().st_size
    assert max(recording.pieces) <= READ_CHUNK < part_size


# --- refused before any byte is sent ------------------------------------------------------------

def test_a_csv_is_refused_at_once_with_a_hint(hub: Client, unique_name: str, tmp_path: Path) -> None:
    path = tmp_path / "tuples.csv"
    path.write_text("episode_id,observation,action,reward,terminated,truncated\n0,0.1,1,0.5,0,1\n")
    dataset = hub.datasets.create(unique_name)
    sent = _part_puts(hub)
    with pytest.raises(InvalidUpload, match=r"not a Parquet file.*pd\.read_csv") as refused:
        dataset.upload(path)
    assert refused.value.extra["reason"] == "not-parquet"
    assert sent == []
    assert hub._http.get(f"/datasets/{unique_name}/uploads").json() == []


def test_cli_refuses_a_csv_in_one_line(hub_cli, tmp_path: Path, unique_name: str) -> None:
    path = tmp_path / "tuples.csv"
    path.write_text("a,b\n1,2\n")
    hub_cli("datasets", "create", unique_name)
    shown = hub_cli("upload", unique_name, str(path), code=1)
    assert "is not a Parquet file" in shown
    assert "Traceback" not in shown


@pytest.mark.parametrize("change", ["dtype", "shape", "info"])
def test_an_append_that_does_not_match_is_refused_when_the_session_opens(
        hub: Client, unique_name: str, tmp_path: Path, change: str) -> None:
    dataset = hub.datasets.create(unique_name)
    dataset.upload(episode_arrays(episodes=2)).wait(progress=False)
    path = tmp_path / "more.parquet"
    if change == "dtype":
        _parquet(path, episodes=2, dtype="float64", first_id=10)
        column = "observation"
    elif change == "shape":
        arrays = episode_arrays(episodes=2, obs_dim=5, first_id=10)
        pq.write_table(table_from_arrays(arrays), path)
        column = "observation"
    else:
        arrays = episode_arrays(episodes=2, first_id=10)
        pq.write_table(table_from_arrays({**arrays, "info.cost": np.zeros(len(arrays["reward"]))}), path)
        column = "info"
    sent = _part_puts(hub)
    with pytest.raises(InvalidUpload) as refused:
        dataset.upload(path)
    assert (refused.value.extra["column"], refused.value.extra["reason"]) == (column, "schema-mismatch")
    assert sent == []
    assert hub._http.get(f"/datasets/{unique_name}/uploads").json() == []
    with pytest.raises(InvalidUpload, match="append needs the same schema"):  # in-memory sources too
        dataset.upload(pq.read_table(path))
    assert dataset.upload(path, mode="replace").wait(progress=False).result["version"] == 2


# --- the server's limits ---------------------------------------------------------------------------

def _open(api: httpx.Client, name: str, **body: Any) -> httpx.Response:
    api.post("/datasets", json={"name": name})
    return api.post(f"/datasets/{name}/uploads", json=body)


def _partial_size(server: EmbeddedServer, upload_id: str) -> int:
    return (server.settings.data_dir / "objects" / "uploads" / f"{upload_id}.parquet.partial").stat().st_size


def test_a_one_byte_request_cannot_make_a_huge_sparse_file(api: httpx.Client, hub_server: EmbeddedServer,
                                                           unique_name: str) -> None:
    declared = _open(api, unique_name, part_size=2**30, size=100).json()
    far = api.put(f"/uploads/{declared['id']}/parts/10000", content=b"x")
    assert far.status_code == 422
    assert "parts 1 to 1" in far.json()["detail"]
    over = api.put(f"/uploads/{declared['id']}/parts/1", content=b"x" * 101)
    assert over.status_code == 413
    assert _partial_size(hub_server, declared["id"]) == 0

    undeclared = api.post(f"/datasets/{unique_name}/uploads", json={"part_size": 2**30}).json()
    limit = hub_server.settings.max_upload_bytes // 2**30
    assert api.put(f"/uploads/{undeclared['id']}/parts/10000", content=b"x").status_code == 422
    assert api.put(f"/uploads/{undeclared['id']}/parts/{limit + 1}", content=b"x").status_code == 422
    assert _partial_size(hub_server, undeclared["id"]) == 0


def test_declared_sizes_are_checked_when_the_session_opens(api: httpx.Client, hub_server: EmbeddedServer,
                                                           unique_name: str) -> None:
    huge = _open(api, unique_name, size=hub_server.settings.max_upload_bytes + 1)
    assert huge.status_code == 413
    assert "TUPLEHUB_MAX_UPLOAD_BYTES" in huge.json()["detail"]
    many = api.post(f"/datasets/{unique_name}/uploads", json={"part_size": PART, "size": 10 * 2**30})
    assert many.status_code == 422
    assert "use a part_size of at least" in many.json()["detail"]
    assert api.get(f"/datasets/{unique_name}/uploads").json() == []

    session = api.post(f"/datasets/{unique_name}/uploads", json={"part_size": PART, "size": 10}).json()
    part = api.put(f"/uploads/{session['id']}/parts/1", content=b"x" * 9).json()
    short = api.post(f"/uploads/{session['id']}/complete", json={"parts": [part]})
    assert short.status_code == 422
    assert "declared 10" in short.json()["detail"]


def test_a_hostile_client_sending_a_csv_still_gets_a_clean_failure(api: httpx.Client, hub: Client,
                                                                   unique_name: str) -> None:
    """The client's check is a courtesy: bytes that skip it are still refused by the ingest job."""
    session = _open(api, unique_name, part_size=PART).json()
    part = api.put(f"/uploads/{session['id']}/parts/1", content=b"a,b\n1,2\n").json()
    job = Job(hub._http, api.post(f"/uploads/{session['id']}/complete", json={"parts": [part]}).json())
    with pytest.raises(Exception, match="not a readable Parquet file"):
        job.wait(progress=False)


def test_schema_of_a_list_column_comes_from_the_first_row(hub: Client, unique_name: str, tmp_path: Path) -> None:
    """Variable-length lists (as pandas writes them) get their length from the first row, as the ingest does."""
    arrays = episode_arrays(episodes=2, next_observation=False)
    table = table_from_arrays({k: v for k, v in arrays.items() if k != "observation"})
    table = table.append_column("observation", pa.array([list(r) for r in arrays["observation"]],
                                                        pa.list_(pa.float32())))
    dataset = hub.datasets.create(unique_name)
    dataset.upload(table).wait(progress=False)
    path = tmp_path / "wider.parquet"
    wider = table_from_arrays({k: v for k, v in arrays.items() if k != "observation"})
    wider = wider.append_column("observation", pa.array([[*r, 0.0] for r in arrays["observation"]],
                                                        pa.list_(pa.float32())))
    pq.write_table(wider, path)
    with pytest.raises(InvalidUpload, match=r"float32\[4\] in the upload but float32\[3\]"):
        dataset.upload(path)
