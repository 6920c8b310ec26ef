"""Fixtures shared by every test: a guard against leaked processes and threads, and databases.

``database_url`` runs a test once on SQLite and once on PostgreSQL (a fresh database per
test; see ``tests/support/postgres.py`` for where the server comes from). The PostgreSQL
variants carry the ``postgres`` mark and are skipped, saying why, when no server can be had.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import psutil
import pytest

from tests.support.browser import skip_outside_loopback_namespace, skip_without_chromium
from tests.support.containers import user_image
from tests.support.podman import (
    DEFAULT_INIT_PATH,
    PODMAN_DIR_ENV,
    EngineForTests,
    PodmanHome,
    PodmanUnavailable,
    missing_tools,
)
from tests.support.postgres import PostgresServer, PostgresUnavailable, ServerForTests
from tests.support.processes import HANDED_OVER, ServerProcess, runtime_process
from tests.support.waiting import wait_for


def pytest_configure(config: pytest.Config) -> None:
    """As root, tests get a temporary folder of their own that bots can cross: a control
    plane running as root runs bots as unprivileged users, and pytest's shared default
    (``/tmp/pytest-of-root``, 0700, reset by every run) would keep them out."""
    if os.geteuid() == 0 and config.option.basetemp is None:
        base = Path(tempfile.mkdtemp(prefix="cattery-tests-"))
        base.chmod(0o711)
        config.option.basetemp = str(base / "run")
        config.stash[_OWN_BASETEMP] = base


def pytest_unconfigure(config: pytest.Config) -> None:
    base = config.stash.get(_OWN_BASETEMP, None)
    if base is not None:
        shutil.rmtree(base, ignore_errors=True)


_OWN_BASETEMP = pytest.StashKey[Path]()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Container tests run last, the Ray cluster's just before them. The private podman's
    first container adds its bridge (``cni-podman0``) to the test namespace, and WebRTC
    tests (the cluster's too) need a namespace holding only ``lo``
    (``tests/support/browser.py``): run after it, they could only skip."""

    def uses_containers(item: pytest.Item) -> bool:
        fixtures = getattr(item, "fixturenames", ())
        return item.get_closest_marker("container") is not None or (
            "container_engine_url" in fixtures
        )

    def uses_cluster(item: pytest.Item) -> bool:
        return "ray_cluster" in getattr(item, "fixturenames", ())

    # stable: the rest keep their order. The Ray cluster's tests come after every other
    # test but the container ones: once up, the session's cluster (a gigabyte, idle
    # raylets) stays until the end, and it must not weigh on the tests that measure time.
    items.sort(key=lambda item: (uses_containers(item), uses_cluster(item)))


@pytest.fixture(autouse=True)
def tmp_path_open_to_bots(request: pytest.FixtureRequest) -> None:
    """A test's ``tmp_path`` (where a probe bot writes its report) is open to the
    unprivileged users bots run as, and so are the folders above it."""
    if "tmp_path" not in request.fixturenames or os.geteuid() != 0:
        return
    tmp_path: Path = request.getfixturevalue("tmp_path")
    tmp_path.chmod(0o1777)
    root = Path(tempfile.gettempdir())
    for folder in tmp_path.parents:
        if folder == root or root not in folder.parents:
            break
        folder.chmod(folder.stat().st_mode | 0o111)


@pytest.fixture(autouse=True)
def no_leaked_children() -> Iterator[None]:
    """Fail a test that leaves child processes or non-daemon threads behind. A process a
    wider-scoped fixture started before the test (a shared server) is that fixture's, and
    so is whatever it starts."""
    me = psutil.Process()
    before_threads = {t.ident for t in threading.enumerate()}
    before = {c.pid for c in me.children()}
    yield

    def started_here() -> list[psutil.Process]:
        found = []
        for child in me.children():
            if child.pid in before or child.pid in HANDED_OVER:
                continue
            found.append(child)
            try:
                found += child.children(recursive=True)
            except psutil.Error:
                pass
        return found

    def settled() -> bool:
        return not [c for c in started_here() if c.status() != psutil.STATUS_ZOMBIE]

    try:
        wait_for(settled, timeout=15, what="child processes to exit")
    except AssertionError:
        leaked = started_here()
        for child in leaked:
            child.kill()
        pytest.fail(f"test leaked child processes: {[c.cmdline() for c in leaked]}")
    threads = [
        t
        for t in threading.enumerate()
        if t.ident not in before_threads and not t.daemon and t.is_alive()
    ]
    assert not threads, f"test leaked threads: {threads}"


