"""A private podman engine for the container tests: its own storage, the Docker API on a socket.

No Docker engine runs here, but Debian's podman does, as root, and serves the Docker Engine
API (``podman system service``), which is what the container backend speaks. Everything it
stores lives under one folder (``CATTERY_TEST_PODMAN_DIR``), configured by the files written
here: runc (crun fails on this cgroup layout), cgroupfs, events in a file, ulimits root can
grant.

Preparing needs the network (Debian's mirror for the base root file system, PyPI for
cattery-base), so ``./scripts/test`` does it before entering its network namespace::

    python -m tests.support.podman prepare DIR
    python -m tests.support.podman cleanup DIR   # afterwards: storage and folder removed

The tests then start the API service inside the namespace (``EngineForTests``), detached
from the test process, and stop it at the end of the session.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]
PODMAN_DIR_ENV = "CATTERY_TEST_PODMAN_DIR"
BASE_ROOTFS_IMAGE = "localhost/debian-py:bookworm"
CATTERY_BASE_IMAGE = "localhost/cattery-base:latest"
#: a registry stand-in the pull-secret test runs; podman may speak plain HTTP to it
REGISTRY_STANDIN = "127.0.0.1:5999"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


class PodmanUnavailable(Exception):
    """Why container tests can't run here."""


