"""An agent's sessions and logs: list, inspect, stop, read what the bot printed."""

from __future__ import annotations

from fastapi import APIRouter, Query

from cattery.contract import SESSION_FILTERS
from cattery.control import responses, wire
from cattery.control.agents import get_agent
from cattery.control.deps import DB, Org, State
from cattery.control.routing import BoundedJSONRoute
from cattery.errors import InvalidRequest, SessionNotFound
from cattery.store import repositories as repo

MAX_LOG_LINES = 10_000


def build_router() -> APIRouter:
    router = APIRouter(route_class=BoundedJSONRoute)
    for base in ("/v1/agents/{name}", "/v1/organizations/{org}/services/{name}"):
        _add_routes(router, base)
    return router


def _add_routes(router: APIRouter, base: str) -> None:
    @router.get(base + "/sessions", response_model=responses.SessionList)
    async def list_sessions(
        db: DB,
        org: Org,
        name: str,
        endState: str | None = Query(None),
        limit: int = Query(100, ge=1, le=1000),
    ) -> dict:
        if endState is not None and endState not in SESSION_FILTERS:
            raise InvalidRequest(f"Unknown endState {endState!r}")
        agent = await get_agent(db, org, name)
        sessions = await repo.list_sessions(db, agent.id, end_state=endState, limit=limit)
        return {"total_count": len(sessions), "sessions": [wire.session_item(s) for s in sessions]}

    @router.get(base + "/sessions/{session_id}", response_model=responses.SessionDetail)
    async def get_session(db: DB, org: Org, name: str, session_id: str) -> dict:
        agent = await get_agent(db, org, name)
        session = await repo.get_session(db, org.id, agent.id, session_id)
        if session is None:
            raise SessionNotFound(f"Session {session_id} not found")
        samples = await repo.list_resource_samples(db, session.id)
        latency_row = await repo.get_latency(db, session.id)
        return wire.session_detail(session, samples, latency_row)

    @router.get(base + "/sessions/{session_id}/webhooks")
    async def list_webhook_deliveries(db: DB, org: Org, name: str, session_id: str) -> dict:
        agent = await get_agent(db, org, name)
        session = await repo.get_session(db, org.id, agent.id, session_id)
        if session is None:
            raise SessionNotFound(f"Session {session_id} not found")
        deliveries = await repo.list_deliveries(db, session.id)
        return {"deliveries": [wire.webhook_delivery(d) for d in deliveries]}

    @router.delete(base + "/sessions/{session_id}", response_model=responses.StoppedSession)
    async def stop_session(state: State, db: DB, org: Org, name: str, session_id: str) -> dict:
        agent = await get_agent(db, org, name)
        session = await repo.get_session(db, org.id, agent.id, session_id)
        if session is None:
            raise SessionNotFound(f"Session {session_id} not found")
        await state.supervisor.stop(session.id)
        return {"status": "OK", "session_id": session.id}

    @router.get(base + "/logs", response_model=responses.LogList)
    async def get_logs(
        state: State,
        db: DB,
        org: Org,
        name: str,
        limit: int = Query(100, ge=1, le=MAX_LOG_LINES),
        sessionId: str | None = Query(None),
        deploymentId: str | None = Query(None),
    ) -> dict:
        agent = await get_agent(db, org, name)
        await state.router.flush()
        lines = await repo.list_log_lines(
            db, agent.id, session_id=sessionId, deployment_id=deploymentId, limit=limit
        )
        return {
            "total": {"value": len(lines), "relation": "eq"},
            "logs": [wire.log_entry(line) for line in lines],
        }
