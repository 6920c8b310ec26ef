from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.control.helpers import dev_status, running_control, wait_pool
from tests.support.control import ADMIN_TOKEN, CloudCLI, ControlPlane
from tests.support.daily_standin import DailyStandin
from tests.support.processes import CATTERY, EXAMPLES, ServerProcess, base_env
from tests.support.telephony import missing_speech_tools
from tests.support.telephony import speech_audio as make_speech_audio
from tests.support.waiting import wait_for

#: the bot ``cattery dev`` serves unless a test names another
DEV_BOT = EXAMPLES / "multi-transport"


@pytest.fixture
def database_backend() -> str:
    """Process-level control tests run on SQLite. The store's tests run every query on both
    databases in-process; a few tests here, marked ``ON_POSTGRESQL`` or ``ON_BOTH_DATABASES``
    (``helpers.py``), show the server itself on PostgreSQL where only processes can: the
    official CLI's whole walk, a killed control plane's restart, a crashed instance, and
    concurrent starts at the cap."""
    return "sqlite"


@pytest.fixture
def control_env(database_backend: str, request: pytest.FixtureRequest) -> dict[str, str]:
    """The environment that picks the control plane's database; tests run once per backend.

    SQLite: nothing, so ``cattery serve`` uses its default file in the state dir. PostgreSQL:
    ``CATTERY_DATABASE_URL`` of a fresh database (skipped when there is no server). Tests that
    start more control planes on the same state give them this too.
    """
    if database_backend == "postgresql":
        return {"CATTERY_DATABASE_URL": request.getfixturevalue("postgres_database")}
    return {}


@pytest.fixture
def control(tmp_path: Path, control_env: dict[str, str]) -> Iterator[ControlPlane]:
    with running_control(tmp_path, **control_env) as control:
        yield control


@pytest.fixture
def daily() -> Iterator[DailyStandin]:
    """A local stand-in for Daily's REST API."""
    with DailyStandin() as standin:
        yield standin


@pytest.fixture
def daily_control(
    tmp_path: Path, control_env: dict[str, str], daily: DailyStandin
) -> Iterator[ControlPlane]:
    """A control plane whose Daily API is the stand-in, under the names Pipecat uses."""
    env = {**control_env, "DAILY_API_KEY": daily.api_key, "DAILY_API_URL": daily.url}
    with running_control(tmp_path, **env) as control:
        yield control


@pytest.fixture
def cli(control: ControlPlane, tmp_path: Path) -> CloudCLI:
    home = tmp_path / "home"
    home.mkdir()
    return CloudCLI(control, home)


@pytest.fixture
def start_dev(tmp_path: Path) -> Iterator[Callable[..., ControlPlane]]:
    """Start ``cattery dev BOT ARGS...`` (``DEV_BOT`` unless ``bot=`` names another) with the
    environment given; ready (its agent named after the folder, one instance warm) on return."""
    started: list[ServerProcess] = []

    def start(*args: str, bot: Path = DEV_BOT, **env: str) -> ControlPlane:
        n = len(started)
        state = tmp_path / f"state-{n}"
        command = [*CATTERY, "dev", str(bot), "--state-dir", str(state), *args]
        full_env = base_env(
            CATTERY_ADMIN_TOKEN=ADMIN_TOKEN, CATTERY_INSTANCE_SAMPLE_INTERVAL="0.5", **env
        )
        proc = ServerProcess(command, tmp_path / f"dev-{n}.log", env=full_env).start()
        started.append(proc)
        proc.wait_ready("/status", timeout=60)
        dev = ControlPlane(proc, state)
        ready = lambda: dev_status(dev)["status"] == "ready"  # noqa: E731
        wait_for(ready, timeout=60, what="the dev agent")
        wait_pool(dev, bot.name, timeout=60, idle=1)
        return dev

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture(scope="module")
def speech_audio() -> dict[str, bytes]:
    """A spoken sentence as μ-law and as 16-bit PCM, both 8 kHz, made once per module."""
    missing = missing_speech_tools()
    if missing:
        pytest.skip(f"making speech audio needs {' and '.join(missing)}, not installed")
    return make_speech_audio()
