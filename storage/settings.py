"""Server settings: one object, read from ``TUPLEHUB_*`` variables and a ``.env`` file.

Backends are chosen by URL (``TUPLEHUB_CATALOG_URL``, ``TUPLEHUB_OBJECTS_URL``,
``TUPLEHUB_REDIS_URL``); whatever is left unset falls back to the embedded default inside
``TUPLEHUB_DATA_DIR``: an SQLite catalog, a local object folder and a bundled Redis server.
Entry points build a :class:`Settings` and pass it down; nothing reads it at import time.
"""

from __future__ import annotations

from pathlib import Path

import platformdirs
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_PORT = 8470


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TUPLEHUB_", env_file=".env", extra="ignore")

    data_dir: Path = Field(default_factory=lambda: platformdirs.user_data_path("tuplehub"),
                           description="Folder of the embedded catalog, objects and Redis.")
    catalog_url: str | None = Field(None, description="sqlite:///path or mongodb://host/db")
    objects_url: str | None = Field(None, description="file:///path or s3://bucket/prefix")
    redis_url: str | None = Field(None, description="redis://host:port/db; unset starts a bundled server")

    s3_endpoint_url: str | None = Field(None, description="S3 API endpoint, e.g. MinIO's http://minio:9000")
    s3_public_endpoint_url: str | None = Field(None, description="Endpoint clients reach, for presigned URLs")
    s3_region: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT

    queue_name: str = "tuplehub:jobs"
    ingest_timeout_s: int = Field(3600, ge=10)
    export_timeout_s: int = Field(3600, ge=10)
    job_max_tries: int = Field(5, ge=1, le=20)
    max_concurrent_jobs: int = Field(2, ge=1)
    heartbeat_s: float = Field(5.0, gt=0, description="How often a running job proves it is alive.")
    stale_after_s: float = Field(60.0, gt=0, description="A running job silent this long is re-run.")
    requeue_every_s: int = Field(60, ge=1, description="How often lost jobs are looked for.")

    upload_ttl_s: int = Field(24 * 3600, ge=60, description="An open upload session expires after this.")
    presign_ttl_s: int = Field(600, ge=30, le=3600, description="Lifetime of presigned URLs.")
    max_part_bytes: int = Field(2**30, description="Largest upload part the API accepts.")

    def resolved_catalog_url(self) -> str:
        return self.catalog_url or f"sqlite:///{self.data_dir / 'catalog.db'}"

    def resolved_objects_url(self) -> str:
        return self.objects_url or (self.data_dir / "objects").as_uri()

    @property
    def embedded_redis(self) -> bool:
        return self.redis_url is None

    def object_store_options(self) -> dict[str, str | None]:
        secret = self.s3_secret_access_key.get_secret_value() if self.s3_secret_access_key else None
        return {"endpoint_url": self.s3_endpoint_url, "public_endpoint_url": self.s3_public_endpoint_url,
                "region": self.s3_region, "key": self.s3_access_key_id, "secret": secret}
