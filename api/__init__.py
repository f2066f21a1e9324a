"""The HTTP API (FastAPI), versioned under ``/api/v1``."""

from tuplehub.api.app import create_app

__all__ = ["create_app"]
