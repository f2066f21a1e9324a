"""The interactive API docs (Swagger UI), served with its assets from the installed package.

A lab server is often air-gapped, so the page loads nothing from the internet: Swagger UI's
script, style sheet and icon come from the ``fastapi-offline`` package, under the API's own
prefix, and the docs page's content security policy (see ``middleware.py``) allows this origin
only. "Authorize" takes an access token or an API token, declared as a bearer scheme in
``deps.py``.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

# The order of the groups on the page: what users come for first, administration last.
TAGS = [
    {"name": "datasets", "description": "Datasets, their immutable versions and their episodes."},
    {"name": "uploads", "description": "Upload sessions: send a Parquet file in parts, then ingest it."},
    {"name": "exports", "description": "Filtered, sampled exports of a version, as a job."},
    {"name": "metrics", "description": "Dataset quality metrics and benchmark frames."},
    {"name": "benchmarks", "description": "Environments (with their seeds and references) datasets are recorded on."},
    {"name": "artifacts", "description": "Any file linked to benchmarks and datasets: policies, logs, configs."},
    {"name": "jobs", "description": "Heavy work runs as jobs: poll them here."},
    {"name": "auth", "description": "Sign in and out, refresh, the caller's profile and usage."},
    {"name": "tokens", "description": "API tokens for scripts."},
    {"name": "users", "description": "Accounts (administrators)."},
    {"name": "groups", "description": "Groups and their members."},
    {"name": "roles", "description": "Roles and the rights they grant."},
    {"name": "audit", "description": "Who did what, when."},
    {"name": "health", "description": "Liveness and readiness."},
]


def _assets() -> Path:
    """Swagger UI's files as ``fastapi-offline`` ships them."""
    return Path(str(files("fastapi_offline") / "static"))


def install(app: FastAPI, prefix: str) -> None:
    """``{prefix}/docs``, its OAuth2 redirect page and its assets under ``{prefix}/docs/assets``."""
    docs, assets = f"{prefix}/docs", f"{prefix}/docs/assets"
    redirect = f"{docs}/oauth2-redirect"
    app.mount(assets, StaticFiles(directory=_assets()), name="docs-assets")

    @app.get(docs, include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=str(app.openapi_url), title=f"{app.title} API", oauth2_redirect_url=redirect,
            swagger_js_url=f"{assets}/swagger-ui-bundle.js", swagger_css_url=f"{assets}/swagger-ui.css",
            swagger_favicon_url=f"{assets}/favicon.png")

    @app.get(redirect, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()
