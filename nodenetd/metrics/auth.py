"""Basic-auth passwords for the metrics endpoint: hashed in the config, never in clear.

Two hash forms are accepted:

- **bcrypt** (``$2b$12$...``, ``$2y$``/``$2a$`` too), as Prometheus' ``web.yml`` and
  ``htpasswd -nBC 12 USER`` write them, so a fleet can reuse its existing hashes;
- **PBKDF2-HMAC-SHA256** (``pbkdf2_sha256$ITERATIONS$SALT$HASH``, salt and hash in
  URL-safe base64), which needs nothing beyond the standard library.
  ``python3 -m nodenetd.metrics hash-password`` prints one.

Comparisons are constant time (``hmac.compare_digest``; bcrypt's own check is too). A
verified (user, password) pair is remembered by its SHA-256, so a scrape every 15 s does not
pay a deliberately slow hash each time (exporter-toolkit does the same); an unknown user is
checked against a dummy hash, so its answer takes as long as a wrong password's.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import threading
from collections.abc import Mapping

__all__ = ["PasswordCheck", "hash_password", "hash_problem"]

PBKDF2_ITERATIONS = 600_000  # OWASP's 2023 figure for PBKDF2-HMAC-SHA256
_PBKDF2 = re.compile(r"^pbkdf2_sha256\$(\d+)\$([A-Za-z0-9_=-]+)\$([A-Za-z0-9_=-]+)$")
_BCRYPT = re.compile(r"^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$")
_CACHE_SIZE = 64


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, *, iterations: int = PBKDF2_ITERATIONS) -> str:
    """A ``pbkdf2_sha256$...`` hash of ``password`` with a fresh 16-byte salt."""
    salt = os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return f"pbkdf2_sha256${iterations}${_b64(salt)}${_b64(digest)}"


def _bcrypt_module():
    try:
        import bcrypt
    except ImportError:
        return None
    return bcrypt


def hash_problem(text: object) -> str | None:
    """Why ``text`` is not a usable password hash, or None when it is."""
    if not isinstance(text, str):
        return "a password hash is a string"
    if _BCRYPT.match(text):
        if _bcrypt_module() is None:
            return "bcrypt hashes need the Python bcrypt module (Debian: python3-bcrypt)"
        return None
    match = _PBKDF2.match(text)
    if match:
        if int(match.group(1)) < 10_000:
            return "pbkdf2_sha256 needs at least 10000 iterations"
        return None
    return ("not a bcrypt ($2b$...) or pbkdf2_sha256$ITERATIONS$SALT$HASH hash; "
            "make one with: python3 -m nodenetd.metrics hash-password")


def _verify(stored: str, password: bytes) -> bool:
    match = _PBKDF2.match(stored)
    if match:
        iterations, salt, expected = int(match.group(1)), _unb64(match.group(2)), \
            _unb64(match.group(3))
        digest = hashlib.pbkdf2_hmac("sha256", password, salt, iterations)
        return hmac.compare_digest(digest, expected)
    bcrypt = _bcrypt_module()
    if bcrypt is not None and _BCRYPT.match(stored):
        try:
            return bool(bcrypt.checkpw(password, stored.encode()))
        except ValueError:
            return False
    return False


# A hash nobody's password matches, to spend the same time on an unknown user.
_DUMMY = f"pbkdf2_sha256${PBKDF2_ITERATIONS}$AAAAAAAAAAAAAAAAAAAAAA$" + "A" * 43


class PasswordCheck:
    """Checks ``user:password`` pairs against the configured hashes; thread safe."""

    def __init__(self, users: Mapping[str, str]) -> None:
        self._users = dict(users)
        self._ok: dict[bytes, None] = {}
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self._users)

    def check(self, user: str, password: str) -> bool:
        key = hashlib.sha256(f"{user}\0{password}".encode()).digest()
        with self._lock:
            if key in self._ok:
                return True
        stored = self._users.get(user)
        ok = _verify(stored if stored is not None else _DUMMY, password.encode())
        if ok and stored is not None:
            with self._lock:
                if len(self._ok) >= _CACHE_SIZE:
                    self._ok.pop(next(iter(self._ok)))
                self._ok[key] = None
            return True
        return False
