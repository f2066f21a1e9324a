"""Server settings: one object, read from ``TUPLEHUB_*`` variables and a ``.env`` file.

Backends are chosen by URL (``TUPLEHUB_CATALOG_URL``, ``TUPLEHUB_OBJECTS_URL``,
``TUPLEHUB_REDIS_URL``); whatever is left unset falls back to the embedded default inside
``TUPLEHUB_DATA_DIR``: an SQLite catalog, a local object folder and a bundled Redis server.
Entry points build a :class:`Settings` and pass it down; nothing reads it at import time.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import platformdirs
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from tuplehub.storage.logs import LogFormat

DEFAULT_PORT = 8470
DEFAULT_CONCURRENT_JOBS = 2


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity, e.g. a container's cpuset), not the machine's count."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def metrics_threads_default(max_concurrent_jobs: int = DEFAULT_CONCURRENT_JOBS) -> int:
    """One job's share of the CPUs, at least 1: torch threads beyond it spin against the other jobs and the API
    (on 2 shared cores, one Adam step took 78 ms with two threads and 9 ms with one)."""
    return max(1, min(256, available_cpus() // max(1, max_concurrent_jobs)))


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
    # issue 12 (compose): a fresh deployment's store has no bucket yet.
    s3_create_bucket: bool = Field(True, description=(
        "Create the bucket of TUPLEHUB_OBJECTS_URL when the API starts, if it is missing."))

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT

    queue_name: str = "tuplehub:jobs"
    ingest_timeout_s: int = Field(3600, ge=10)
    export_timeout_s: int = Field(3600, ge=10)
    job_max_tries: int = Field(5, ge=1, le=20)
    max_concurrent_jobs: int = Field(DEFAULT_CONCURRENT_JOBS, ge=1)
    heartbeat_s: float = Field(5.0, gt=0, description="How often a running job proves it is alive.")
    stale_after_s: float = Field(60.0, gt=0, description="A running job silent this long is re-run.")
    stuck_after_s: float = Field(900.0, gt=0, description=(
        "A running job whose progress has not changed this long is stuck and fails, whatever its heartbeat says."))
    requeue_every_s: int = Field(60, ge=1, description="How often lost jobs are looked for.")
    # Upgrades (issue 12): rolling restarts lose no request and no job.
    shutdown_grace_s: float = Field(10.0, ge=0, le=3600, description=(
        "On SIGTERM, how long the API waits for requests in flight and a worker for its running jobs to finish "
        "their current step (each is then handed back and runs again), before cancelling what is left."))
    metrics_timeout_s: int = Field(3600, ge=10, description="Longest a metrics job may run.")
    # issue 11 (metricsfix): torch threads sized to one job's share of the CPUs.
    metrics_threads: int = Field(
        default_factory=lambda data: metrics_threads_default(data["max_concurrent_jobs"]), ge=1, le=256,
        description="CPU threads torch may use for fitted Q evaluation; the CPUs / max_concurrent_jobs if unset.")
    auto_metrics: bool = Field(True, description="Compute the cheap metrics after every ingest.")
    metrics_recompute_every_s: int = Field(3600, ge=0, description=(
        "How often missing and stale metric results are looked for and recomputed; 0 turns it off."))

    upload_ttl_s: int = Field(24 * 3600, ge=60, description="An open upload session expires after this.")
    presign_ttl_s: int = Field(600, ge=30, le=3600, description="Lifetime of presigned URLs.")
    max_part_bytes: int = Field(2**30, description="Largest upload part the API accepts.")
    # Upload sizes (issue 11): checked against what a session declares before anything is allocated.
    max_upload_bytes: int = Field(100 * 2**30, ge=2**16, description="Largest upload one session may hold.")
    max_parts: int = Field(10_000, ge=1, le=10_000, description="Most parts one upload session may have.")
    max_body_bytes: int = Field(2**20, ge=1024, description="Largest JSON request body the API accepts.")

    # What one filter or one upload may cost (hostile input).
    filter_max_leaves: int = Field(1000, ge=1, description=(
        "Most comparisons one filter may hold (exports, derives, episode listing, rebalancing)."))
    max_tensor_bytes: int = Field(4 * 2**20, ge=1, description=(
        "Largest observation or action of one row, in bytes, that an upload may hold."))
    max_upload_episodes: int = Field(1_000_000, ge=1, description="Most episodes one upload may hold.")

    # Access. Booleans are parsed by pydantic: "False", "false", "0" and "no" all mean false.
    admin_username: str = Field("admin", description="The first admin, created on first start.")
    admin_password: SecretStr | None = Field(None, description=(
        "Password of the first admin; required on a deployment's first start. The embedded default "
        "generates one and keeps it in the user's config folder (0600)."))
    jwt_algorithm: Literal["HS256", "HS384", "HS512", "RS256", "RS512", "ES256", "EdDSA"] = "HS256"
    jwt_secret: SecretStr | None = Field(None, description=(
        "HMAC key for HS* (32 bytes or more). Unset in the embedded default: one is generated into the "
        "data folder; a deployment must set it or a key pair."))
    jwt_private_key_file: Path | None = Field(None, description="PEM private key for RS*/ES*/EdDSA.")
    jwt_public_key_file: Path | None = Field(None, description="PEM public key for RS*/ES*/EdDSA.")
    access_token_ttl_s: int = Field(900, ge=60, le=3600)
    api_token_ttl_days: int = Field(90, ge=1, le=3650, description=(
        "Lifetime of an API token created without an expiry; `tokens create --no-expiry` opts out."))
    refresh_token_ttl_s: int = Field(14 * 24 * 3600, ge=3600)
    clock_skew_s: int = Field(30, ge=0, le=300, description="Leeway for exp/iat/nbf between machines.")
    open_signup: bool = Field(False, description="Let anyone create an account through the API.")
    anonymous_read: bool = Field(False, description="Let requests without a token read public content.")
    default_roles: list[str] = Field(["contributor"], description="Site roles of a new user.")
    password_min_length: int = Field(10, ge=8, le=128)
    login_attempts_per_user: int = Field(10, ge=1)
    login_attempts_per_address: int = Field(50, ge=1)
    login_window_s: int = Field(300, ge=1, description="Window in which login attempts are counted.")
    # Per-user quotas (storage/quotas.py); unset: no limit, the default.
    quota_stored_bytes: int | None = Field(None, ge=0, description=(
        "Most bytes one user may store: decoded dataset rows plus artifacts."))
    quota_datasets: int | None = Field(None, ge=0, description="Most datasets one user may own.")
    quota_concurrent_jobs: int | None = Field(None, ge=0, description="Most jobs one user may have queued or running.")
    cors_origins: list[str] = Field(default_factory=list, description="Origins allowed by CORS; none by default.")
    hsts: bool = Field(False, description="Send Strict-Transport-Security (set when served over HTTPS).")

    # Monitoring (issue 12): logs, and Prometheus metrics on the API and on each worker.
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("WARNING", description=(
        "Lowest level logged; INFO adds one line per request and per job event."))
    log_format: LogFormat = Field("auto", description=(
        "json: one JSON object a line; text: for people; auto: text on a terminal, JSON otherwise."))
    metrics_token: SecretStr | None = Field(None, min_length=16, description=(
        "Bearer token Prometheus sends to read /metrics (API) and the workers' metrics port; "
        "unset: the API serves no /metrics."))
    worker_metrics_port: int | None = Field(None, ge=0, le=65535, description=(
        "Port on which each worker process serves its Prometheus metrics; unset: none."))
    worker_metrics_host: str = Field("127.0.0.1", description=(
        "Address of the workers' metrics port; 0.0.0.0 in a container, on the internal network only."))

    def resolved_catalog_url(self) -> str:
        return self.catalog_url or f"sqlite:///{self.data_dir / 'catalog.db'}"

    def resolved_objects_url(self) -> str:
        return self.objects_url or (self.data_dir / "objects").as_uri()

    @property
    def embedded_catalog(self) -> bool:
        return self.catalog_url is None

    @property
    def embedded_redis(self) -> bool:
        return self.redis_url is None

    def object_store_options(self) -> dict[str, str | None]:
        secret = self.s3_secret_access_key.get_secret_value() if self.s3_secret_access_key else None
        return {"endpoint_url": self.s3_endpoint_url, "public_endpoint_url": self.s3_public_endpoint_url,
                "region": self.s3_region, "key": self.s3_access_key_id, "secret": secret}