#: the database backends every ``database_url`` test runs on
DATABASE_BACKENDS = ("sqlite", pytest.param("postgresql", marks=pytest.mark.postgres))


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The test session's PostgreSQL server; skips the test when there is none."""
    source = ServerForTests()
    try:
        server = source.get()
    except PostgresUnavailable as exc:
        pytest.skip(f"no PostgreSQL server: {exc}")
    try:
        yield server
    finally:
        source.close()


@pytest.fixture
def postgres_database(postgres_server: PostgresServer) -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database, dropped after the test."""
    url = postgres_server.create_database()
    try:
        yield url
    finally:
        postgres_server.drop_database(url)


@pytest.fixture(params=DATABASE_BACKENDS)
def database_backend(request: pytest.FixtureRequest) -> str:
    """``sqlite`` or ``postgresql``: the test runs once with each."""
    return request.param


@pytest.fixture
def database_url(database_backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database's URL: a SQLite file in ``tmp_path``, or a fresh PostgreSQL database."""
    if database_backend == "postgresql":
        return request.getfixturevalue("postgres_database")
    return f"sqlite+aiosqlite:///{tmp_path / 'cattery.db'}"


@pytest.fixture
def start_runtime(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start ``cattery runtime BOT`` processes; all are stopped after the test."""
    started: list[ServerProcess] = []

    def start(bot: Path | str, ready: bool = True, **env: str) -> ServerProcess:
        proc = runtime_process(bot, tmp_path / f"runtime-{len(started)}.log", **env).start()
        started.append(proc)
        return proc.wait_ready() if ready else proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def webrtc_browser() -> None:
    """Skip unless Chromium is here and ICE can only ever use loopback."""
    skip_without_chromium()
    skip_outside_loopback_namespace()


def _prepared_podman(*, init: bool = True) -> PodmanHome:
    """The private podman ``./scripts/test`` prepared; skips without one, fails (one
    sentence) when a tool it needs is missing."""
    folder = os.environ.get(PODMAN_DIR_ENV)
    if not folder:
        pytest.skip(f"no prepared podman ({PODMAN_DIR_ENV}; ./scripts/test prepares one)")
    problem = missing_tools(init=init)
    if problem is not None:
        pytest.fail(f"container tests can't run: {problem}", pytrace=False)
    return PodmanHome(Path(folder))


def _serving(engine: EngineForTests) -> Iterator[str]:
    """The engine's API URL while it runs; skips when it can't start."""
    try:
        url = engine.start()
    except PodmanUnavailable as exc:
        pytest.skip(str(exc))
    try:
        yield url
    finally:
        engine.stop()


@pytest.fixture(scope="session")
def container_engine_url() -> Iterator[str]:
    """The Docker Engine API of a private podman (``tests/support/podman.py``), for the test
    session; skips the test when none was prepared here."""
    yield from _serving(EngineForTests(_prepared_podman()))


@pytest.fixture
def engine_without_init(tmp_path: Path) -> Iterator[str]:
    """The Docker Engine API of a second podman on the private one's storage that doesn't
    see its init binary (its folder is empty in the service's own mount namespace): it
    answers, but can't start a container the way instances start."""
    home = _prepared_podman(init=False).sibling(tmp_path / "no-init")
    yield from _serving(EngineForTests(home, hide=DEFAULT_INIT_PATH.parent))


@pytest.fixture(scope="session")
def _docker_session_client(container_engine_url: str) -> Iterator[docker.DockerClient]:
    client = docker.DockerClient(base_url=container_engine_url, timeout=120)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def docker_client(_docker_session_client: docker.DockerClient) -> Iterator[docker.DockerClient]:
    """The private engine's client; the test fails if it leaves a container or a container's
    process (conmon) behind."""
    client = _docker_session_client
    yield client

    def no_containers() -> bool:
        return not client.containers.list(all=True)

    try:
        wait_for(no_containers, timeout=30, what="the test's containers to be removed")
    except AssertionError:
        left = client.containers.list(all=True)
        for container in left:
            container.remove(force=True)
        pytest.fail(f"test leaked containers: {[c.name for c in left]}")

    def no_conmon() -> bool:
        return not [p for p in psutil.process_iter(["name"]) if p.info["name"] == "conmon"]

    wait_for(no_conmon, timeout=30, what="the containers' monitor processes to exit")


@pytest.fixture(scope="session")
def user_image_of(_docker_session_client: docker.DockerClient) -> Callable[[Path], str]:
    """``user_image_of(bot_folder)``: a user's image of that bot on cattery-base (built once)."""
    built: dict[Path, str] = {}

    def get(bot_folder: Path) -> str:
        if bot_folder not in built:
            tag = f"localhost/cattery-test-{bot_folder.name}:latest"
            built[bot_folder] = user_image(_docker_session_client, bot_folder, tag)
        return built[bot_folder]

    return get