@dataclass(frozen=True)
class PodmanHome:
    """The folder that holds one private podman's configuration and storage."""

    path: Path

    @property
    def env(self) -> dict[str, str]:
        conf = self.path / "conf"
        return {
            **os.environ,
            "CONTAINERS_CONF": str(conf / "containers.conf"),
            "CONTAINERS_STORAGE_CONF": str(conf / "storage.conf"),
            "CONTAINERS_REGISTRIES_CONF": str(conf / "registries.conf"),
        }

    @property
    def socket(self) -> Path:
        return self.path / "podman.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def write_config(self) -> None:
        conf = self.path / "conf"
        conf.mkdir(parents=True, exist_ok=True)
        (conf / "containers.conf").write_text(
            "[containers]\n"
            'default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n'
            "[engine]\n"
            'runtime = "runc"\n'
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "file"\n'
        )
        (conf / "storage.conf").write_text(
            "[storage]\n"
            'driver = "overlay"\n'
            f'graphroot = "{self.path / "storage"}"\n'
            f'runroot = "{self.path / "run"}"\n'
        )
        (conf / "registries.conf").write_text(
            "unqualified-search-registries = []\n"
            f'[[registry]]\nlocation = "{REGISTRY_STANDIN}"\ninsecure = true\n'
        )

    def sibling(self, folder: Path) -> PodmanHome:
        """Another home in ``folder`` configured as this one, so on its storage and images,
        with its own socket: a second engine."""
        shutil.copytree(self.path / "conf", folder / "conf")
        return PodmanHome(folder)

    def podman(self, *args: str, check: bool = True, **kwargs: object) -> str:
        result = subprocess.run(
            ["podman", *args],
            env=self.env,
            check=False,
            capture_output=True,
            text=True,
            **kwargs,  # type: ignore[call-overload]
        )
        if check and result.returncode != 0:
            raise PodmanUnavailable(f"podman {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def has_image(self, ref: str) -> bool:
        exists = subprocess.run(["podman", "image", "exists", ref], env=self.env, check=False)
        return exists.returncode == 0


#: podman's default init binary (``--init``, which instances use); Debian's podman only
#: recommends the package that holds it, so ``--no-install-recommends`` leaves it out
DEFAULT_INIT_PATH = Path("/usr/libexec/podman/catatonit")


def missing_tools(init: bool = True) -> str | None:
    """One sentence naming what a root podman here lacks to run the container tests, or
    None (``init``: its init binary too, which podman's Docker API looks for at its default
    path). Checked before any test, so a bare machine fails saying what to install rather
    than with each test's traceback."""
    if shutil.which("podman") is None:
        return "podman is not installed (apt-get install podman, or run ./scripts/test as root)"
    for tool in ("runc", "conmon"):
        if shutil.which(tool) is None and not Path("/usr/libexec/podman", tool).exists():
            return f"podman needs {tool} (apt-get install {tool}, or ./scripts/test as root)"
    if init and not DEFAULT_INIT_PATH.exists():
        return (
            f"podman's init {DEFAULT_INIT_PATH} is missing, and every instance runs with "
            "--init (apt-get install catatonit, or run ./scripts/test as root)"
        )
    return None


def debian_mirror() -> str:
    """The Debian mirror apt uses here."""
    for source in Path("/etc/apt").rglob("*.sources"):
        match = re.search(r"^URIs:\s*(\S+/debian)\s*$", source.read_text(), re.M)
        if match:
            return match.group(1)
    return "http://deb.debian.org/debian"


def prepare(home: PodmanHome) -> None:
    """Base root file system imported, cattery-base built from this checkout."""
    home.write_config()
    problem = missing_tools(init=False)  # building needs no init; the tests say if it lacks
    if problem is not None:
        raise PodmanUnavailable(problem)
    if not home.has_image(BASE_ROOTFS_IMAGE):
        with tempfile.TemporaryDirectory(dir=home.path) as tmp:
            rootfs = Path(tmp) / "rootfs"
            subprocess.run(
                [
                    "debootstrap",
                    "--variant=minbase",
                    "--include=python3,python3-venv,python3-pip",
                    "bookworm",
                    str(rootfs),
                    debian_mirror(),
                ],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
            subprocess.run(
                ["podman", "import", "-", BASE_ROOTFS_IMAGE],
                stdin=tar.stdout,
                env=home.env,
                check=True,
                stdout=subprocess.DEVNULL,
            )
            tar.wait()
    build = [sys.executable, str(ROOT / "images" / "build.py"), "--engine", "podman"]
    build += ["--python", "3.11", "--base", BASE_ROOTFS_IMAGE]
    if CA_BUNDLE.is_file():
        build += ["--ca-bundle", str(CA_BUNDLE)]
    subprocess.run(build, env=home.env, check=True)


class EngineForTests:
    """``podman system service`` for a prepared home, detached from the test process (so
    the no-leaked-children guard doesn't see it), stopped by ``stop``."""

    def __init__(self, home: PodmanHome, hide: Path | None = None) -> None:
        self.home = home
        #: a folder the service sees empty (its own mount namespace): e.g. its init's
        self.hide = hide

    def start(self, timeout: float = 30.0) -> str:
        if shutil.which("podman") is None:
            raise PodmanUnavailable("podman is not installed")
        if not self.home.has_image(CATTERY_BASE_IMAGE):
            raise PodmanUnavailable(
                f"{CATTERY_BASE_IMAGE} is not built in {self.home.path} "
                "(python -m tests.support.podman prepare DIR)"
            )
        self.stop()
        self.home.socket.unlink(missing_ok=True)
        log = (self.home.path / "service.log").open("ab")
        service = ["podman", "system", "service", "--time=0", self.home.url]
        if self.hide is not None and self.hide.is_dir():
            hidden = f'mount -t tmpfs cattery-hidden {self.hide} && exec "$@"'
            service = ["unshare", "--mount", "sh", "-c", hidden, "_", *service]
        subprocess.run(
            ["setsid", "-f", *service],
            env=self.home.env,
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            check=True,
        )
        deadline = time.monotonic() + timeout
        while not self.home.socket.exists():
            if time.monotonic() > deadline:
                raise PodmanUnavailable(f"the podman service did not start: {self.home.path}")
            time.sleep(0.05)
        return self.home.url

    def _service(self) -> list[psutil.Process]:
        found = []
        for proc in psutil.process_iter(["cmdline"]):
            cmdline = proc.info["cmdline"] or []
            if "system" in cmdline and "service" in cmdline and self.home.url in cmdline:
                found.append(proc)
        return found

    def stop(self) -> None:
        for proc in self._service():
            try:
                proc.send_signal(signal.SIGTERM)
                proc.wait(10)
            except psutil.NoSuchProcess:
                pass
            except psutil.TimeoutExpired:
                proc.kill()


def cleanup(home: PodmanHome) -> None:
    """Stop the service, remove every container and image, then the folder itself."""
    EngineForTests(home).stop()
    if shutil.which("podman") is not None and (home.path / "conf").exists():
        home.podman("rm", "--all", "--force", check=False)
        home.podman("system", "reset", "--force", check=False)
    shutil.rmtree(home.path, ignore_errors=True)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("prepare", "cleanup"):
        print("usage: python -m tests.support.podman prepare|cleanup DIR", file=sys.stderr)
        return 2
    home = PodmanHome(Path(argv[1]).resolve())
    if argv[0] == "cleanup":
        cleanup(home)
        return 0
    try:
        prepare(home)
    except (PodmanUnavailable, subprocess.CalledProcessError) as exc:
        print(f"container tests will be skipped: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
