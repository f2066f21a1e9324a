"""The API over HTTP, against a real server thread with a real Redis and a real Arq worker."""

from __future__ import annotations

import hashlib
import io
import json
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from tuplehub.client import Client, F, InvalidFilter, JobFailed, NotFound
from tuplehub.client.cli.server import EmbeddedServer
from tuplehub.client.uploads import table_from_arrays
from tuplehub.storage.errors import Conflict, InvalidRequest, InvalidUpload

from .conftest import admin_token
from .factories import episode_arrays


@pytest.fixture
def api(hub_server: EmbeddedServer) -> httpx.Client:
    headers = {"Authorization": f"Bearer {admin_token(hub_server)}"}
    with httpx.Client(base_url=hub_server.url + "/api/v1", timeout=60, headers=headers) as client:
        yield client


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert {"type", "title", "status", "detail", "instance"} <= set(body)
    assert body["status"] == status
    return body


def metadata_for(arrays: dict[str, np.ndarray]) -> dict[int, dict[str, Any]]:
    return {int(e): {"policy": "expert" if e % 3 == 0 else "random", "month": int(e % 12)}
            for e in np.unique(arrays["episode_id"])}


# --- datasets ------------------------------------------------------------------------------------

def test_create_get_and_list_datasets(api: httpx.Client, unique_name: str) -> None:
    created = api.post("/datasets", json={"name": unique_name, "description": "d", "tags": ["t1", "demo"]})
    assert created.status_code == 201
    assert created.json()["versions"] == []
    assert api.get(f"/datasets/{unique_name}").json()["name"] == unique_name
    api.post("/datasets", json={"name": unique_name + "-b", "tags": ["demo"]})
    page = api.get("/datasets", params={"name": unique_name, "tag": "demo", "limit": 1}).json()
    assert (page["total"], len(page["items"]), page["items"][0]["name"]) == (2, 1, unique_name)
    assert api.get("/datasets", params={"name": unique_name, "tag": "t1"}).json()["total"] == 1


def test_dataset_errors_are_problems(api: httpx.Client, unique_name: str) -> None:
    api.post("/datasets", json={"name": unique_name})
    assert problem(api.post("/datasets", json={"name": unique_name}), 409)["type"] == "/problems/conflict"
    bad = problem(api.post("/datasets", json={"name": "../etc"}), 422)
    assert bad["errors"][0]["location"] == "body.name"
    assert "no dataset named" in problem(api.get("/datasets/missing-one"), 404)["detail"]
    problem(api.post("/datasets", content=b"{not json", headers={"content-type": "application/json"}), 422)
    assert problem(api.get("/no/such/route"), 404)["type"] == "/problems/not-found"


def test_openapi_documents_models_and_problems(api: httpx.Client) -> None:
    spec = api.get("/openapi.json").json()
    assert {"Problem", "JobRead", "ExportCreate", "DatasetRead", "UploadCreate"} <= set(spec["components"]["schemas"])
    export = spec["paths"]["/api/v1/datasets/{name}/exports"]["post"]
    assert {"202", "404", "422"} <= set(export["responses"])
    assert spec["components"]["schemas"]["ExportCreate"].get("examples")


def test_health(api: httpx.Client) -> None:
    assert api.get("/health/live").json() == {"status": "ok"}
    ready = api.get("/health/ready").json()
    assert ready == {"status": "ok", "checks": {"catalog": "ok", "objects": "ok", "queue": "ok"}}


# --- upload -> ingest -> export -----------------------------------------------------------------

def test_export_matches_pyarrow_filter_exactly(hub: Client, unique_name: str) -> None:
    arrays = episode_arrays(episodes=30, length=40, obs_dim=5, act_dim=2, seed=1)
    arrays["info.battery"] = np.linspace(0, 1, len(arrays["reward"]))
    metadata = metadata_for(arrays)
    dataset = hub.datasets.create(unique_name)
    result = dataset.upload(arrays, episode_metadata=metadata, part_size=2**16).wait().result
    assert (result["episodes"], result["transitions"]) == (30, len(arrays["reward"]))

    table = table_from_arrays(arrays)
    expert = pa.array([metadata[int(e)]["policy"] == "expert" for e in arrays["episode_id"]])
    where = (F.reward > 0.2) | F.observation[3].between(-1, 1) & (F("info.battery") < 0.5)
    export = dataset.export(where=where, episodes=F.metadata.policy == "expert", next_observation=True)
    got = export.to_arrow()

    obs3 = pc.list_element(table["observation"], 3)
    mask = pc.and_(expert, pc.or_(pc.greater(table["reward"], 0.2),
                                  pc.and_(pc.and_(pc.greater_equal(obs3, -1), pc.less_equal(obs3, 1)),
                                          pc.less(table["info.battery"], 0.5))))
    expected = table.filter(mask)
    assert got.num_rows == expected.num_rows > 0
    for name in ("episode_id", "step", "observation", "action", "reward", "terminated", "truncated",
                 "next_observation", "info.battery"):
        assert got.column(name).to_pylist() == expected.column(name).to_pylist(), name
    assert export.result["rows"] == expected.num_rows


