"""Secrets at rest and API key material.

Secret values and instance tokens are stored as Fernet ciphertext; API keys are stored as
SHA-256 hashes, so a copied database file leaks neither.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
import stat
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

#: key prefixes, so a leaked key is recognisable (and greppable) at a glance
PUBLIC_KEY_PREFIX = "pk_"
PRIVATE_KEY_PREFIX = "sk_"
#: admin tokens take the official CLI's personal-access-token form (``pipecat cloud auth
#: use-pat`` wants it) and remain ordinary Bearer tokens of the API
ADMIN_TOKEN_PREFIX = "pcc_pat_"
_KEY_KINDS = frozenset({"admin", "private", "public"})

_HKDF_SALT = b"cattery.store.SecretBox"
_HKDF_INFO = b"fernet-key-v1"


class KeyFileError(Exception):
    """The secret key file is unusable (unsafe permissions, empty, unreadable)."""


class DecryptionError(Exception):
    """Ciphertext does not open with this key: the secret key changed or data is corrupt."""


def _fernet_key(key: str) -> bytes:
    """Use ``key`` as is when it is a Fernet key, else derive one from it with HKDF-SHA256."""
    raw = key.strip().encode()
    if not raw:
        raise ValueError("the secret key is empty")
    try:
        if len(base64.urlsafe_b64decode(raw)) == 32 and len(raw) == 44:
            return raw
    except (binascii.Error, ValueError):
        pass
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=_HKDF_SALT, info=_HKDF_INFO)
    return base64.urlsafe_b64encode(hkdf.derive(raw))


class SecretBox:
    """Encrypts and decrypts short strings with one key (CATTERY_SECRET_KEY or a key file)."""

    def __init__(self, key: str) -> None:
        self._fernet = Fernet(_fernet_key(key))

    def __repr__(self) -> str:
        return "SecretBox(<key hidden>)"

    @classmethod
    def from_key_file(cls, path: str | Path) -> SecretBox:
        """A box whose key lives in ``path``, created on first use."""
        return cls(load_or_create_key_file(path))

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode("ascii")

    def decrypt(self, ciphertext: str) -> str:
        try:
            return self._fernet.decrypt(ciphertext.encode("ascii")).decode()
        except (InvalidToken, UnicodeError) as exc:
            raise DecryptionError(
                "cannot decrypt a stored secret: was the secret key changed?"
            ) from exc


def load_or_create_key_file(path: str | Path) -> str:
    """Read the key in ``path``, or create it (mode 0600) with a fresh Fernet key.

    A key file readable by group or others is refused rather than silently used: whoever
    can read it can read every stored secret.
    """
    path = Path(path)
    if not path.exists():
        _create_key_file(path)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise KeyFileError(
            f"secret key file {path} has mode {mode:04o}, readable by group or others; "
            f"restrict it with: chmod 600 {path}"
        )
    key = path.read_text().strip()
    if not key:
        raise KeyFileError(f"secret key file {path} is empty")
    return key


def _create_key_file(path: Path) -> None:
    """Write a new key beside ``path``, then link it into place: readers never see half a key."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as file:
            file.write(Fernet.generate_key().decode("ascii") + "\n")
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process created it first; use theirs
    finally:
        tmp.unlink(missing_ok=True)


def hash_key(raw: str) -> str:
    """The SHA-256 hex digest stored for an API key (keys are random, so no salt needed)."""
    return hashlib.sha256(raw.encode()).hexdigest()


def new_key(kind: str) -> str:
    """A fresh API key: ``pk_...`` for public keys, ``sk_...`` for private keys and
    ``pcc_pat_...`` for admin tokens."""
    if kind not in _KEY_KINDS:
        raise ValueError(f"unknown API key kind {kind!r}")
    prefixes = {"public": PUBLIC_KEY_PREFIX, "admin": ADMIN_TOKEN_PREFIX}
    prefix = prefixes.get(kind, PRIVATE_KEY_PREFIX)
    return prefix + secrets.token_urlsafe(32)
