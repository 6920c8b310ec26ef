"""A deploy's image naming a folder: found, without bot.py, or not there at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from cattery.control.images import resolve_image
from cattery.errors import CatteryError


def test_a_folder_with_bot_py_is_found_with_or_without_a_tag(tmp_path: Path) -> None:
    (tmp_path / "bot.py").write_text("async def bot(args): ...\n")
    for image in (str(tmp_path), f"{tmp_path}:latest", f"file://{tmp_path}"):
        assert resolve_image(image, containers=False).folder == tmp_path


@pytest.mark.parametrize("tag", ["", ":latest"])
def test_a_folder_that_does_not_exist_is_a_400_saying_so(tmp_path: Path, tag: str) -> None:
    missing = tmp_path / "no-such-agent"
    with pytest.raises(CatteryError) as raised:
        resolve_image(f"{missing}{tag}", containers=False)
    assert raised.value.status_code == 400
    assert raised.value.code == "PCC_IMAGE_NOT_FOUND"
    assert f"{missing} does not exist" in raised.value.message
    assert "absolute" not in raised.value.message


def test_a_folder_without_bot_py_says_so(tmp_path: Path) -> None:
    with pytest.raises(CatteryError, match=r"has no bot\.py") as raised:
        resolve_image(str(tmp_path), containers=False)
    assert raised.value.status_code == 400


def test_a_url_without_an_absolute_path_is_refused_saying_what_is_wanted() -> None:
    with pytest.raises(CatteryError, match="absolute path") as raised:
        resolve_image("file://relative", containers=False)
    assert raised.value.status_code == 400