def test_to_numpy_keeps_dtypes_and_shapes(hub: Client, unique_name: str) -> None:
    arrays = episode_arrays(episodes=4, length=10, obs_dim=6, dtype="float64", seed=2)
    arrays["observation"] = arrays["observation"].reshape(-1, 2, 3)
    arrays["next_observation"] = arrays["next_observation"].reshape(-1, 2, 3)
    arrays["action"] = np.arange(len(arrays["reward"]), dtype=np.int16) % 3
    dataset = hub.datasets.create(unique_name)
    dataset.upload(arrays).wait()
    out = dataset.export(next_observation=True).to_numpy()
    assert out["observation"].dtype == np.float64
    assert out["observation"].shape == (len(arrays["reward"]), 2, 3)
    assert out["action"].dtype == np.int16
    np.testing.assert_array_equal(out["observation"], arrays["observation"])
    np.testing.assert_array_equal(out["next_observation"], arrays["next_observation"])
    np.testing.assert_array_equal(out["terminated"], arrays["terminated"])
    parquet = dataset.export(format="parquet").to_numpy()
    np.testing.assert_array_equal(parquet["observation"], arrays["observation"])


def test_next_observation_without_upload_is_nan_at_episode_ends(hub: Client, unique_name: str) -> None:
    arrays = episode_arrays(episodes=3, length=5, next_observation=True, seed=3)
    given = arrays.pop("next_observation")
    dataset = hub.datasets.create(unique_name)
    dataset.upload(arrays).wait()
    out = dataset.export(next_observation=True).to_numpy()
    last = np.append(arrays["episode_id"][1:] != arrays["episode_id"][:-1], True)
    assert np.isnan(out["next_observation"][last]).all()
    np.testing.assert_array_equal(out["next_observation"][~last], given[~last])


def test_append_keeps_previous_episodes_and_replace_starts_over(hub: Client, unique_name: str) -> None:
    dataset = hub.datasets.create(unique_name)
    first = episode_arrays(episodes=3, seed=4)
    second = episode_arrays(episodes=2, seed=5, first_id=100)
    dataset.upload(first).wait()
    dataset.upload(second).wait()
    dataset.upload(second, mode="replace").wait()
    versions = dataset.refresh().record.versions
    assert [(v.number, v.episodes, len(v.segments)) for v in versions] == [(1, 3, 1), (2, 5, 2), (3, 2, 1)]
    v2 = dataset.export(version=2).to_numpy()
    np.testing.assert_array_equal(v2["episode_id"], np.concatenate([first["episode_id"], second["episode_id"]]))
    with pytest.raises(JobFailed, match="episode 100 is already in version 3") as failure:
        dataset.upload(second).wait()
    assert failure.value.error["reason"] == "duplicate-episode"


def test_identical_exports_reuse_the_result(hub: Client, unique_name: str) -> None:
    dataset = hub.datasets.create(unique_name)
    dataset.upload(episode_arrays(episodes=2)).wait()
    first = dataset.export(where=F.reward > 0).wait()
    again = dataset.export(where=F.reward > 0)
    assert again.id == first.id
    assert dataset.export(where=F.reward > 0, version=1).id == first.id  # "latest" resolved to 1
    assert dataset.export(where=F.reward >= 0).id != first.id


