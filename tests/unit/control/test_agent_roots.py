"""Folder agents come only from the allowed roots: outside them, with ``..``, through a
symlink leaving them, or longer than the system allows is a 400 with a code."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cattery.control.images import resolve_image
from cattery.errors import InvalidRequest
from cattery.settings import Settings


def bot_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "bot.py").write_text("async def bot(args): pass\n")
    return path


def refused(image: str, roots: list[Path], code: str) -> str:
    with pytest.raises(InvalidRequest) as error:
        resolve_image(image, containers=False, roots=[Path(os.path.realpath(r)) for r in roots])
    assert error.value.code == code, error.value.message
    return error.value.message


def test_a_folder_inside_a_root_is_taken(tmp_path: Path) -> None:
    folder = bot_folder(tmp_path / "roots" / "echo")
    source = resolve_image(f"{folder}:latest", containers=False, roots=[tmp_path / "roots"])
    assert source.folder == folder


def test_a_folder_outside_the_roots_is_refused(tmp_path: Path) -> None:
    bot_folder(tmp_path / "elsewhere")
    message = refused(
        f"{tmp_path}/elsewhere:latest", [tmp_path / "roots"], "AGENT_FOLDER_NOT_ALLOWED"
    )
    assert "CATTERY_AGENT_ROOTS" in message


def test_dot_dot_is_refused_even_inside(tmp_path: Path) -> None:
    bot_folder(tmp_path / "roots" / "echo")
    refused(f"{tmp_path}/roots/x/../echo:latest", [tmp_path / "roots"], "AGENT_PATH_INVALID")


def test_a_symlink_leaving_the_roots_is_refused(tmp_path: Path) -> None:
    outside = bot_folder(tmp_path / "outside")
    (tmp_path / "roots").mkdir()
    (tmp_path / "roots" / "link").symlink_to(outside)
    refused(f"{tmp_path}/roots/link:latest", [tmp_path / "roots"], "AGENT_FOLDER_NOT_ALLOWED")
    sneaky = tmp_path / "roots" / "sneaky"
    sneaky.mkdir()
    (sneaky / "bot.py").symlink_to(outside / "bot.py")
    refused(f"{sneaky}:latest", [tmp_path / "roots"], "AGENT_FOLDER_NOT_ALLOWED")


def test_a_path_longer_than_the_system_allows_is_refused(tmp_path: Path) -> None:
    refused("/" + "a" * 300 + ":latest", [tmp_path], "AGENT_PATH_TOO_LONG")
    refused("/" + "/".join(["abcdefgh"] * 600) + ":latest", [tmp_path], "AGENT_PATH_TOO_LONG")


def test_the_default_roots_are_the_given_agents_and_the_builds(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "state", agents={"echo": str(tmp_path / "echo")})
    assert settings.agent_root_folders == [tmp_path / "echo", tmp_path / "state" / "builds"]
    given = Settings(agent_roots=f"{tmp_path}/a{os.pathsep}{tmp_path}/b,{tmp_path}/c")
    assert given.agent_root_folders == [tmp_path / "a", tmp_path / "b", tmp_path / "c"]
