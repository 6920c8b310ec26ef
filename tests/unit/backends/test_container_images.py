"""Image references and pull credentials, as deploys read them."""

from __future__ import annotations

import base64

import pytest

from cattery.backends.container.engine import (
    ImageReferenceInvalid,
    check_reference,
    split_reference,
)
from cattery.control.images import is_folder_image, parse_credentials
from cattery.errors import InvalidRequest


@pytest.mark.parametrize(
    "ref",
    [
        "bot:1",
        "myorg/bot:1.2",
        "localhost/cattery-base:latest",
        "registry.example.com:5000/team/bot:v1-rc.2",
        "127.0.0.1:5999/team/bot:1",
        "ghcr.io/org/bot@sha256:" + "a" * 64,
    ],
)
def test_well_formed_references(ref: str) -> None:
    assert check_reference(ref) == ref


@pytest.mark.parametrize(
    "ref", ["", "Bad Ref!:1", "localhost/UPPER/case:1", "bot:", "bot::1", "-bot:1", "a//b:1"]
)
def test_malformed_references(ref: str) -> None:
    with pytest.raises(ImageReferenceInvalid):
        check_reference(ref)


def test_split_reference() -> None:
    assert split_reference("myorg/bot:1.2") == ("myorg/bot", "1.2")
    assert split_reference("127.0.0.1:5999/team/bot") == ("127.0.0.1:5999/team/bot", None)
    assert split_reference("bot@sha256:abc") == ("bot", "sha256:abc")


def test_folders_and_references() -> None:
    assert is_folder_image("/srv/bots/echo:latest") and is_folder_image("file:///srv/echo")
    assert not is_folder_image("myorg/bot:1")


def test_credentials_plain_and_base64() -> None:
    auth = parse_credentials("robot:pa:ss", "ghcr.io")
    assert (auth.username, auth.password, auth.registry) == ("robot", "pa:ss", "ghcr.io")
    encoded = base64.b64encode(b"robot:secret").decode()
    assert parse_credentials(encoded).password == "secret"
    assert "secret" not in repr(parse_credentials(encoded))
    for bad in ("no-colon", ":nouser", base64.b64encode(b"nocolon").decode()):
        with pytest.raises(InvalidRequest):
            parse_credentials(bad)
