"""A start's record: the session and its instance's record, durable in the start journal
before the session is dispatched, then committed together (whether a sync wrote the
instance's record before or not); later writes about the session never land before it,
and a start the database lacks after a crash is replayed from the journal."""

from __future__ import annotations

import stat
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from cattery.backends.base import InstanceSpec
from cattery.contract import EndState
from cattery.control.app import Seams
from cattery.control.recovery import recover
from cattery.control.state import ControlState
from cattery.control.supervisor import LiveSession
from cattery.settings import Settings
from cattery.store import repositories as repo
from cattery.store.journal import JOURNAL_NAME, StartRecord
from tests.support.asgi import app_client, in_process_settings
from tests.support.control import ADMIN_TOKEN
from tests.support.fake_backend import AdoptingFakeBackend
from tests.support.waiting import async_wait_for
from tests.unit.control.test_recovery import FAKE, Crashed, crashed_app
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
    await crashed.state.recorder.created(live)
    await _check_recorded(crashed, live)


async def test_a_start_on_an_instance_a_sync_recorded_assigns_it(crashed) -> None:
    live = await _live(crashed, synced=True)
    await crashed.state.recorder.created(live)
    await _check_recorded(crashed, live)
    await crashed.state.instances.sync()  # nothing for the next sync to redo
    await _check_recorded(crashed, live)


# -- the start journal: durable before the commit, the commit beside the dispatch --------


@pytest.fixture
async def on_either_store(database_url: str, tmp_path: Path) -> AsyncIterator[Crashed]:
    """``crashed``'s control plane on SQLite, then on PostgreSQL."""
    settings = Settings(
        state_dir=tmp_path / "state", admin_token=ADMIN_TOKEN, database_url=database_url
    )
    async with crashed_app(settings) as crashed:
        yield crashed


async def test_a_start_is_durable_in_the_journal_before_its_commit(on_either_store) -> None:
    crashed = on_either_store
    live = await _live(crashed, synced=False)
    committed = crashed.state.recorder.created(live)

    (journaled,) = crashed.state.journal.records()  # written before created() returned
    assert journaled.session_id == live.id and journaled.instance is not None
    assert journaled.instance["address"] == live.handle.address
    text = crashed.state.journal.path.read_text()
    assert live.handle.token not in text  # kept as the database keeps it: encrypted
    assert stat.S_IMODE(crashed.state.journal.path.stat().st_mode) == 0o600

    assert await committed is True
    await _check_recorded(crashed, live)
    assert crashed.state.journal.pending() == []  # forgotten


async def test_an_idle_instances_token_is_encrypted_before_its_session(crashed) -> None:
    live = await _live(crashed, synced=False)
    instances = crashed.state.instances
    instances.instance_idle(live.handle)  # what its pool tells once it waits
    sealed = instances._sealed[live.handle.id]

    await crashed.state.recorder.created(live)

    assert crashed.state.box.decrypt(sealed) == live.handle.token
    assert live.handle.id not in instances._sealed  # used once
    async with crashed.state.sessionmaker() as db:
        instance = await repo.get_instance(db, live.handle.id)
    assert instance is not None and instance.token_encrypted == sealed
    instances.instance_idle(live.handle)
    instances.instance_gone(live.handle)  # let go without a session: nothing kept
    assert live.handle.id not in instances._sealed


async def test_the_bot_start_and_the_end_land_after_the_creation(on_either_store) -> None:
    crashed = on_either_store
    live = await _live(crashed, synced=False)
    recorder = crashed.state.recorder
    committed = recorder.created(live)
    when = datetime.now(UTC)
    assert not committed.done()
    await recorder.bot_started(live.id, 0.25)  # asked for before the creation's commit ran
    await recorder.ended(live.id, EndState.COMPLETED.value, when)
    assert committed.done()
    async with crashed.state.sessionmaker() as db:
        session = await repo.get_session_by_id(db, live.id)
    assert session is not None
    assert session.end_state == EndState.COMPLETED.value and session.bot_start_seconds == 0.25


