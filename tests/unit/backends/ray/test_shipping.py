"""Shipping agents' code: one archive per content, unpacked once per node."""

from __future__ import annotations

from pathlib import Path

from cattery.backends.ray.shipping import Packer, pack, unpack


def make_bot(folder: Path) -> Path:
    (folder / "pkg").mkdir(parents=True)
    (folder / "bot.py").write_text("async def bot(args): pass\n")
    (folder / "pkg" / "helper.py").write_text("X = 1\n")
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "bot.cpython-311.pyc").write_bytes(b"\0")
    (folder / ".venv").mkdir()
    (folder / ".venv" / "big").write_bytes(b"\0" * 1000)
    return folder


def test_the_same_content_has_the_same_hash(tmp_path: Path) -> None:
    one, two = make_bot(tmp_path / "one"), make_bot(tmp_path / "two")
    assert pack(one).digest == pack(two).digest
    (two / "bot.py").write_text("async def bot(args): return 1\n")
    assert pack(one).digest != pack(two).digest


def test_unpacked_code_is_the_folder_without_caches(tmp_path: Path) -> None:
    bundle = pack(make_bot(tmp_path / "bot"))
    target = unpack(bundle.data, bundle.digest, tmp_path / "bundles")
    files = sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file())
    assert files == ["bot.py", "pkg/helper.py"]
    assert unpack(b"not read again", bundle.digest, tmp_path / "bundles") == target


def test_a_folder_is_packed_again_only_when_it_changes(tmp_path: Path) -> None:
    folder = make_bot(tmp_path / "bot")
    packer = Packer()
    first = packer.pack(folder)
    assert packer.pack(folder) is first
    (folder / "extra.py").write_text("Y = 2\n")
    assert packer.pack(folder).digest != first.digest


def test_an_image_naming_bot_py_ships_its_folder(tmp_path: Path) -> None:
    folder = make_bot(tmp_path / "bot")
    bundle, entry = Packer().pack_image(str(folder / "bot.py"))
    assert entry == "bot.py"
    assert bundle.digest == pack(folder).digest
