"""A fresh deployment's bucket (issue 12): the API creates it at its first start, on any S3, and
replicas starting together do not trip over each other."""

from __future__ import annotations

from pathlib import Path

import boto3
import httpx
import pytest
from botocore.exceptions import ClientError

from tuplehub.storage.errors import StoreUnavailable
from tuplehub.storage.objects import S3ObjectStore, open_object_store

from .conftest import make_settings


@pytest.fixture(autouse=True)
def _credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")


def _store(endpoint: str, bucket: str, region: str = "us-east-1") -> S3ObjectStore:
    store = open_object_store(f"s3://{bucket}/data", endpoint_url=endpoint, region=region)
    assert isinstance(store, S3ObjectStore)
    return store


def _buckets(endpoint: str) -> set[str]:
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    return {bucket["Name"] for bucket in s3.list_buckets()["Buckets"]}


@pytest.mark.parametrize("region", ["us-east-1", "eu-west-1"])
def test_a_missing_bucket_is_created_once(s3_endpoint: str, region: str) -> None:
    store = _store(s3_endpoint, f"fresh-{region}", region)
    assert store.ensure_bucket() is True
    assert store.ensure_bucket() is False  # there now: nothing to do
    with store.open_write("probe") as out:
        out.write(b"bytes")
    assert store.size("probe") == 5
    store.ping()


def test_a_replica_that_loses_the_race_to_create_it_is_fine(s3_endpoint: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = _store(s3_endpoint, "raced", "eu-west-1"), _store(s3_endpoint, "raced", "eu-west-1")
    missing = ClientError({"Error": {"Code": "404", "Message": "Not Found"}}, "HeadBucket")

    def saw_it_missing(**kwargs: object) -> None:
        raise missing
    monkeypatch.setattr(second._client, "head_bucket", saw_it_missing)  # looked before the first created it
    assert first.ensure_bucket() is True
    assert second.ensure_bucket() is False  # BucketAlreadyOwnedByYou
    assert "raced" in _buckets(s3_endpoint)


def test_a_store_that_refuses_says_which_bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    store = _store(s3_endpoint, "not-mine")
    refused = ClientError({"Error": {"Code": "AccessDenied", "Message": "Access Denied"}}, "HeadBucket")

    def deny(**kwargs: object) -> None:
        raise refused
    monkeypatch.setattr(store._client, "head_bucket", deny)
    with pytest.raises(StoreUnavailable, match="object store s3://not-mine"):
        store.ensure_bucket()
    assert "not-mine" not in _buckets(s3_endpoint)


def test_the_api_creates_its_bucket_at_start(tmp_path: Path, redis_url: str, s3_endpoint: str) -> None:
    from tuplehub.client.cli.server import serve_in_thread

    settings = make_settings(tmp_path, redis_url, objects_url="s3://first-start/data", s3_endpoint_url=s3_endpoint,
                             s3_region="us-east-1")
    assert "first-start" not in _buckets(s3_endpoint)
    with serve_in_thread(settings) as server:
        response = httpx.get(f"{server.url}/api/v1/health/ready", timeout=30)
    assert response.status_code == 200, response.text
    assert "first-start" in _buckets(s3_endpoint)


def test_a_local_folder_needs_no_bucket(tmp_path: Path) -> None:
    assert open_object_store((tmp_path / "objects").as_uri()).ensure_bucket() is False
