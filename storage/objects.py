"""The object store: uploads in flight and export results, by key, on fsspec.

``file:///path`` keeps objects in a local folder (the embedded default); ``s3://bucket/prefix``
keeps them in S3 or MinIO through s3fs, with botocore (the core of boto3, already under s3fs) for
what fsspec lacks: presigned URLs and the multipart protocol. With S3 the client sends upload
parts straight to the store through presigned URLs; with a local folder it streams them through
the API, which writes each part at its offset in the final file, so completing an upload moves
no bytes either way.

Every method here blocks; async callers wrap them in ``asyncio.to_thread``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote, urlparse

from tuplehub.storage.errors import ConfigError, InvalidRequest, NotFound, PayloadTooLarge, StoreUnavailable
from tuplehub.storage.models import ReceivedPart

S3_MIN_PART = 5 * 2**20  # S3 refuses smaller parts, except the last


class ObjectStore:
    """Common fsspec I/O; subclasses add the multipart protocol of their backend."""

    presigned_uploads = False

    def __init__(self, fs: Any, root: str) -> None:
        self.fs = fs
        self.root = root.rstrip("/")

    def path(self, key: str) -> str:
        if ".." in key.split("/") or key.startswith("/"):
            raise ValueError(f"object key {key!r} must be relative and stay under the root")
        return f"{self.root}/{key}"

    def open_read(self, key: str, *, block_size: int = 8 * 2**20) -> IO[bytes]:
        try:
            return self.fs.open(self.path(key), "rb", block_size=block_size)
        except FileNotFoundError as exc:
            raise NotFound(f"object {key!r} is missing from the store") from exc

    def open_write(self, key: str) -> IO[bytes]:
        path = self.path(key)
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        return self.fs.open(path, "wb")

    def size(self, key: str) -> int:
        try:
            return int(self.fs.size(self.path(key)))
        except FileNotFoundError as exc:
            raise NotFound(f"object {key!r} is missing from the store") from exc

    def exists(self, key: str) -> bool:
        return bool(self.fs.exists(self.path(key)))

    def listing(self) -> dict[str, tuple[int, str]]:
        """Every object under the root, as it is now: key -> (size, a tag that changes with its bytes,
        the ETag on S3 or the modification time locally). Backups compare two listings to copy what changed."""
        self.fs.invalidate_cache()
        found = self.fs.find(self.root, detail=True)
        return {path[len(self.root) + 1:]: (int(info["size"]), str(info.get("ETag") or info.get("mtime")))
                for path, info in found.items() if info.get("type") == "file"}

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self.path(key), recursive=True)

    def move(self, source: str, target: str) -> None:
        """Put ``source`` at ``target`` whole (a rename locally; copy then delete on S3)."""
        path = self.path(target)
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        self.fs.mv(self.path(source), path)

    def presign_get(self, key: str, expires_s: int) -> str | None:
        """A URL that reads ``key`` without credentials, or None where the store has none."""
        return None

    def ensure_bucket(self) -> bool:
        """Make the place objects go exist; True if this call created it (a local folder always exists)."""
        return False

    def ping(self) -> None:
        try:
            self.fs.ls(self.root)
        except FileNotFoundError:
            pass
        except Exception as exc:
            raise StoreUnavailable(f"object store {self.root}: {exc}") from exc

    # --- multipart uploads ------------------------------------------------------------------------
    def start_multipart(self, key: str) -> str | None:
        raise NotImplementedError

    def open_part(self, key: str, number: int, part_size: int, limit: int) -> PartWriter:
        raise InvalidRequest("this object store takes upload parts through presigned URLs, not the API")

    def list_parts(self, key: str, multipart_id: str | None) -> list[ReceivedPart]:
        """The parts the store holds for an open upload, by number, with their MD5 etags."""
        raise NotImplementedError

    def presign_part(self, key: str, multipart_id: str, number: int, expires_s: int) -> str:
        raise InvalidRequest("this object store takes upload parts through the API, not presigned URLs")

    def complete_multipart(self, key: str, multipart_id: str | None, parts: Sequence[tuple[int, str]],
                           part_size: int, size: int | None = None) -> None:
        """Assemble the parts; ``size``, where the session declared it, is what they must add up to."""
        raise NotImplementedError

    def abort_multipart(self, key: str, multipart_id: str | None) -> None:
        raise NotImplementedError


class PartWriter:
    """Writes one upload part in place, at ``(number - 1) * part_size`` of the partial file.

    At most ``limit`` bytes (the part size, or what is left of the declared upload) are written,
    so no request can reach past the size the session was opened for. The part's MD5 is its etag,
    as on S3, so a client that resumes can check every part the store already holds.
    """

    def __init__(self, partial: Path, marker: Path, number: int, part_size: int, limit: int) -> None:
        marker.unlink(missing_ok=True)  # a part being rewritten is not received until it is whole again
        self.fd = os.open(partial, os.O_WRONLY)
        self.marker, self.number, self.limit = marker, number, limit
        self.offset = (number - 1) * part_size
        self.written = 0
        self._md5 = hashlib.md5(usedforsecurity=False)

    def write(self, data: bytes) -> None:
        if self.written + len(data) > self.limit:
            self.abort()
            raise PayloadTooLarge(f"part {self.number} is larger than the {self.limit} bytes it may hold",
                                  part=self.number)
        os.pwrite(self.fd, data, self.offset + self.written)
        self._md5.update(data)
        self.written += len(data)

    def close(self) -> str:
        """Finish the part; its etag is the MD5 of its bytes."""
        self._release()
        etag = self._md5.hexdigest()
        self.marker.write_text(json.dumps({"size": self.written, "etag": etag}))
        return etag

    def abort(self) -> None:
        self._release()

    def _release(self) -> None:
        # Close once: a second close could hit a descriptor number another thread reused meanwhile.
        fd, self.fd = self.fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)


class LocalObjectStore(ObjectStore):
    """Objects as files under one folder; parts are written in place at ``(number - 1) * part_size``."""

    def __init__(self, folder: Path) -> None:
        from fsspec.implementations.local import LocalFileSystem

        folder.mkdir(parents=True, exist_ok=True)
        super().__init__(LocalFileSystem(), str(folder))
        self.folder = folder

    def local_path(self, key: str) -> Path:
        return Path(self.path(key))

    def open_read(self, key: str, *, block_size: int = 0) -> IO[bytes]:
        """A native pyarrow file: no Python in the read path. Not a memory map, whose pages would
        count in the server's resident memory for as long as a multi-GB upload is being read."""
        import pyarrow as pa

        try:
            return pa.OSFile(str(self.local_path(key)), "rb")
        except FileNotFoundError as exc:
            raise NotFound(f"object {key!r} is missing from the store") from exc

    def open_write(self, key: str) -> IO[bytes]:
        import pyarrow as pa

        path = self.local_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        return pa.OSFile(str(path), "wb")

    def _partial(self, key: str) -> Path:
        return self.local_path(key).with_name(self.local_path(key).name + ".partial")

    def _sizes(self, key: str) -> Path:
        return self.local_path(key).with_name(self.local_path(key).name + ".parts")

    def start_multipart(self, key: str) -> str | None:
        partial = self._partial(key)
        partial.parent.mkdir(parents=True, exist_ok=True)
        partial.touch()
        self._sizes(key).mkdir(exist_ok=True)
        return None

    def open_part(self, key: str, number: int, part_size: int, limit: int) -> PartWriter:
        partial = self._partial(key)
        if not partial.exists():
            raise NotFound(f"upload object {key!r} has no open multipart upload")
        return PartWriter(partial, self._sizes(key) / str(number), number, part_size, limit)

    def list_parts(self, key: str, multipart_id: str | None) -> list[ReceivedPart]:
        folder = self._sizes(key)
        markers = sorted(folder.iterdir(), key=lambda p: int(p.name)) if folder.exists() else []
        return [ReceivedPart(number=int(marker.name), **self._marker(marker)) for marker in markers]

    @staticmethod
    def _marker(marker: Path) -> dict[str, Any]:
        return json.loads(marker.read_text())

    def complete_multipart(self, key: str, multipart_id: str | None, parts: Sequence[tuple[int, str]],
                           part_size: int, size: int | None = None) -> None:
        if not self._partial(key).exists() and self.local_path(key).exists():
            return  # completed by an earlier call that did not live to record it
        sizes = self._sizes(key)
        numbers = [number for number, _ in parts]
        if numbers != list(range(1, len(parts) + 1)):
            raise InvalidRequest(f"parts must be numbered 1..{len(parts)} in order, got {numbers[:10]}")
        total = 0
        for number, etag in parts:
            marker = sizes / str(number)
            if not marker.exists():
                raise InvalidRequest(f"part {number} was never uploaded", part=number)
            stored = self._marker(marker)
            stored_size = int(stored["size"])
            if etag.strip('"') != stored["etag"]:
                raise InvalidRequest(f"part {number}: etag {etag!r} does not match the stored part", part=number)
            if number < len(parts) and stored_size != part_size:
                raise InvalidRequest(f"part {number} holds {stored_size} bytes; every part but the last must hold "
                                     f"exactly {part_size}", part=number)
            total += stored_size
        if size is not None and total != size:
            raise InvalidRequest(f"the parts hold {total} bytes; the upload declared {size}")
        partial = self._partial(key)
        os.truncate(partial, total)
        partial.replace(self.local_path(key))
        self.fs.rm(str(sizes), recursive=True)

    def abort_multipart(self, key: str, multipart_id: str | None) -> None:
        self._partial(key).unlink(missing_ok=True)
        if self._sizes(key).exists():
            self.fs.rm(str(self._sizes(key)), recursive=True)