def test_export_errors_are_rejected_before_any_job(hub: Client, unique_name: str) -> None:
    dataset = hub.datasets.create(unique_name)
    with pytest.raises(NotFound, match="has no versions yet"):
        dataset.export()
    dataset.upload(episode_arrays(episodes=2, obs_dim=3)).wait()
    with pytest.raises(InvalidFilter, match=r"index out of range; observation has shape \[3\]"):
        dataset.export(where=F.observation[3] > 0)
    with pytest.raises(InvalidFilter, match="'reward' is not an episode field"):
        dataset.export(episodes=F.reward > 0)
    with pytest.raises(InvalidFilter, match="holds numbers; it cannot be compared with 'high'"):
        dataset.export(where=F.reward > "high")
    with pytest.raises(InvalidRequest, match="unknown export column 'obs'"):
        dataset.export(columns=["obs"])
    with pytest.raises(NotFound, match="no version 7"):
        dataset.export(version=7)


def test_list_episodes_with_filter(hub: Client, api: httpx.Client, unique_name: str) -> None:
    arrays = episode_arrays(episodes=12, length=8, seed=6)
    dataset = hub.datasets.create(unique_name)
    dataset.upload(arrays, episode_metadata=metadata_for(arrays)).wait()
    page = dataset.episodes(where=(F.metadata.policy == "expert") & (F.length > 0), limit=2, offset=1)
    assert (page.total, [e.episode_id for e in page.items]) == (4, [3, 6])
    assert page.items[0].metadata == {"policy": "expert", "month": 3}
    assert page.items[0].termination == "truncated"
    returns = np.bincount(arrays["episode_id"], weights=arrays["reward"])
    assert page.items[0].return_ == pytest.approx(returns[3], rel=1e-6)
    bad = problem(api.get(f"/datasets/{unique_name}/versions/1/episodes", params={"where": '{"op": "gt"}'}), 422)
    assert bad["type"] == "/problems/invalid-filter"
    injected = api.get(f"/datasets/{unique_name}/versions/1/episodes",
                       params={"where": '{"op": "eq", "field": "metadata.$where", "value": 1}'})
    assert "not a field path" in problem(injected, 422)["detail"]


def test_range_download(hub: Client, api: httpx.Client, unique_name: str) -> None:
    dataset = hub.datasets.create(unique_name)
    dataset.upload(episode_arrays(episodes=3)).wait()
    export = dataset.export(format="parquet").wait()
    whole = api.get(f"/exports/{export.id}/file")
    assert whole.status_code == 200
    assert pq.read_table(io.BytesIO(whole.content)).num_rows == export.result["rows"]
    part = api.get(f"/exports/{export.id}/file", headers={"Range": "bytes=4-99"})
    assert part.status_code == 206
    assert part.content == whole.content[4:100]
    assert part.headers["content-range"] == f"bytes 4-99/{len(whole.content)}"
    assert api.get(f"/exports/{export.id}/file", headers={"Range": "bytes=-8"}).content == whole.content[-8:]
    outside = api.get(f"/exports/{export.id}/file", headers={"Range": f"bytes={len(whole.content)}-"})
    problem(outside, 416)
    assert outside.headers["content-range"] == f"bytes */{len(whole.content)}"
    for ignored in ("bytes=0-1,4-5", "bytes=abc", "bytes=9-3", "items=0-4"):  # RFC 9110: answer with all of it
        answer = api.get(f"/exports/{export.id}/file", headers={"Range": ignored})
        assert (answer.status_code, answer.content) == (200, whole.content), ignored


# --- bad uploads ---------------------------------------------------------------------------------

def _broken(kind: str) -> tuple[dict[str, Any] | pa.Table, str, int | None, str]:
    """An upload broken one way, and the column, row and reason its job must report."""
    arrays = episode_arrays(episodes=3, length=6, ragged=False, seed=7)
    if kind == "missing-column":
        del arrays["reward"]
        return arrays, "reward", None, "missing-column"
    if kind == "nan-reward":
        arrays["reward"][8] = np.nan
        return arrays, "reward", 8, "nan"
    if kind == "duplicate-step":
        arrays["step"][9] = arrays["step"][8]
        return arrays, "step", 9, "duplicate-step"
    if kind == "step-after-terminated":
        arrays["terminated"][3] = True
        return arrays, "terminated", 4, "step-after-end"
    if kind == "ragged":
        observations = [list(row) for row in arrays["observation"]]
        observations[10] = observations[10][:2]
        table = table_from_arrays({k: v for k, v in arrays.items() if k != "observation"})
        table = table.append_column("observation", pa.array(observations, pa.list_(pa.float32())))
        return table, "observation", 10, "ragged"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["missing-column", "nan-reward", "duplicate-step", "step-after-terminated",
                                  "ragged"])
