"""What each dashboard page shows, read through the same services and repositories the API
uses: an agent's details are the API's, a session's the API's detail of it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from cattery.control.agents import details, get_agent
from cattery.control.dashboard import charts
from cattery.control.state import ControlState
from cattery.control.wire import session_detail
from cattery.errors import SessionNotFound
from cattery.store import repositories as repo
from cattery.store.models import Agent, Deployment, Organization, ResourceSample, Session

#: the end states the sessions page filters on ("active": still running)
END_STATES = (
    "active",
    "completed",
    "agent_error",
    "terminated",
    "agent_start_timeout",
    "ended_before_agent_start",
)
#: the time windows the sessions page filters on
WINDOWS = {"1h": timedelta(hours=1), "24h": timedelta(days=1), "7d": timedelta(days=7)}
SESSIONS_SHOWN = 200
LOG_LINES_SHOWN = 300


def health(body: dict[str, Any]) -> tuple[str, str]:
    """An agent's state in a word and why: ``ready``, ``failed``, ``deploying``, ``none``."""
    if body["deployment"] is None:
        return "none", "no deployment"
    if body["errors"]:
        return "failed", body["errors"][0]["message"]
    if body["ready"]:
        return "ready", "pool running"
    return "deploying", "building the environment and the warm pool"


async def agent_summaries(
    state: ControlState, db: AsyncSession, org: Organization
) -> list[dict[str, Any]]:
    """Each live agent's API details plus its health in a word."""
    rows = []
    for agent in await repo.list_agents(db, org.id):
        body = await details(state, db, org, agent)
        status, why = health(body)
        rows.append({**body, "status": status, "why": why})
    return rows


@dataclass(frozen=True)
class DeploymentRow:
    id: str
    image: str
    build_id: str | None
    created_at: datetime
    status: str
    error: str | None
    min_agents: int
    max_agents: int
    profile: str


def deployment_rows(
    state: ControlState, agent: Agent, deployments: list[Deployment]
) -> list[DeploymentRow]:
    """Newest first, each ready, failed (with its error), deploying or replaced."""
    rows = []
    for dep in sorted(deployments, key=lambda d: d.created_at, reverse=True):
        known = state.deployer.status(dep.id)
        active = dep.id == agent.active_deployment_id
        if known.errors:
            status, error = "failed", known.errors[0]["message"]
        elif known.ready:
            status, error = ("ready" if active else "replaced"), None
        else:
            status, error = ("deploying" if active else "replaced"), None
        rows.append(
            DeploymentRow(
                id=dep.id,
                image=dep.image,
                build_id=dep.build_id,
                created_at=dep.created_at,
                status=status,
                error=error,
                min_agents=dep.min_agents,
                max_agents=dep.max_agents,
                profile=dep.agent_profile,
            )
        )
    return rows


async def agent_page(
    state: ControlState, db: AsyncSession, org: Organization, name: str
) -> dict[str, Any]:
    agent = await get_agent(db, org, name)
    body = await details(state, db, org, agent)
    status, why = health(body)
    return {
        "agent": {**body, "status": status, "why": why},
        "deployments": deployment_rows(state, agent, await repo.list_deployments(db, agent.id)),
        "sessions": [
            session_row(s, name) for s in await repo.list_sessions(db, agent.id, limit=20)
        ],
    }


def session_row(session: Session, agent_name: str) -> dict[str, Any]:
    return {
        "id": session.id,
        "agent": agent_name,
        "created_at": session.created_at,
        "ended_at": session.ended_at,
        "state": session.end_state or "active",
        "transport": session.transport or "",
        "start": session.bot_start_seconds,
        "cold": session.cold_start,
    }


async def agent_names(db: AsyncSession, org: Organization) -> dict[str, str]:
    return {agent.id: agent.name for agent in await repo.list_agents(db, org.id)}


