"""Passwords: argon2id hashes (argon2-cffi) and a policy checked before anything is stored."""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from tuplehub.storage.errors import InvalidRequest

_HASHER = PasswordHasher()  # argon2id with the library's current recommended parameters
# A hash that never matches, verified when the user does not exist so both cases take as long.
_DUMMY_HASH = _HASHER.hash("tuplehub: no such user")

# The most common passwords of public breach lists that are long enough to pass the length rule.
COMMON_PASSWORDS = frozenset({
    "1234567890", "12345678910", "123456789a", "1q2w3e4r5t", "1qaz2wsx3edc", "0987654321", "1111111111",
    "0000000000", "qwertyuiop", "password1", "password12", "password123", "password1234", "passw0rd123",
    "p@ssw0rd123", "qwerty1234", "qwerty12345", "qwerty123456", "iloveyou123", "abcdefghij", "abc1234567",
    "letmein123", "welcome123", "welcome1234", "administrator", "admin12345", "admin123456", "changeme123",
    "changeme12", "trustno1234", "football123", "baseball123", "superman123", "sunshine123", "princess123",
    "dragon1234", "monkey12345", "computer123", "michael123", "liverpool1", "chocolate1", "starwars123",
    "whatever123", "qazwsxedcrfv", "asdfghjkl1", "zxcvbnm123", "1234qwerasdf", "q1w2e3r4t5y6", "a1b2c3d4e5",
    "tuplehub123", "tuplehubadmin", "secret1234", "mypassword1",
})


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


async def verify_password(stored_hash: str | None, password: str) -> bool:
    """Check off the event loop (argon2 takes tens of milliseconds on purpose)."""
    def verify() -> bool:
        try:
            return _HASHER.verify(stored_hash or _DUMMY_HASH, password) and stored_hash is not None
        except (VerificationError, InvalidHashError):
            return False
    return await asyncio.to_thread(verify)


def check_password_policy(password: str, *, username: str, min_length: int) -> None:
    """Reject short, common or name-derived passwords with a message that says which rule failed."""
    if len(password) < min_length:
        raise InvalidRequest(f"the password must have at least {min_length} characters", field="password")
    folded = password.lower()
    if folded in COMMON_PASSWORDS or len(set(folded)) < 4:
        raise InvalidRequest("the password is too common or too repetitive; choose another", field="password")
    if username.lower() in folded:
        raise InvalidRequest("the password must not contain the user name", field="password")
