"""Bearer credentials: short-lived JWT access tokens and opaque, hashed refresh and API tokens.

Access tokens are signed with the one algorithm the settings name; the decoder is told that
algorithm and never reads it from the token, so ``alg: none`` and HS/RS confusion are refused.
Refresh and API tokens are random strings with a recognisable prefix, stored only as SHA-256
hashes (they carry 256 bits of entropy, so a slow hash would add nothing). A refresh token is not
a JWT at all, so it can never pass as an access token.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt

from tuplehub.storage.errors import ConfigError, Unauthenticated
from tuplehub.storage.paths import read_json, write_private
from tuplehub.storage.settings import Settings

ISSUER = "tuplehub"
AUDIENCE = "tuplehub-api"
REFRESH_PREFIX = "thr_"
API_TOKEN_PREFIX = "tht_"
_REQUIRED = ["exp", "iat", "nbf", "sub", "jti", "iss", "aud"]


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_opaque(prefix: str) -> tuple[str, str]:
    """A fresh token and the hash to store in its place."""
    token = prefix + secrets.token_urlsafe(32)
    return token, hash_token(token)


@dataclass(frozen=True)
class AccessClaims:
    user_id: str
    issued_at: float
    token_id: str


class Signer:
    """Issues and checks access tokens with the keys the settings name."""

    def __init__(self, algorithm: str, signing_key: Any, verifying_key: Any, *, ttl_s: int, leeway_s: int) -> None:
        self.algorithm = algorithm
        self._signing_key = signing_key
        self._verifying_key = verifying_key
        self.ttl_s = ttl_s
        self.leeway_s = leeway_s

    @classmethod
    def from_settings(cls, settings: Settings) -> Signer:
        algorithm = settings.jwt_algorithm
        if algorithm.startswith("HS"):
            key = _hmac_secret(settings)
            signing, verifying = key, key
        else:
            if settings.jwt_private_key_file is None or settings.jwt_public_key_file is None:
                raise ConfigError(f"jwt_algorithm {algorithm} needs TUPLEHUB_JWT_PRIVATE_KEY_FILE and "
                                  "TUPLEHUB_JWT_PUBLIC_KEY_FILE (PEM)")
            signing = settings.jwt_private_key_file.read_bytes()
            verifying = settings.jwt_public_key_file.read_bytes()
        return cls(algorithm, signing, verifying, ttl_s=settings.access_token_ttl_s, leeway_s=settings.clock_skew_s)

    def issue(self, user_id: str) -> str:
        now = round(time.time(), 3)  # NumericDate may be fractional; ms matches sessions_valid_after
        claims = {"sub": user_id, "iat": now, "nbf": now, "exp": now + self.ttl_s, "jti": uuid.uuid4().hex,
                  "iss": ISSUER, "aud": AUDIENCE, "typ": "access"}
        return jwt.encode(claims, self._signing_key, algorithm=self.algorithm, headers={"typ": "JWT"})

    def verify(self, token: str) -> AccessClaims:
        try:
            claims = jwt.decode(token, self._verifying_key, algorithms=[self.algorithm], audience=AUDIENCE,
                                issuer=ISSUER, leeway=self.leeway_s, options={"require": _REQUIRED})
        except jwt.ExpiredSignatureError as exc:
            raise Unauthenticated("the access token has expired; refresh it or sign in again") from exc
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"the access token is not valid: {exc}") from exc
        if claims.get("typ") != "access" or not isinstance(claims["sub"], str):
            raise Unauthenticated("the token is not an access token")
        if claims["iat"] > time.time() + self.leeway_s:
            raise Unauthenticated("the access token was issued in the future")
        return AccessClaims(user_id=claims["sub"], issued_at=float(claims["iat"]), token_id=claims["jti"])


def _hmac_secret(settings: Settings) -> bytes:
    if settings.jwt_secret is not None:
        secret = settings.jwt_secret.get_secret_value().encode()
    elif settings.embedded_catalog:
        secret = _embedded_secret(settings)
    else:
        raise ConfigError("set TUPLEHUB_JWT_SECRET (32+ random bytes, e.g. `openssl rand -hex 32`) or a key pair: "
                          "a deployment never signs tokens with a built-in key")
    needed = int(settings.jwt_algorithm[2:]) // 8  # RFC 7518 3.2: at least the hash's size
    if len(secret) < needed:
        raise ConfigError(f"TUPLEHUB_JWT_SECRET must be at least {needed} bytes long for {settings.jwt_algorithm}")
    return secret


def _embedded_secret(settings: Settings) -> bytes:
    """The embedded server's key, generated once into its data folder, readable by its user only."""
    path = settings.data_dir / "jwt-secret.json"
    stored = read_json(path)
    if stored is None or not stored.get("secret"):
        stored = {"secret": secrets.token_hex(32)}
        write_private(path, stored)
    return str(stored["secret"]).encode()
