"""Artifacts: content-addressed, deduplicated, uploaded in parts, linked, downloadable, shared by the rules."""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import gymnasium
import httpx
import pytest

from tuplehub.client import Client, NotFound
from tuplehub.client.cli.server import EmbeddedServer

from .conftest import admin_client, admin_token

PASSWORD = "artifact-Passphrase-1"


@pytest.fixture
def hub(hub_server: EmbeddedServer) -> Iterator[Client]:
    with admin_client(hub_server) as client:
        yield client


def user(hub: Client, server: EmbeddedServer) -> Client:
    name = f"a-{uuid.uuid4().hex[:8]}"
    hub.users.create(name, PASSWORD)
    client = Client(server.url)
    client.login(name, PASSWORD, remember=False)
    return client


def test_an_artifact_is_its_content_hash_and_comes_back_whole(hub: Client, tmp_path: Path) -> None:
    payload = os.urandom(300_000)  # several 64 KiB parts
    source = tmp_path / "policy.json"
    source.write_bytes(payload)
    artifact = hub.artifacts.upload(source, metadata={"algorithm": "CQL", "steps": 1000}, part_size=2**16)
    assert artifact.id == hashlib.sha256(payload).hexdigest()
    assert (artifact.record.name, artifact.record.media_type, artifact.record.size) == (
        "policy.json", "application/json", len(payload))
    assert artifact.record.metadata == {"algorithm": "CQL", "steps": 1000}
    assert artifact.download(tmp_path / "copy").read_bytes() == payload
    assert artifact.read() == payload


def test_the_same_bytes_are_stored_once(hub_server: EmbeddedServer, hub: Client) -> None:
    payload = os.urandom(1000)
    first = hub.artifacts.upload(payload, name="a.bin")
    again = hub.artifacts.upload(payload, name="a.bin")
    assert again.id == first.id
    assert hub.artifacts.list(name="a.bin").total >= 1
    with user(hub, hub_server) as other:
        theirs = other.artifacts.upload(payload, name="theirs.bin")  # their own record, the same bytes
        assert theirs.id == first.id
        assert theirs.record.name == "theirs.bin"
        stored = Path(hub_server.settings.data_dir) / "objects" / "artifacts" / first.id
        assert stored.read_bytes() == payload
        first.delete()
        assert stored.exists()  # still theirs
        assert other.artifacts.get(first.id).read() == payload
        theirs.delete()
        assert not stored.exists()  # nobody refers to the bytes any more


def test_links_and_listing(hub_server: EmbeddedServer, hub: Client) -> None:
    with gymnasium.make("Pendulum-v1", g=7.7) as env:
        bench = hub.benchmarks.create_from_env(env)
    dataset = hub.datasets.create(f"art-{uuid.uuid4().hex[:8]}", benchmark=bench.id)
    artifact = hub.artifacts.upload(os.urandom(100), name="params.yaml", benchmarks=[bench.id],
                                    datasets=[dataset.name])
    assert artifact.record.datasets == [dataset.name]
    assert [a.id for a in hub.artifacts.list(dataset=dataset.name).items] == [artifact.id]
    assert [a.id for a in hub.artifacts.list(benchmark=bench.id).items] == [artifact.id]
    with user(hub, hub_server) as other:
        private = other.datasets.create(f"p-{uuid.uuid4().hex[:8]}")
        mine = other.artifacts.upload(os.urandom(10), name="x.bin")
        with pytest.raises(NotFound):
            other.artifacts.get(artifact.id)  # private to the admin
        with pytest.raises(NotFound):
            mine.link(datasets=[dataset.name])  # linking needs read access
        mine.link(datasets=[private.name])
        assert mine.record.datasets == [private.name]
        assert hub.artifacts.get(mine.id).record.datasets == [private.name]  # the admin reads everything


def test_ranges_of_an_artifact_can_be_fetched(hub_server: EmbeddedServer, hub: Client) -> None:
    payload = bytes(range(256)) * 40
    artifact = hub.artifacts.upload(payload, name="r.bin")
    headers = {"Authorization": f"Bearer {admin_token(hub_server)}", "Range": "bytes=100-199"}
    response = httpx.get(f"{hub_server.url}/api/v1/artifacts/{artifact.id}/file", headers=headers)
    assert response.status_code == 206
    assert response.content == payload[100:200]


def test_any_name_can_be_downloaded_and_re_uploads_update_the_record(hub_server: EmbeddedServer,
                                                                     hub: Client) -> None:
    payload = os.urandom(64)
    artifact = hub.artifacts.upload(payload, name="策略 \"v1\".d3")
    response = httpx.get(f"{hub_server.url}/api/v1/artifacts/{artifact.id}/file",
                         headers={"Authorization": f"Bearer {admin_token(hub_server)}"})
    assert response.status_code == 200
    assert "filename*=UTF-8''" in response.headers["content-disposition"]
    renamed = hub.artifacts.upload(payload, name="policy-v1.d3", metadata={"step": 2})
    assert (renamed.id, renamed.record.name, renamed.record.metadata) == (artifact.id, "policy-v1.d3", {"step": 2})


def test_an_artifact_session_declares_its_size_and_is_bounded_by_it(hub_server: EmbeddedServer, hub: Client,
                                                                    tmp_path: Path) -> None:
    """A one-byte request cannot make a huge sparse artifact file: parts stay within the declared size
    (or, undeclared, within the server's largest upload), and a size over the limit is refused at once."""
    settings = hub_server.settings
    api = hub._http

    def partial(upload_id: str) -> int:
        return (Path(settings.data_dir) / "objects" / "uploads" / f"{upload_id}.bin.partial").stat().st_size

    declared = api.post("/artifacts/uploads", json={"name": "w.bin", "part_size": 2**30, "size": 100}).json()
    far = api.put(f"/uploads/{declared['id']}/parts/100", content=b"x")
    assert far.status_code == 422
    assert "parts 1 to 1" in far.json()["detail"]
    assert api.put(f"/uploads/{declared['id']}/parts/1", content=b"x" * 101).status_code == 413
    assert partial(declared["id"]) == 0

    huge = api.post("/artifacts/uploads", json={"name": "h.bin", "size": settings.max_upload_bytes + 1})
    assert huge.status_code == 413
    assert "TUPLEHUB_MAX_UPLOAD_BYTES" in huge.json()["detail"]
    many = api.post("/artifacts/uploads", json={"name": "m.bin", "part_size": 2**16, "size": 10 * 2**30})
    assert many.status_code == 422
    assert "use a part_size of at least" in many.json()["detail"]

    undeclared = api.post("/artifacts/uploads", json={"name": "u.bin", "part_size": 2**30}).json()
    beyond = settings.max_upload_bytes // 2**30 + 1
    assert api.put(f"/uploads/{undeclared['id']}/parts/{beyond}", content=b"x").status_code == 422
    assert partial(undeclared["id"]) == 0

    opened: list[dict[str, object]] = []

    def note(request: httpx.Request) -> None:
        if request.method == "POST" and request.url.path.endswith("/artifacts/uploads"):
            opened.append(json.loads(request.content))
    api.event_hooks["request"].append(note)
    source = tmp_path / "weights.bin"
    source.write_bytes(os.urandom(150_000))
    try:
        stored = hub.artifacts.upload(source, part_size=2**16)
        from_bytes = hub.artifacts.upload(b"abc", name="abc.txt")
    finally:
        api.event_hooks["request"].remove(note)
    assert [body["size"] for body in opened] == [150_000, 3]  # the client declares what it sends
    assert (stored.record.size, from_bytes.record.size) == (150_000, 3)
