"""Forged access tokens: tampered, expired, not yet valid, unsigned, algorithm confusion, wrong claims."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tuplehub.api.access.tokens import AUDIENCE, ISSUER, Signer
from tuplehub.storage.errors import Unauthenticated
from tuplehub.storage.settings import Settings

SECRET = b"s" * 64


def hs256() -> Signer:
    return Signer("HS256", SECRET, SECRET, ttl_s=900, leeway_s=30)


def claims(**overrides: Any) -> dict[str, Any]:
    now = time.time()
    values = {"sub": "user-1", "iat": now, "nbf": now, "exp": now + 900, "jti": "j1", "iss": ISSUER,
              "aud": AUDIENCE, "typ": "access"}
    return {k: v for k, v in {**values, **overrides}.items() if v is not None}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def handmade(header: dict[str, Any], payload: dict[str, Any], sign: Callable[[bytes], bytes]) -> str:
    """A token built by hand, the way an attacker would, without any library's safety checks."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    return f"{signing_input}.{b64(sign(signing_input.encode()))}"


def test_a_valid_token_verifies() -> None:
    signer = hs256()
    assert signer.verify(signer.issue("user-1")).user_id == "user-1"


def test_tampered_payload_is_refused() -> None:
    signer = hs256()
    header, _, signature = signer.issue("user-1").split(".")
    forged = f"{header}.{b64(json.dumps(claims(sub='admin')).encode())}.{signature}"
    with pytest.raises(Unauthenticated, match="not valid"):
        signer.verify(forged)


# Time claims are offsets from now, added when the test runs: a timestamp taken at collection goes
# stale in a suite that runs longer than the offset.
@pytest.mark.parametrize(("overrides", "message"), [
    ({"exp": -120}, "expired"),
    ({"nbf": 600}, "not valid"),
    ({"iat": 600}, "not valid|future"),
    ({"jti": None}, "not valid"),
    ({"aud": "someone-else"}, "not valid"),
    ({"iss": "pytupli"}, "not valid"),
    ({"typ": "refresh"}, "not an access token"),
])
def test_claims_are_checked(overrides: dict[str, Any], message: str) -> None:
    now = time.time()
    overrides = {k: now + v if k in ("exp", "nbf", "iat") else v for k, v in overrides.items()}
    with pytest.raises(Unauthenticated, match=message):
        hs256().verify(jwt.encode(claims(**overrides), SECRET, algorithm="HS256"))


def test_clock_skew_is_tolerated_but_bounded() -> None:
    signer = hs256()
    assert signer.verify(jwt.encode(claims(exp=time.time() - 10), SECRET, algorithm="HS256"))
    with pytest.raises(Unauthenticated):
        signer.verify(jwt.encode(claims(exp=time.time() - 31), SECRET, algorithm="HS256"))


def test_unsigned_tokens_are_refused() -> None:
    for alg in ("none", "None", "NONE"):
        token = handmade({"alg": alg, "typ": "JWT"}, claims(), lambda _: b"")
        with pytest.raises(Unauthenticated):
            hs256().verify(token)


def test_another_hmac_algorithm_is_refused() -> None:
    """The algorithm is pinned by the settings, never taken from the token's header."""
    with pytest.raises(Unauthenticated):
        hs256().verify(jwt.encode(claims(), SECRET, algorithm="HS512"))


def test_hs_rs_confusion_is_refused(tmp_path: Path) -> None:
    """Signing an HS256 token with the server's *public* RSA key must not pass an RS256 server."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "private.pem").write_bytes(private)
    (tmp_path / "public.pem").write_bytes(public)
    settings = Settings(_env_file=None, data_dir=tmp_path, jwt_algorithm="RS256",
                        jwt_private_key_file=tmp_path / "private.pem", jwt_public_key_file=tmp_path / "public.pem")
    signer = Signer.from_settings(settings)
    assert signer.verify(signer.issue("user-1")).user_id == "user-1"
    forged = handmade({"alg": "HS256", "typ": "JWT"}, claims(),
                      lambda data: hmac.new(public, data, hashlib.sha256).digest())
    with pytest.raises(Unauthenticated):
        signer.verify(forged)
    # ... and the other way round: an HS256 server refuses an RS256 token.
    with pytest.raises(Unauthenticated):
        hs256().verify(jwt.encode(claims(), private, algorithm="RS256"))


def test_a_key_from_another_deployment_is_refused() -> None:
    other = Signer("HS256", b"o" * 64, b"o" * 64, ttl_s=900, leeway_s=30)
    with pytest.raises(Unauthenticated):
        hs256().verify(other.issue("user-1"))