def test_bad_upload_fails_naming_column_row_reason(hub: Client, unique_name: str, kind: str) -> None:
    dataset = hub.datasets.create(unique_name)
    good = episode_arrays(episodes=2, length=6, ragged=False, seed=8, first_id=50)
    dataset.upload(good).wait()
    source, column, row, reason = _broken(kind)
    with pytest.raises(JobFailed) as failure:
        dataset.upload(source).wait()
    error = failure.value.error
    assert (error["code"], error.get("column"), error.get("row"), error["reason"]) == (
        "invalid-upload", column, row, reason)
    assert column in error["detail"]
    assert [v.number for v in dataset.refresh().record.versions] == [1]  # the dataset is as it was
    np.testing.assert_array_equal(dataset.export().to_numpy()["reward"], good["reward"])


def test_truncated_parquet_file_fails_cleanly(hub: Client, unique_name: str, tmp_path) -> None:
    path = tmp_path / "cut.parquet"
    pq.write_table(table_from_arrays(episode_arrays(episodes=3)), path)
    path.write_bytes(path.read_bytes()[:-100])
    dataset = hub.datasets.create(unique_name)
    with pytest.raises(InvalidUpload) as failure:  # the client sees no PAR1 at the end and sends nothing
        dataset.upload(path).wait()
    assert failure.value.extra["reason"] == "not-parquet"
    assert dataset.refresh().record.versions == []


def test_episode_metadata_for_unknown_episode_fails(hub: Client, unique_name: str) -> None:
    dataset = hub.datasets.create(unique_name)
    with pytest.raises(JobFailed, match="names episode '99'"):
        dataset.upload(episode_arrays(episodes=2), episode_metadata={99: {"policy": "x"}}).wait()


# --- upload sessions -------------------------------------------------------------------------------

def test_upload_session_rules(api: httpx.Client, unique_name: str) -> None:
    api.post("/datasets", json={"name": unique_name})
    session = api.post(f"/datasets/{unique_name}/uploads", json={"part_size": 65536}).json()
    assert session["transport"] == "api"
    upload = f"/uploads/{session['id']}"
    too_big = api.put(f"{upload}/parts/1", content=b"x" * 65537)
    assert problem(too_big, 413)["part"] == 1
    part = api.put(f"{upload}/parts/1", content=b"x" * 10).json()
    assert part == {"number": 1, "etag": hashlib.md5(b"x" * 10).hexdigest()}
    wrong = api.post(f"{upload}/complete", json={"parts": [{"number": 1, "etag": "1-11"}]})
    assert "does not match" in problem(wrong, 422)["detail"]
    assert api.delete(upload).status_code == 204
    problem(api.post(f"{upload}/complete", json={"parts": [part]}), 409)
    problem(api.put(f"{upload}/parts/2", content=b"x"), 409)
    problem(api.get("/uploads/nope"), 404)


def test_completing_twice_answers_with_the_same_job(api: httpx.Client, hub: Client, unique_name: str) -> None:
    hub.datasets.create(unique_name)
    body = pq_bytes(episode_arrays(episodes=2))
    session = api.post(f"/datasets/{unique_name}/uploads", json={"part_size": 2**20}).json()
    part = api.put(f"/uploads/{session['id']}/parts/1", content=body).json()
    first = api.post(f"/uploads/{session['id']}/complete", json={"parts": [part]})
    again = api.post(f"/uploads/{session['id']}/complete", json={"parts": [part]})
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    assert hub.jobs.get(first.json()["id"]).wait().result["episodes"] == 2


def pq_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table_from_arrays(arrays), sink)
    return sink.getvalue()


def test_values_json_cannot_carry_are_422(api: httpx.Client, hub: Client, unique_name: str) -> None:
    hub.datasets.create(unique_name).upload(episode_arrays(episodes=2)).wait()
    huge = api.post(f"/datasets/{unique_name}/uploads", json={"episode_metadata": {"0": {"seed": 2**64}}})
    assert "does not fit a 64-bit integer" in problem(huge, 422)["detail"]
    beyond_int64 = api.post(f"/datasets/{unique_name}/exports",
                            json={"where": {"op": "gt", "field": "step", "value": 10**30}})
    assert beyond_int64.status_code == 202  # read as the float 1e30: a valid, empty selection
    assert hub.jobs.get(beyond_int64.json()["id"]).wait().result["rows"] == 0
    mixed = {"op": "in", "field": "metadata.p", "values": [1, "a"]}
    listing = api.get(f"/datasets/{unique_name}/versions/1/episodes", params={"where": json.dumps(mixed)})
    assert "compared with both" in problem(listing, 422)["detail"]


