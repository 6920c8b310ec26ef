"""SecretBox, the key file, and API key material."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from cattery.store import (
    DecryptionError,
    KeyFileError,
    SecretBox,
    hash_key,
    load_or_create_key_file,
    new_key,
)


def test_round_trip_with_any_string_key() -> None:
    box = SecretBox("correct horse battery staple")
    ciphertext = box.encrypt("hunter2 ✓")
    assert "hunter2" not in ciphertext
    assert box.decrypt(ciphertext) == "hunter2 ✓"
    # the derived key is stable: a restarted control plane reads what it wrote
    assert SecretBox("correct horse battery staple").decrypt(ciphertext) == "hunter2 ✓"


def test_a_fernet_key_is_used_as_is() -> None:
    key = Fernet.generate_key().decode()
    ciphertext = SecretBox(key).encrypt("value")
    assert Fernet(key.encode()).decrypt(ciphertext.encode()) == b"value"


def test_wrong_key_is_a_clear_error() -> None:
    ciphertext = SecretBox("one key").encrypt("value")
    with pytest.raises(DecryptionError, match="secret key"):
        SecretBox("another key").decrypt(ciphertext)


def test_empty_key_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        SecretBox("  ")


def test_repr_hides_the_key() -> None:
    assert "passphrase" not in repr(SecretBox("passphrase"))


def test_key_file_is_created_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "state" / "secret.key"
    key = load_or_create_key_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_key_file(path) == key
    assert SecretBox.from_key_file(path).decrypt(SecretBox(key).encrypt("v")) == "v"
    assert [p.name for p in path.parent.iterdir()] == ["secret.key"]  # no temp file left


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_key_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "secret.key"
    load_or_create_key_file(path)
    os.chmod(path, mode)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_or_create_key_file(path)


def test_empty_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "secret.key"
    path.touch(mode=0o600)
    with pytest.raises(KeyFileError, match="empty"):
        load_or_create_key_file(path)


def test_hash_key_is_sha256_hex() -> None:
    assert hash_key("sk_abc") == hashlib.sha256(b"sk_abc").hexdigest()


def test_new_keys_carry_their_kind() -> None:
    assert new_key("public").startswith("pk_")
    assert new_key("private").startswith("sk_")
    assert new_key("admin").startswith("pcc_pat_")
    assert new_key("public") != new_key("public")
    assert len(new_key("public")) > 40
    with pytest.raises(ValueError):
        new_key("root")
