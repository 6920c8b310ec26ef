"""A start's record: the session and its instance's record, durable in one commit before
the session is dispatched, whether a sync wrote the instance's record before or not."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from cattery.backends.base import InstanceSpec
from cattery.control.recorder import StoreRecorder
from cattery.control.supervisor import LiveSession
from cattery.store import repositories as repo
from tests.unit.control.test_recovery import FAKE, Crashed
from tests.unit.control.test_recovery import crashed as crashed  # the fixture


async def _live(crashed: Crashed, *, synced: bool) -> LiveSession:
    spec = InstanceSpec("org/agent", crashed.deployment.id, "/bots/agent", backend=FAKE)
    handle = await crashed.backend.spawn(spec)
    await handle.ready(1)
    if synced:
        await crashed.state.instances.sync()
        assert handle.id in await crashed.recorded_instances()
    async with crashed.state.sessionmaker() as db:
        agent = await repo.get_agent_by_id(db, crashed.deployment.agent_id)
        assert agent is not None
    return LiveSession(
        id=str(uuid.uuid4()),
        organization_id=agent.organization_id,
        agent_id=crashed.deployment.agent_id,
        agent_key=spec.agent_key,
        deployment_id=crashed.deployment.id,
        handle=handle,
        cold_start=not synced,
        created_at=datetime.now(UTC),
        transport="webrtc",
    )


async def _check_recorded(crashed: Crashed, live: LiveSession) -> None:
    async with crashed.state.sessionmaker() as db:
        session = await repo.get_session_by_id(db, live.id)
        instance = await repo.get_instance(db, live.handle.id)
    assert session is not None and instance is not None
    assert session.instance_id == live.handle.id and session.transport == "webrtc"
    assert session.cold_start is live.cold_start and session.created_at is not None
    assert instance.session_id == live.id and instance.backend == FAKE
    assert instance.address == live.handle.address


async def test_a_start_on_an_instance_no_sync_recorded_yet_writes_both(crashed) -> None:
    live = await _live(crashed, synced=False)
    await StoreRecorder(crashed.state.sessionmaker, crashed.state.instances).created(live)
    await _check_recorded(crashed, live)


async def test_a_start_on_an_instance_a_sync_recorded_assigns_it(crashed) -> None:
    live = await _live(crashed, synced=True)
    await StoreRecorder(crashed.state.sessionmaker, crashed.state.instances).created(live)
    await _check_recorded(crashed, live)
    await crashed.state.instances.sync()  # nothing for the next sync to redo
    await _check_recorded(crashed, live)
