"""What the API and the workers share about being watched: the check of a Prometheus scrape's token.

Both serve their metrics only to ``TUPLEHUB_METRICS_TOKEN``'s bearer; this is the one place that
reads an ``Authorization`` header for it, so the API's ``/metrics`` and a worker's metrics port
accept and refuse exactly the same headers.
"""

from __future__ import annotations

import hmac

METRICS_TOKEN_HINT = "send 'Authorization: Bearer <TUPLEHUB_METRICS_TOKEN>'"


def metrics_token_matches(authorization: str | None, token: str) -> bool:
    """Whether an ``Authorization`` header carries ``token`` as a bearer token.

    The scheme is case-insensitive (RFC 9110), as for the API's own bearer tokens; the token is
    compared in constant time, so a scrape cannot learn it a byte at a time. ``authorization`` is
    the header as ASGI and WSGI servers both give it (its bytes decoded as Latin-1), and a client
    sends the token as UTF-8, so the bytes compared are the ones on the wire.
    """
    scheme, _, given = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode("latin-1", "replace"), token.encode())