async def test_a_failed_commit_is_written_again_and_the_end_follows_it(crashed) -> None:
    """The database refuses the start's row: the session runs on, its line stays in the
    journal, and once the database takes it the end that came meanwhile follows."""
    async with crashed.state.sessionmaker.begin() as db:
        await db.execute(text(REFUSE_SESSIONS))
    live = await _live(crashed, synced=False)
    recorder = crashed.state.recorder

    assert await recorder.created(live) is False  # the first attempt failed: logged
    await recorder.ended(live.id, EndState.COMPLETED.value, datetime.now(UTC))
    assert crashed.state.journal.pending() == [live.id]

    async with crashed.state.sessionmaker.begin() as db:
        await db.execute(text("DROP TRIGGER refuse_sessions"))

    async def ended_in_store() -> bool:
        async with crashed.state.sessionmaker() as db:
            session = await repo.get_session_by_id(db, live.id)
        return session is not None and session.end_state == EndState.COMPLETED.value

    await async_wait_for(ended_in_store, timeout=15, what="the start and its end stored")
    await _check_recorded(crashed, live)
    assert crashed.state.journal.pending() == []


REFUSE_SESSIONS = """
CREATE TRIGGER refuse_sessions BEFORE INSERT ON sessions
BEGIN SELECT RAISE(ABORT, 'the store refuses sessions'); END
"""


async def test_recovery_replays_the_journaled_starts_the_database_lacks(
    on_either_store,
) -> None:
    """The control plane died between a start's line and its commit: at the next start-up
    the session and its instance's record are written from the journal, then adopted (its
    instance runs on) or settled (its instance is gone) like any other."""
    crashed = on_either_store
    state = crashed.state
    running = await _live(crashed, synced=False)
    gone = await _live(crashed, synced=False)
    committed = await _live(crashed, synced=False)
    assert await state.recorder.created(committed) is True
    for live in (running, gone, committed):
        state.journal.append(_record(state, live))
    gone.handle.die()

    done = await recover(state)

    assert done.replayed == 2
    assert state.journal.records() == []
    assert state.supervisor.get(running.id) is not None  # reattached: live again
    assert await crashed.end_state(running.id) is None
    assert await crashed.end_state(gone.id) == EndState.TERMINATED.value
    async with state.sessionmaker() as db:
        session = await repo.get_session_by_id(db, gone.id)
    assert session is not None and session.instance_id == gone.handle.id
    await state.supervisor.stop(running.id)


def _record(state: ControlState, live: LiveSession) -> StartRecord:
    """The line a start writes (the recorder's own writing path is not used: its commit
    would follow)."""
    return StartRecord(
        session_id=live.id,
        organization_id=live.organization_id,
        agent_id=live.agent_id,
        deployment_id=live.deployment_id,
        instance_id=live.handle.id,
        transport=live.transport,
        cold_start=live.cold_start,
        created_at=live.created_at,
        instance=state.instances.start_record(live.handle, live.agent_id, live.id),
    )


async def test_a_restarted_control_plane_replays_its_journal_before_serving(
    tmp_path: Path,
) -> None:
    """The lifespan's recovery reads the journal in the state dir: a start journaled by a
    control plane killed before its commit is listed with an end state after the restart."""
    settings = in_process_settings(tmp_path / "state")
    async with crashed_app(settings) as crashed:
        live = await _live(crashed, synced=False)
        line = _record(crashed.state, live).line()
    with (settings.state_dir / JOURNAL_NAME).open("ab") as journal:
        journal.write(line)  # as the killed control plane left it

    async with app_client(settings, seams=Seams(backends={FAKE: AdoptingFakeBackend()})) as c:
        state: ControlState = c.control  # type: ignore[attr-defined]
        async with state.sessionmaker() as db:
            session = await repo.get_session_by_id(db, live.id)
        assert session is not None and session.end_state == EndState.TERMINATED.value
        assert state.journal.records() == []