class S3ObjectStore(ObjectStore):
    """Objects in a bucket under a prefix; presigned URLs are signed for ``public_endpoint``."""

    presigned_uploads = True

    def __init__(self, bucket: str, prefix: str, *, endpoint_url: str | None, public_endpoint_url: str | None,
                 region: str | None, key: str | None, secret: str | None) -> None:
        import botocore.session
        import s3fs
        from botocore.config import Config

        fs = s3fs.S3FileSystem(key=key, secret=secret, endpoint_url=endpoint_url,
                               client_kwargs={"region_name": region} if region else {})
        super().__init__(fs, f"{bucket}/{prefix}".rstrip("/"))
        self.bucket, self.prefix, self.region = bucket, prefix.strip("/"), region
        # botocore (what boto3 wraps, and what s3fs already depends on) signs URLs and runs the
        # multipart protocol; depending on it directly keeps one botocore version to resolve.
        session = botocore.session.get_session()
        options = {"region_name": region, "aws_access_key_id": key, "aws_secret_access_key": secret,
                   "config": Config(signature_version="s3v4", s3={"addressing_style": "path"})}
        self._client = session.create_client("s3", endpoint_url=endpoint_url, **options)
        self._signer = session.create_client("s3", endpoint_url=public_endpoint_url or endpoint_url, **options)

    def _key(self, key: str) -> str:
        self.path(key)  # validates
        return f"{self.prefix}/{key}" if self.prefix else key

    def presign_get(self, key: str, expires_s: int) -> str | None:
        return self._signer.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self._key(key)}, ExpiresIn=expires_s)

    def start_multipart(self, key: str) -> str | None:
        answer = self._client.create_multipart_upload(Bucket=self.bucket, Key=self._key(key))
        return answer["UploadId"]

    def list_parts(self, key: str, multipart_id: str | None) -> list[ReceivedPart]:
        parts: list[ReceivedPart] = []
        marker = 0
        while True:  # pages of at most 1000 parts
            answer = self._client.list_parts(Bucket=self.bucket, Key=self._key(key), UploadId=multipart_id,
                                             PartNumberMarker=marker)
            parts += [ReceivedPart(number=p["PartNumber"], etag=p["ETag"], size=p["Size"])
                      for p in answer.get("Parts", [])]
            if not answer.get("IsTruncated"):
                return parts
            marker = answer["NextPartNumberMarker"]

    def presign_part(self, key: str, multipart_id: str, number: int, expires_s: int) -> str:
        return self._signer.generate_presigned_url("upload_part", Params={
            "Bucket": self.bucket, "Key": self._key(key), "UploadId": multipart_id, "PartNumber": number,
        }, ExpiresIn=expires_s)

    def complete_multipart(self, key: str, multipart_id: str | None, parts: Sequence[tuple[int, str]],
                           part_size: int, size: int | None = None) -> None:
        from botocore.exceptions import ClientError

        try:
            self._client.complete_multipart_upload(
                Bucket=self.bucket, Key=self._key(key), UploadId=multipart_id,
                MultipartUpload={"Parts": [{"PartNumber": n, "ETag": etag} for n, etag in parts]})
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "NoSuchUpload" and self.exists(key):
                return  # completed by an earlier call that did not live to record it
            raise InvalidRequest(f"the object store refused to complete the upload: {exc}") from exc
        self.fs.invalidate_cache()

    def abort_multipart(self, key: str, multipart_id: str | None) -> None:
        from botocore.exceptions import ClientError

        # Already completed, aborted or expired: nothing is left to free.
        with contextlib.suppress(ClientError):
            self._client.abort_multipart_upload(Bucket=self.bucket, Key=self._key(key), UploadId=multipart_id)

    def ensure_bucket(self) -> bool:
        """Create the bucket if it is missing (a fresh deployment's first start, on any S3).

        Idempotent and safe when replicas race: the bucket another replica created just before
        (``BucketAlreadyOwnedByYou``) is fine. A store that does not answer, or refuses to create
        the bucket (a name taken by another account, no permission), raises :class:`StoreUnavailable`.
        """
        from botocore.exceptions import ClientError

        try:
            self._client.head_bucket(Bucket=self.bucket)
            return False
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
                raise StoreUnavailable(f"object store s3://{self.bucket}: {exc}") from exc
        except Exception as exc:
            raise StoreUnavailable(f"object store s3://{self.bucket}: {exc}") from exc
        # us-east-1 (and S3 servers without regions) refuse a location constraint; other regions need one.
        where = ({} if self.region in (None, "", "us-east-1")
                 else {"CreateBucketConfiguration": {"LocationConstraint": self.region}})
        try:
            self._client.create_bucket(Bucket=self.bucket, **where)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "BucketAlreadyOwnedByYou":
                return False
            raise StoreUnavailable(f"object store s3://{self.bucket} is missing and cannot be created: {exc}",
                                   hint="create the bucket, or give the store's key the right to create it") from exc
        except Exception as exc:
            raise StoreUnavailable(f"object store s3://{self.bucket}: {exc}") from exc
        self.fs.invalidate_cache()
        return True

    def ping(self) -> None:
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except Exception as exc:
            raise StoreUnavailable(f"object store s3://{self.bucket}: {exc}") from exc


def open_object_store(url: str, *, endpoint_url: str | None = None, public_endpoint_url: str | None = None,
                      region: str | None = None, key: str | None = None, secret: str | None = None) -> ObjectStore:
    """The store for ``file://`` or ``s3://`` URLs."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return LocalObjectStore(Path(unquote(parsed.netloc + parsed.path)))
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ConfigError(f"object store URL {url!r} names no bucket (use s3://bucket/prefix)")
        return S3ObjectStore(parsed.netloc, parsed.path.strip("/"), endpoint_url=endpoint_url,
                             public_endpoint_url=public_endpoint_url, region=region, key=key, secret=secret)
    raise ConfigError(f"object store URL {url!r}: the scheme must be file or s3")
