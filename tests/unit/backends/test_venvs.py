"""Which file decides an agent folder's dependencies, and when two folders share a venv."""

from pathlib import Path

from cattery.backends.local.venvs import dependency_source, environment_dir, environment_key

PYPROJECT = '[project]\nname = "a"\nversion = "0"\ndependencies = ["x"]\n'


def folder(tmp_path: Path, name: str, files: dict[str, str] | None = None) -> Path:
    path = tmp_path / name
    path.mkdir()
    for file, text in (files or {}).items():
        (path / file).write_text(text)
    return path


def test_a_lock_decides_then_requirements_then_pyproject(tmp_path: Path) -> None:
    files = {"pyproject.toml": PYPROJECT, "uv.lock": "lock", "requirements.txt": "y"}
    locked = folder(tmp_path, "locked", files)
    assert dependency_source(locked).kind == "uv.lock"  # type: ignore[union-attr]
    reqs = folder(tmp_path, "reqs", {"pyproject.toml": PYPROJECT, "requirements.txt": "y"})
    assert dependency_source(reqs).kind == "requirements.txt"  # type: ignore[union-attr]
    plain = folder(tmp_path, "plain", {"pyproject.toml": PYPROJECT})
    assert dependency_source(plain).kind == "pyproject.toml"  # type: ignore[union-attr]
    lock_alone = folder(tmp_path, "lock-alone", {"uv.lock": "lock"})
    assert dependency_source(lock_alone) is None
    assert dependency_source(folder(tmp_path, "none")) is None


def test_one_venv_per_lock_whatever_the_folder(tmp_path: Path) -> None:
    a = folder(tmp_path, "a", {"pyproject.toml": PYPROJECT, "uv.lock": "lock 1"})
    b = folder(tmp_path, "b", {"pyproject.toml": PYPROJECT, "uv.lock": "lock 1"})
    c = folder(tmp_path, "c", {"pyproject.toml": PYPROJECT, "uv.lock": "lock 2"})
    key = environment_key(dependency_source(a))  # type: ignore[arg-type]
    assert key == environment_key(dependency_source(b))  # type: ignore[arg-type]
    assert key != environment_key(dependency_source(c))  # type: ignore[arg-type]


def test_the_venv_path_is_absolute_for_a_relative_state_dir(tmp_path: Path) -> None:
    a = folder(tmp_path, "a", {"requirements.txt": "x"})
    path = environment_dir(Path(".cattery/envs"), dependency_source(a))  # type: ignore[arg-type]
    assert path.is_absolute() and path.parent == Path(".cattery/envs").absolute()
