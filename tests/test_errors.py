"""Which failures are worth a retry, and how errors cross the wire."""

from __future__ import annotations

import errno

import httpx
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError
from pymongo.errors import AutoReconnect, DuplicateKeyError, ServerSelectionTimeoutError
from redis.exceptions import ConnectionError as RedisConnectionError

from tuplehub.client.errors import ServerError, raise_for_problem
from tuplehub.storage.errors import InvalidUpload, NotFound, StoreUnavailable, is_unavailable


@pytest.mark.parametrize("exc", [
    StoreUnavailable("catalog down"), ConnectionResetError(), TimeoutError(), AutoReconnect("election"),
    ServerSelectionTimeoutError("no primary"), EndpointConnectionError(endpoint_url="http://minio:9000"),
    ReadTimeoutError(endpoint_url="http://minio:9000"), RedisConnectionError("gone"),
    OSError(errno.EIO, "s3fs: service unavailable"),
    ClientError({"Error": {"Code": "SlowDown"}, "ResponseMetadata": {"HTTPStatusCode": 503}}, "PutObject"),
])
def test_outages_are_retried(exc: Exception) -> None:
    assert is_unavailable(exc)


@pytest.mark.parametrize("exc", [
    ValueError("bad"), FileNotFoundError(), DuplicateKeyError("dup"), InvalidUpload("nan", column="reward"),
    ClientError({"Error": {"Code": "AccessDenied"}, "ResponseMetadata": {"HTTPStatusCode": 403}}, "GetObject"),
])
def test_mistakes_are_not_retried(exc: Exception) -> None:
    assert not is_unavailable(exc)


def test_a_wrapped_outage_is_still_an_outage() -> None:
    outer = RuntimeError("while committing")
    outer.__cause__ = AutoReconnect("election")
    assert is_unavailable(outer)


def _response(status: int, body: bytes, content_type: str) -> httpx.Response:
    request = httpx.Request("GET", "http://hub/api/v1/datasets/x")
    return httpx.Response(status, content=body, headers={"content-type": content_type}, request=request)


def test_problems_come_back_as_the_same_errors() -> None:
    body = (b'{"type": "/problems/invalid-upload", "title": "InvalidUpload", "status": 422, '
            b'"detail": "column \'reward\', row 8: nan", "column": "reward", "row": 8, "reason": "nan"}')
    with pytest.raises(InvalidUpload) as caught:
        raise_for_problem(_response(422, body, "application/problem+json"))
    assert caught.value.detail == "column 'reward', row 8: nan"  # not formatted a second time
    assert caught.value.extra == {"column": "reward", "row": 8, "reason": "nan"}
    with pytest.raises(NotFound):
        raise_for_problem(_response(404, b'{"type": "/problems/not-found", "detail": "no dataset"}',
                                    "application/problem+json"))
    with pytest.raises(ServerError, match="answered 502"):
        raise_for_problem(_response(502, b"<html>bad gateway</html>", "text/html"))
