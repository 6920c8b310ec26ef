"""A stand-in package index for tests: a PEP 503 "simple" index on loopback serving wheels
the test builds itself. uv reaches it through its standard setting (``UV_DEFAULT_INDEX``),
so installing an agent's dependencies never leaves the machine."""

from __future__ import annotations

import base64
import functools
import hashlib
import re
import threading
import zipfile
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def build_wheel(folder: Path, name: str, version: str, modules: dict[str, str]) -> Path:
    """A pure-Python wheel of ``modules`` (``{"greeting/__init__.py": source}``) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    files = {
        **{path: source.encode() for path, source in modules.items()},
        f"{info}/METADATA": (f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n").encode(),
        f"{info}/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: cattery-tests\nRoot-Is-Purelib: true\n"
            b"Tag: py3-none-any\n"
        ),
    }
    record = [f"{path},{_record_hash(data)},{len(data)}" for path, data in files.items()]
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel = folder / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, data in files.items():
            zf.writestr(path, data)
    return wheel


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


class SimpleIndex:
    """``root/simple/<project>/index.html`` linking to ``root/files/<wheel>``, served over
    HTTP on 127.0.0.1 by a daemon thread until ``close``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "files").mkdir(parents=True, exist_ok=True)
        handler = functools.partial(_Quiet, directory=str(root))
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="stand-in-package-index", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/simple"

    def add(self, name: str, version: str, modules: dict[str, str]) -> Path:
        """Build a wheel of ``modules`` and list it under its project."""
        wheel = build_wheel(self.root / "files", name, version, modules)
        project = re.sub(r"[-_.]+", "-", name).lower()
        links = [
            f'<a href="../../files/{w.name}#sha256={hashlib.sha256(w.read_bytes()).hexdigest()}">'
            f"{w.name}</a><br>"
            for w in sorted((self.root / "files").glob("*.whl"))
            if re.sub(r"[-_.]+", "-", w.name.split("-")[0]).lower() == project
        ]
        page = self.root / "simple" / project / "index.html"
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_text("<!DOCTYPE html><html><body>\n" + "\n".join(links) + "\n</body></html>\n")
        return wheel

    def uv_env(self, cache: Path) -> dict[str, str]:
        """uv's standard settings that make this the only index (its cache in ``cache``)."""
        return {"UV_DEFAULT_INDEX": self.url, "UV_CACHE_DIR": str(cache)}

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