def test_metadata_of_mixed_types_compares_like_missing(hub: Client, unique_name: str) -> None:
    arrays = episode_arrays(episodes=4, length=5)
    dataset = hub.datasets.create(unique_name)
    metadata = {0: {"month": 3}, 1: {"month": "March"}, 2: {"month": 3.0}, 3: {}}
    dataset.upload(arrays, episode_metadata=metadata).wait()
    assert [e.episode_id for e in dataset.episodes(where=F.metadata.month == 3).items] == [0, 2]
    assert [e.episode_id for e in dataset.episodes(where=F.metadata.month.isin(["March"])).items] == [1]
    assert [e.episode_id for e in dataset.episodes(where=F.metadata.month.exists()).items] == [0, 1, 2]
    with pytest.raises(InvalidFilter, match="compared with both numbers and strings"):
        dataset.episodes(where=(F.metadata.month == 3) | (F.metadata.month == "March"))


def test_flags_in_info_with_missing_values_come_back_false(hub: Client, unique_name: str) -> None:
    arrays = episode_arrays(episodes=2, length=4, ragged=False)
    table = table_from_arrays(arrays).append_column(
        "info.contact", pa.array([True, None, False, None, True, True, None, False]))
    dataset = hub.datasets.create(unique_name)
    dataset.upload(table).wait()
    assert dataset.export().to_numpy()["info.contact"].tolist() == [True, False, False, False, True, True,
                                                                      False, False]


def test_jobs_list_and_cancel(hub: Client, api: httpx.Client, unique_name: str) -> None:
    dataset = hub.datasets.create(unique_name)
    job = dataset.upload(episode_arrays(episodes=2)).wait()
    listed = hub.jobs.list(kind="ingest")
    assert job.id in [j.id for j in listed.items]
    assert hub.jobs.get(job.id).record.status == "succeeded"
    assert api.post(f"/jobs/{job.id}/cancel").json()["status"] == "succeeded"  # finished jobs stay as they ended
    problem(api.get("/jobs/unknown"), 404)
    with pytest.raises(Conflict):
        hub.datasets.create(unique_name)


# --- client sources and results ----------------------------------------------------------------------

def test_upload_from_episode_iterator_and_arrow_table(hub: Client, unique_name: str) -> None:
    arrays = episode_arrays(episodes=5, length=12, seed=9)
    ids = arrays["episode_id"]

    def episodes():
        for e in np.unique(ids):
            rows = ids == e
            yield {"episode_id": f"run-{e}", "metadata": {"seed": int(e)},
                   **{k: v[rows] for k, v in arrays.items() if k not in ("episode_id", "step")}}

    dataset = hub.datasets.create(unique_name)
    dataset.upload(episodes()).wait()
    page = dataset.episodes(where=F.metadata.seed >= 3)
    assert [e.episode_id for e in page.items] == ["run-3", "run-4"]
    batches = list(dataset.export(episodes=F.episode_id == "run-1").iter_batches())
    assert sum(b.num_rows for b in batches) == int((ids == 1).sum())
    assert {v for b in batches for v in b.column("episode_id").to_pylist()} == {"run-1"}
    assert [s for b in batches for s in b.column("step").to_pylist()] == list(range(int((ids == 1).sum())))

    out = dataset.export().to_numpy()
    assert out["episode_id"].tolist() == [f"run-{e}" for e in ids]

    dataset.upload(table_from_arrays({**arrays, "episode_id": ids + 10}), mode="replace").wait()
    np.testing.assert_array_equal(dataset.export().to_numpy()["episode_id"], ids + 10)


def test_upload_with_a_wrong_column_type_fails(hub: Client, unique_name: str) -> None:
    arrays = episode_arrays(episodes=2)
    table = table_from_arrays({k: v for k, v in arrays.items() if k != "reward"})
    table = table.append_column("reward", pa.array([str(r) for r in arrays["reward"]]))
    dataset = hub.datasets.create(unique_name)
    with pytest.raises(JobFailed) as failure:
        dataset.upload(table).wait()
    assert (failure.value.error["column"], failure.value.error["reason"]) == ("reward", "wrong-type")