async def session_list(
    db: AsyncSession,
    org: Organization,
    *,
    end_state: str | None,
    window: str | None,
    agent_id: str | None,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    since = (now or datetime.now(UTC)) - WINDOWS[window] if window in WINDOWS else None
    names = await agent_names(db, org)
    found = await repo.list_organization_sessions(
        db,
        org.id,
        end_state=end_state if end_state in END_STATES else None,
        since=since,
        agent_id=agent_id,
        limit=SESSIONS_SHOWN,
    )
    return [session_row(s, names.get(s.agent_id, s.agent_id)) for s in found]


@dataclass(frozen=True)
class Step:
    """One moment of a session's life; ``at`` None when it has not happened (or is unknown)."""

    name: str
    at: datetime | None
    note: str = ""
    offset: str = ""
    #: it happened, even if when is unknown
    reached: bool = False

    @property
    def done(self) -> bool:
        return self.at is not None or self.reached


@dataclass
class SessionPage:
    session: Session
    agent_name: str
    detail: dict[str, Any]
    steps: list[Step]
    charts: list[charts.Chart] = field(default_factory=list)
    lines: list[Any] = field(default_factory=list)


def _offset(start: datetime, at: datetime | None) -> str:
    if at is None:
        return ""
    ms = (at - start).total_seconds() * 1000
    return f"+{ms:.0f} ms" if ms < 10_000 else f"+{ms / 1000:.1f} s"


def timeline(session: Session, latency: dict[str, Any] | None = None) -> list[Step]:
    """requested → instance → bot() → first bot speech → end, with what is known of each."""
    start = session.created_at
    how = {True: "cold start", False: "warm instance"}.get(session.cold_start, "")  # type: ignore[arg-type]
    steps = [
        Step("requested", start, session.transport or "", "+0 ms"),
        Step(
            "instance",
            None,
            " · ".join(x for x in (session.instance_id or "", how) if x),
            reached=session.instance_id is not None,
        ),
        Step(
            "bot() running",
            session.bot_started_at,
            f"{session.bot_start_seconds * 1000:.0f} ms after the request"
            if session.bot_start_seconds is not None
            else "",
            _offset(start, session.bot_started_at),
        ),
    ]
    speech = (latency or {}).get("firstBotSpeechSeconds")
    steps.append(
        Step(
            "first bot speech",
            None,
            f"{speech * 1000:.0f} ms after the client connected" if speech is not None else "",
            reached=speech is not None,
        )
    )
    for event in session.events or []:
        at = datetime.fromisoformat(event["eventTs"]) if event.get("eventTs") else None
        steps.append(Step(str(event.get("eventCode", "event")), at, "", _offset(start, at)))
    steps.append(
        Step(
            "ended",
            session.ended_at,
            session.end_state or "still running",
            _offset(start, session.ended_at),
        )
    )
    return steps


def latency_chart(latency: dict[str, Any]) -> charts.Chart | None:
    """User stops speaking to bot speaks, turn by turn, once the session recorded any."""
    values = [float(v) for v in latency.get("userBotLatencies") or []]
    if not values:
        return None
    summary = latency["userBotLatencySeconds"]
    chart = charts.line_chart(
        "User → bot latency",
        [(float(i), v) for i, v in enumerate(values, start=1)],
        fmt=charts.milliseconds,
        css_class="latency",
        x_labels=("turn 1", f"turn {len(values)}"),
    )
    note = (
        f"{len(values)} turns, p50 {charts.milliseconds(summary['p50'])}, "
        f"p95 {charts.milliseconds(summary['p95'])}"
    )
    return charts.Chart(chart.title, chart.svg, note)


def resource_charts(samples: list[ResourceSample]) -> list[charts.Chart]:
    """CPU and memory over the session, from its samples (the API's timeseries rounds its
    times to seconds; a short session needs better)."""
    t0 = samples[0].t if samples else None
    at = [(s.t - t0).total_seconds() for s in samples] if t0 is not None else []
    return [
        charts.line_chart(
            "CPU",
            [(t, s.cpu_millicores) for t, s in zip(at, samples, strict=True)],
            fmt=charts.millicores,
            css_class="cpu",
        ),
        charts.line_chart(
            "Memory",
            [(t, float(s.memory_bytes)) for t, s in zip(at, samples, strict=True)],
            fmt=charts.megabytes,
            css_class="mem",
        ),
    ]


async def session_page(
    state: ControlState, db: AsyncSession, org: Organization, session_id: str
) -> SessionPage:
    session = await repo.get_session_by_id(db, session_id)
    if session is None or session.organization_id != org.id:
        raise SessionNotFound(f"Session {session_id} not found")
    agent = await repo.get_agent_by_id(db, session.agent_id)
    await state.router.flush()
    samples = await repo.list_resource_samples(db, session.id)
    detail = session_detail(session, samples, await repo.get_latency(db, session.id))
    latency = latency_chart(detail["latencyMetrics"])
    lines = await repo.list_log_lines(
        db, session.agent_id, session_id=session.id, limit=LOG_LINES_SHOWN
    )
    return SessionPage(
        session=session,
        agent_name=agent.name if agent is not None else session.agent_id,
        detail=detail,
        steps=timeline(session, detail["latencyMetrics"]),
        charts=resource_charts(samples) + ([latency] if latency is not None else []),
        lines=lines,
    )
