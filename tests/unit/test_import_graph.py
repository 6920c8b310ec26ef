"""The package's import graph keeps its layers: routes are adapters over services, the
contract stands alone, and the control plane knows backends only by their packages."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import cattery

ROOT = Path(cattery.__file__).parent
API = "cattery.control.api"
DEV = "cattery.control.dev"
#: the composition roots: the app factory mounts the routers, the CLI runs ``cattery dev``
ROOTS = frozenset({"cattery.control.app", "cattery.cli"})
BACKEND_PACKAGES = ("cattery.backends.local", "cattery.backends.container", "cattery.backends.ray")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    path = ROOT.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, wherever in the file (a function's own imports too)."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(
                f"{base}.{alias.name}" for alias in node.names if _is_module(f"{base}.{alias.name}")
            )
    return found


def _graph() -> dict[str, set[str]]:
    return {_module_name(path): _imports(path) for path in ROOT.rglob("*.py")}


def _under(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _is_file_module(name: str) -> bool:
    return ROOT.parent.joinpath(*name.split(".")).with_suffix(".py").is_file()


def _forbidden_for_adapter(module: str, target: str) -> bool:
    """A route module importing another route module, or ``dev/`` and ``api/`` each other."""
    if _under(module, API):
        return (_under(target, API) and _is_file_module(target) and target != module) or _under(
            target, DEV
        )
    return _under(module, DEV) and _under(target, API)


def test_route_modules_never_import_each_other() -> None:
    wrong = [
        f"{module} imports {target}"
        for module, targets in _graph().items()
        for target in targets
        if _forbidden_for_adapter(module, target)
    ]
    assert not wrong, "\n".join(wrong)


def test_nothing_below_the_routes_imports_them() -> None:
    wrong = [
        f"{module} imports {target}"
        for module, targets in _graph().items()
        if not (_under(module, API) or _under(module, DEV) or module in ROOTS)
        for target in targets
        if _under(target, API) or _under(target, DEV)
    ]
    assert not wrong, "\n".join(wrong)


def test_control_knows_backends_only_by_their_packages() -> None:
    wrong = [
        f"{module} imports {target}"
        for module, targets in _graph().items()
        if _under(module, "cattery.control") or _under(module, "cattery.pools")
        for target in targets
        for package in BACKEND_PACKAGES
        if target.startswith(package + ".")
    ]
    assert not wrong, "\n".join(wrong)


def test_the_contract_imports_only_the_standard_library() -> None:
    imported = _imports(ROOT / "contract.py")
    outside = {
        name
        for name in imported
        if name.split(".")[0] not in sys.stdlib_module_names and name != "__future__"
    }
    assert not outside


def test_the_checks_see_the_route_modules() -> None:
    """The rules above would pass vacuously if the walk found no routes."""
    graph = _graph()
    assert "cattery.control.api.public.start" in graph
    assert "cattery.control.sessions" in graph["cattery.control.api.public.start"]


def test_only_the_ray_backend_imports_ray() -> None:
    """Ray is a cluster's dependency: nothing outside ``cattery.backends.ray`` imports it,
    and the app imports that package only inside the function that opens a cluster."""
    wrong = [
        f"{module} imports {target}"
        for module, targets in _graph().items()
        if not _under(module, "cattery.backends.ray")
        for target in targets
        if _under(target, "ray")
    ]
    assert not wrong, "\n".join(wrong)
    app = ast.parse((ROOT / "control" / "app.py").read_text())
    top_level = {
        node.module
        for node in app.body
        if isinstance(node, ast.ImportFrom) and node.module is not None
    }
    assert not [name for name in top_level if _under(name, "cattery.backends.ray")]


def test_the_default_serve_path_never_imports_ray() -> None:
    import subprocess

    code = (
        "import sys\n"
        "import cattery.cli, cattery.control.app, cattery.control.main, cattery.runtime.main\n"
        "from cattery.control.app import create_app\n"
        "from cattery.settings import Settings\n"
        "create_app(Settings())\n"
        "assert 'ray' not in sys.modules, 'ray was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
