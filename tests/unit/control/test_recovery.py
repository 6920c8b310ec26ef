"""Recovery after a crash, in this process: ``create_app`` with the adopting fake backend
beside the local one, the store arranged as a killed control plane left it, then
``recover`` asks the backends' router to adopt each recorded instance by its backend's name.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from cattery.backends.base import InstanceSpec
from cattery.contract import SESSION_ENDED
from cattery.control.app import Seams
from cattery.control.recorder import InstanceRecorder
from cattery.control.recovery import recover
from cattery.control.state import ControlState
from cattery.settings import Settings
from cattery.store import repositories as repo
from cattery.store.models import Deployment
from tests.support.asgi import app_client, in_process_settings
from tests.support.fake_backend import AdoptingFakeBackend, FakeHandle

FAKE = "fake"


def runtime_line(session_id: str, text: str) -> str:
    """A line as the runtime writes it (its date, its level, the session's id)."""
    return f"2026-11-30 12:00:00.000 | INFO     | cattery.runtime | {session_id} - {text}"


@dataclass
class Crashed:
    """A control plane's state after a crash: the store's rows and the fake's instances."""

    state: ControlState
    backend: AdoptingFakeBackend
    deployment: Deployment

    async def instance(self, *, running: bool = True) -> FakeHandle:
        """An instance the killed control plane started (running on, or gone), on record."""
        spec = InstanceSpec("org/agent", self.deployment.id, "/bots/agent", backend=FAKE)
        handle = await self.backend.spawn(spec)
        await handle.ready(1)
        locator = self.backend.locate(handle)
        assert locator is not None
        async with self.state.sessionmaker.begin() as db:
            facts = repo.InstanceFacts(
                agent_id=self.deployment.agent_id,
                deployment_id=self.deployment.id,
                backend=FAKE,
                address=locator.address,
                token=locator.token,
                status="ready",
                log_path=locator.log,
                log_offset=locator.log_offset,
            )
            await repo.upsert_instance(db, self.state.box, handle.id, facts)
        if not running:
            handle.die()
        return handle

    async def serving(self, handle: FakeHandle) -> str:
        """A session the instance serves, on record as serving it."""
        session_id = await self.session(handle.id)
        async with self.state.sessionmaker.begin() as db:
            await repo.update_instance(db, handle.id, session_id=session_id)
        return session_id

    async def session(self, instance_id: str | None) -> str:
        session_id = str(uuid.uuid4())
        async with self.state.sessionmaker.begin() as db:
            await repo.create_session(
                db,
                organization_id=(await self._org_id(db)),
                agent_id=self.deployment.agent_id,
                deployment_id=self.deployment.id,
                session_id=session_id,
                instance_id=instance_id,
            )
        return session_id

    async def _org_id(self, db: AsyncSession) -> str:
        agent = await repo.get_agent_by_id(db, self.deployment.agent_id)
        assert agent is not None
        return agent.organization_id

    async def end_state(self, session_id: str) -> str | None:
        async with self.state.sessionmaker() as db:
            row = await repo.get_session_by_id(db, session_id)
            assert row is not None
            return row.end_state

    async def recorded_instances(self) -> set[str]:
        async with self.state.sessionmaker() as db:
            return {row.id for row in await repo.list_live_instances(db)}


@asynccontextmanager
async def crashed_app(settings: Settings) -> AsyncIterator[Crashed]:
    """The control plane of ``settings`` in this process, with an agent deployed and the
    adopting fake backend beside the local one."""
    backend = AdoptingFakeBackend()
    async with app_client(settings, seams=Seams(backends={FAKE: backend})) as client:
        state: ControlState = client.control  # type: ignore[attr-defined]
        backend.line_sink = state.router.line
        async with state.sessionmaker.begin() as db:
            org = await repo.get_organization_by_name(db, settings.organization)
            assert org is not None
            agent = await repo.create_agent(db, org.id, "agent", "local")
            deployment = await repo.create_deployment(
                db,
                agent_id=agent.id,
                image="/bots/agent",
                secret_set=None,
                image_pull_secret_set=None,
                region="local",
                agent_profile="agent-1x",
                min_agents=0,
                max_agents=5,
                max_session_duration=600,
            )
        yield Crashed(state, backend, deployment)
        await backend.aclose()


@pytest.fixture
async def crashed(tmp_path: Path) -> AsyncIterator[Crashed]:
    async with crashed_app(in_process_settings(tmp_path / "state")) as found:
        yield found


async def test_recovery_adopts_closes_and_settles_by_what_each_backend_finds(crashed) -> None:
    backend = crashed.backend
    live = await crashed.instance()
    live_session = await crashed.serving(live)
    idle = await crashed.instance()
    gone = await crashed.instance(running=False)
    gone_session = await crashed.serving(gone)
    backend.let_go()  # the control plane is killed; its instances run on, unowned
    backend.print(gone, runtime_line(gone_session, "Traceback (most recent call last):"))
    backend.print(gone, runtime_line(gone_session, f"{SESSION_ENDED} completed"))
    unrecorded = FakeHandle(InstanceSpec("org/agent", crashed.deployment.id, "/x", backend=FAKE))
    backend.print(unrecorded, "whatever it printed")
    backend.print(unrecorded, runtime_line("x", f"{SESSION_ENDED} agent_error"))
    no_record = await crashed.session(unrecorded.id)
    elsewhere = await crashed.session(None)

    done = await recover(crashed.state)

    assert not live.closed and crashed.state.supervisor.get(live_session) is not None
    assert idle.closed  # it served nothing: closed, not left running unowned
    assert await crashed.end_state(gone_session) == "completed"  # its log's last word
    assert await crashed.end_state(no_record) == "agent_error"  # the backend's last lines
    assert await crashed.end_state(elsewhere) == "terminated"
    assert await crashed.recorded_instances() == {live.id}
    assert (done.adopted, done.closed, done.ended) == (1, 1, 3)
    await crashed.state.router.flush()
    async with crashed.state.sessionmaker() as db:
        lines = await repo.list_log_lines(db, crashed.deployment.agent_id, session_id=gone_session)
    assert any("Traceback" in line.line for line in lines), "a gone instance's lines are kept"


async def test_a_reattached_session_is_live_and_ends_when_its_instance_does(crashed) -> None:
    live = await crashed.instance()
    session_id = await crashed.serving(live)
    crashed.backend.let_go()

    done = await recover(crashed.state)

    assert done.adopted == 1
    supervised = crashed.state.supervisor.get(session_id)
    assert supervised is not None and supervised.handle is live
    crashed.backend.print(live, runtime_line(session_id, f"{SESSION_ENDED} completed"))
    live.die()
    assert supervised.task is not None
    await supervised.task
    assert await crashed.end_state(session_id) == "completed"
    assert live.closed  # released to its agent's pool manager, which let it go


async def test_an_instance_of_a_backend_not_configured_here_is_forgotten(crashed) -> None:
    handle = await crashed.instance()
    session_id = await crashed.serving(handle)
    async with crashed.state.sessionmaker.begin() as db:
        for row in await repo.list_live_instances(db):
            row.backend = "a-cluster-not-configured"
    crashed.backend.let_go()

    done = await recover(crashed.state)

    assert done.adopted == 0
    assert await crashed.end_state(session_id) == "terminated"
    assert await crashed.recorded_instances() == set()


async def test_the_recorder_keeps_an_adoptable_instance_on_record_until_let_go(crashed) -> None:
    recorder: InstanceRecorder = crashed.state.instances
    spec = InstanceSpec("org/agent", crashed.deployment.id, "/bots/agent", backend=FAKE)
    handle = await crashed.backend.spawn(spec)
    await handle.ready(1)
    crashed.backend.print(handle, "one line")

    await recorder.sync()
    assert handle.id in await crashed.recorded_instances()
    async with crashed.state.sessionmaker() as db:
        row = next(r for r in await repo.list_live_instances(db) if r.id == handle.id)
    assert row.backend == FAKE and row.address == handle.address and row.log_path == handle.id

    await handle.aclose()
    await recorder.sync()
    assert handle.id not in await crashed.recorded_instances()
