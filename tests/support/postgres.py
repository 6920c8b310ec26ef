"""A PostgreSQL server for tests, and a fresh database on it for each test that wants one.

Where the server comes from, first match wins:

1. ``CATTERY_TEST_DATABASE_URL`` names one (``postgresql+asyncpg://user:pw@host/postgres``, or
   over a unix socket ``postgresql+asyncpg://postgres@/postgres?host=/socket/dir``); the role
   needs CREATEDB. ``./scripts/test`` starts a private cluster with this module *before* it
   enters its network namespace (where only root is mapped, so PostgreSQL, which refuses to
   run as root, could not start) and hands its unix socket to the tests this way.
2. Otherwise the test session starts a private cluster itself from Debian's ``initdb`` (as the
   ``postgres`` user when running as root), in a temp folder, listening only on a unix socket
   there, and removes it at the end.
3. Otherwise tests that need PostgreSQL are skipped, saying why.

As a script, for ``./scripts/test``::

    python -m tests.support.postgres start DIR   # prints the server's URL
    python -m tests.support.postgres stop DIR
"""

from __future__ import annotations

import asyncio
import glob
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.engine import URL

from cattery.store import normalize_url

TEST_DATABASE_URL_ENV = "CATTERY_TEST_DATABASE_URL"
#: the superuser initdb creates; private clusters trust every local connection
SUPERUSER = "postgres"
#: unix socket paths are limited to ~107 bytes; ".s.PGSQL.5432" goes after the folder
_MAX_SOCKET_DIR = 80
#: durability is worthless for throwaway test databases; skipping it makes DDL fast
_SERVER_OPTIONS = (
    "listen_addresses=''",
    "fsync=off",
    "synchronous_commit=off",
    "full_page_writes=off",
    "max_connections=200",
)

T = TypeVar("T")


class PostgresUnavailable(Exception):
    """No PostgreSQL server can be had here; the message says why."""


def _run_coroutine(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion from sync code, even when an event loop is running here."""
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(coro))
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=target, name="postgres-admin")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


@dataclass
class PostgresServer:
    """A reachable server and a role on it that may create databases."""

    url: URL

    @property
    def _dsn(self) -> str:
        # asyncpg's own DSN: the SQLAlchemy URL without "+asyncpg"
        return self.url.set(drivername="postgresql").render_as_string(hide_password=False)

    async def _execute(self, sql: str) -> None:
        import asyncpg

        conn = await asyncpg.connect(self._dsn, timeout=10)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    def check(self) -> None:
        _run_coroutine(self._execute("SELECT 1"))

    def create_database(self) -> str:
        """A new empty database; its SQLAlchemy URL (password included)."""
        name = f"cattery_test_{uuid.uuid4().hex[:16]}"
        _run_coroutine(self._execute(f'CREATE DATABASE "{name}"'))
        return self.url.set(database=name).render_as_string(hide_password=False)

    def drop_database(self, url: str) -> None:
        """Drop a database ``create_database`` made, closing whatever is still connected."""
        name = normalize_url(url).database
        assert name and name.startswith("cattery_test_"), name
        _run_coroutine(self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


# --- a private cluster from Debian's binaries ---------------------------------------------


def _bin_dir() -> Path | None:
    """The folder holding initdb, pg_ctl and postgres: PATH, else Debian's newest version."""
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).resolve().parent
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    return Path(found[-1]).parent if found else None


