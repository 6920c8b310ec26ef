"""Starting cattery's real servers as processes on loopback, port 0, for tests.

The test binds the listening socket itself and hands it to the child (``--fd``), so the
port is known before the child starts and nothing races for it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from tests.support.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
TEST_BOTS = REPO / "tests" / "bots"
CATTERY = [sys.executable, "-m", "cattery.cli"]
#: processes a test started for a wider-scoped fixture (a node it put back into the shared
#: cluster): the leak guard leaves them to that fixture
HANDED_OVER: set[int] = set()


def hand_over(pid: int) -> None:
    """The process ``pid``, started by this test, now belongs to a wider-scoped fixture."""
    HANDED_OVER.add(pid)


def gone(pid: int) -> bool:
    """Whether the process ``pid`` has exited (a zombie not yet reaped counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def bind_loopback() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


#: the folders tests deploy agents from: the test bots, the examples, and their own
#: temporary folders (``tmp_path``)
AGENT_ROOTS = os.pathsep.join(str(p) for p in (TEST_BOTS, EXAMPLES, Path(tempfile.gettempdir())))


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CATTERY_", "PIPECAT_"))}
    env.update(
        {
            "PYTHONUNBUFFERED": "1",
            "CATTERY_ICE_FALLBACK_URLS": "",  # never the public STUN fallback in tests
            "CATTERY_AGENT_ROOTS": AGENT_ROOTS,
            "PIPECAT_LOG_LEVEL": "DEBUG",
        }
    )
    env.update(extra)
    return env


class OnLoopback:
    """``url`` and ``ws_url`` of a server listening on 127.0.0.1 at ``port``."""

    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"


@dataclass
class ServerProcess(OnLoopback):
    """A cattery process serving on a socket this test bound."""

    args: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=base_env)
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0
    #: the working directory (the repository unless a test names another)
    cwd: Path = REPO

    def start(self) -> ServerProcess:
        sock = bind_loopback()
        self.port = sock.getsockname()[1]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [*self.args, "--fd", str(sock.fileno())],
                pass_fds=[sock.fileno()],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        sock.close()
        return self

    def wait_ready(self, path: str = "/livez", timeout: float = 30.0) -> ServerProcess:
        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.logs()}")
            return httpx.get(self.url + path, timeout=2).status_code == 200

        wait_for(ready, timeout=timeout, what=f"{self.url}{path}")
        return self

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        """Terminate the process group; kill it if it lingers."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        except ProcessLookupError:
            pass


def runtime_process(bot: Path | str, log_path: Path, **env: str) -> ServerProcess:
    return ServerProcess([*CATTERY, "runtime", str(bot)], log_path, env=base_env(**env))


def processes_where(matches: Callable[[psutil.Process], bool]) -> list[psutil.Process]:
    """The processes of this machine ``matches`` accepts; one that ends (or can't be read)
    while being looked at is passed over."""
    found = []
    for proc in psutil.process_iter():
        try:
            if matches(proc):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def with_marker(marker: str) -> list[psutil.Process]:
    """The processes whose command line holds ``marker`` (a hostile bot's children)."""
    return processes_where(lambda proc: marker in proc.cmdline())