def _run_as() -> list[str]:
    """The command prefix that runs PostgreSQL's binaries as a user they accept."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam(SUPERUSER)
    except KeyError:
        raise PostgresUnavailable(
            f"running as root and there is no {SUPERUSER!r} user to run PostgreSQL as"
        ) from None
    prefix = ["runuser", "-u", SUPERUSER, "--"]
    probe = subprocess.run([*prefix, "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        raise PostgresUnavailable(
            f"running as root and cannot switch to the {SUPERUSER!r} user here "
            f"({probe.stderr.strip()}); inside ./scripts/test's namespace only root is mapped, "
            f"so start the server before entering it and set {TEST_DATABASE_URL_ENV}"
        )
    return prefix


def _hand_over(folder: Path) -> None:
    """Let the user PostgreSQL runs as own ``folder``; others may reach its socket."""
    folder.chmod(0o755)
    if os.geteuid() == 0:
        entry = pwd.getpwnam(SUPERUSER)
        os.chown(folder, entry.pw_uid, entry.pw_gid)


def start_cluster(folder: Path) -> URL:
    """initdb and start a throwaway cluster in ``folder`` (empty or missing); its URL.

    The server listens only on a unix socket in ``folder``, so it needs no port and is
    reachable from any network namespace that shares the filesystem.
    """
    bin_dir = _bin_dir()
    if bin_dir is None:
        raise PostgresUnavailable("PostgreSQL is not installed (Debian package postgresql)")
    folder = folder.resolve()
    if len(str(folder)) > _MAX_SOCKET_DIR:
        raise PostgresUnavailable(f"{folder} is too long a path for a unix socket")
    folder.mkdir(parents=True, exist_ok=True)
    prefix = _run_as()
    _hand_over(folder)
    data = folder / "data"
    steps = [
        [
            str(bin_dir / "initdb"),
            "--pgdata",
            str(data),
            "--username",
            SUPERUSER,
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--no-sync",
        ],
        [
            str(bin_dir / "pg_ctl"),
            "--pgdata",
            str(data),
            "--log",
            str(folder / "server.log"),
            "--wait",
            "--timeout",
            "60",
            "--options",
            " ".join(
                [f"-c unix_socket_directories='{folder}'"]
                + [f"-c {option}" for option in _SERVER_OPTIONS]
            ),
            "start",
        ],
    ]
    for step in steps:
        done = subprocess.run(
            [*prefix, *step],
            capture_output=True,
            text=True,
            cwd=folder,
            stdin=subprocess.DEVNULL,
        )
        if done.returncode != 0:
            log = folder / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise PostgresUnavailable(
                f"{Path(step[0]).name} failed ({done.returncode}): "
                f"{done.stdout.strip()} {done.stderr.strip()} {tail}".strip()
            )
    return URL.create(
        "postgresql+asyncpg", username=SUPERUSER, database="postgres", query={"host": str(folder)}
    )


def stop_cluster(folder: Path) -> None:
    """Stop a cluster ``start_cluster`` started (if it runs) and delete its folder."""
    folder = folder.resolve()
    bin_dir = _bin_dir()
    data = folder / "data"
    if bin_dir is not None and (data / "postmaster.pid").exists():
        subprocess.run(
            [
                *_run_as(),
                str(bin_dir / "pg_ctl"),
                "--pgdata",
                str(data),
                "--mode",
                "immediate",
                "--wait",
                "stop",
            ],
            capture_output=True,
            cwd=folder,
            stdin=subprocess.DEVNULL,
        )
    shutil.rmtree(folder, ignore_errors=True)


def _watch(owner: int, folder: Path) -> None:
    """Wait until process ``owner`` is gone (or the cluster is), then stop the cluster."""
    while folder.exists():
        try:
            os.kill(owner, 0)
        except ProcessLookupError:
            stop_cluster(folder)
            return
        except PermissionError:
            pass  # alive, just not ours to signal
        time.sleep(1)


def _start_watchdog(folder: Path) -> None:
    """Make sure the cluster dies with this process even if it is killed before teardown.

    The watchdog is detached (its parent shell exits at once), so it is nobody's child here.
    """
    subprocess.run(
        [
            "sh",
            "-c",
            '"$@" </dev/null >/dev/null 2>&1 &',
            "sh",
            sys.executable,
            "-m",
            "tests.support.postgres",
            "watch",
            str(os.getpid()),
            str(folder),
        ],
        cwd=Path(__file__).resolve().parents[2],
        start_new_session=True,
        check=True,
    )


def _temp_folder() -> Path:
    base = Path(tempfile.gettempdir())
    if len(str(base)) > _MAX_SOCKET_DIR - 30:
        base = Path("/tmp")
    return Path(tempfile.mkdtemp(prefix="cattery-pg-", dir=base))


class ServerForTests:
    """The session's server: the configured one, or a private cluster started on demand."""

    def __init__(self) -> None:
        self._folder: Path | None = None

    def get(self) -> PostgresServer:
        configured = os.environ.get(TEST_DATABASE_URL_ENV)
        if configured:
            url = normalize_url(configured)
            if url.get_backend_name() != "postgresql":
                raise PostgresUnavailable(f"{TEST_DATABASE_URL_ENV} is not a PostgreSQL URL")
            server = PostgresServer(url)
            server.check()  # configured but unreachable is an error, not a skip
            return server
        folder = _temp_folder()
        try:
            server = PostgresServer(start_cluster(folder))
        except BaseException:
            stop_cluster(folder)
            raise
        self._folder = folder
        _start_watchdog(folder)
        return server

    def close(self) -> None:
        if self._folder is not None:
            stop_cluster(self._folder)
            self._folder = None


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "watch":
        _watch(int(argv[1]), Path(argv[2]))
        return 0
    if len(argv) != 2 or argv[0] not in ("start", "stop"):
        print(__doc__, file=sys.stderr)
        return 2
    folder = Path(argv[1])
    if argv[0] == "stop":
        stop_cluster(folder)
        return 0
    try:
        url = start_cluster(folder)
    except PostgresUnavailable as exc:
        print(f"PostgreSQL not started: {exc}", file=sys.stderr)
        return 1
    print(url.render_as_string(hide_password=False))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
