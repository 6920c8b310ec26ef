"""The dashboard's pages and forms under ``/dashboard/``: adapters over the services.

Each handler checks the login (and a POST its CSRF token), calls the service or repository
the API calls, and renders a template. Errors are the API's ``{"code", "error"}`` bodies.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from cattery.control import keys, secret_sets
from cattery.control.dashboard import auth, logstream, views
from cattery.control.dashboard.auth import PREFIX, Looking, Posting, Viewer
from cattery.control.dashboard.logins import Logins
from cattery.control.deps import DB, State
from cattery.control.forwarding import forward
from cattery.control.sessions import StartRequest, start_now
from cattery.errors import InvalidRequest, NotFound, SessionNotFound
from cattery.runtime.bodies import json_object
from cattery.store import repositories as repo

HERE = Path(__file__).parent
STATIC = HERE / "static"
templates = Jinja2Templates(directory=HERE / "templates")
OFFER_PATH = "api/offer"
BUILDS_SHOWN = 100
BUILD_LOG_LINES = 2000


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[dict[str, Logins]]:
    yield {"dashboard_logins": Logins()}


def page(request: Request, name: str, viewer: Viewer | None, status: int = 200, **context: Any):
    return templates.TemplateResponse(
        request,
        name,
        {"viewer": viewer, "prefix": PREFIX, **context},
        status_code=status,
        headers=auth.PAGE_HEADERS,
    )


async def form(request: Request) -> dict[str, str]:
    """The posted form's text fields."""
    return {k: v for k, v in (await request.form()).items() if isinstance(v, str)}


def build_router() -> APIRouter:
    router = APIRouter(lifespan=_lifespan, include_in_schema=False)
    router.mount(PREFIX + "/static", StaticFiles(directory=STATIC), name="dashboard-static")

    @router.get(PREFIX)
    async def bare() -> RedirectResponse:
        return RedirectResponse(PREFIX + "/", status_code=307)

    @router.get(PREFIX + "/login")
    async def login_form(request: Request, next: str | None = None) -> Response:
        return page(
            request,
            "login.html",
            None,
            next=auth.safe_next(next),
            insecure=auth.insecure_origin(request),
        )

    @router.post(PREFIX + "/login")
    async def login(request: Request, state: State) -> Response:
        fields = await form(request)
        target = auth.safe_next(fields.get("next"))
        principal = await auth.key_holder(state, fields.get("token", ""))
        if principal is None:
            return page(
                request,
                "login.html",
                None,
                status=401,
                next=target,
                insecure=auth.insecure_origin(request),
                error="That is not the admin token or a private key of this cattery.",
            )
        logins = auth.logins(request)
        logins.close(request.cookies.get(auth.COOKIE))  # a new login never reuses an old id
        response = RedirectResponse(target, status_code=303)
        auth.set_login_cookie(response, request, logins.open(fields["token"].strip()), logins.ttl)
        return response

    @router.post(PREFIX + "/logout")
    async def logout(request: Request, viewer: Posting) -> Response:
        auth.logins(request).close(viewer.login_id)
        response = RedirectResponse(PREFIX + "/login", status_code=303)
        auth.clear_login_cookie(response)
        return response

    @router.get(PREFIX + "/")
    async def agents(request: Request, state: State, db: DB, viewer: Looking) -> Response:
        rows = await views.agent_summaries(state, db, viewer.organization)
        return page(request, "agents.html", viewer, nav="agents", agents=rows)

    @router.get(PREFIX + "/agents/{name}")
    async def agent(request: Request, state: State, db: DB, viewer: Looking, name: str):
        shown = await views.agent_page(state, db, viewer.organization, name)
        return page(request, "agent.html", viewer, nav="agents", **shown)

    _add_talk_routes(router)
    _add_session_routes(router)
    _add_key_routes(router)
    _add_secret_routes(router)
    _add_build_routes(router)
    return router


def _add_talk_routes(router: APIRouter) -> None:
    @router.get(PREFIX + "/agents/{name}/talk")
    async def talk_page(request: Request, state: State, db: DB, viewer: Looking, name: str):
        shown = await views.agent_page(state, db, viewer.organization, name)
        return page(
            request,
            "talk.html",
            viewer,
            nav="agents",
            agent=shown["agent"],
            ice_urls=state.settings.ice_urls,
        )

    @router.post(PREFIX + "/agents/{name}/talk")
    async def talk(request: Request, state: State, viewer: Posting, name: str) -> dict:
        """A WebRTC session of the agent, started as ``/v1/public/{agent}/start`` starts one."""
        requested_at = time.monotonic()
        data = await json_object(request, empty_ok=True)
        req = StartRequest(
            transport="webrtc",
            enableDefaultIceServers=data.get("enableDefaultIceServers") is True,
            body={"source": "dashboard"},
        )
        return await start_now(state, viewer.organization, name, req, requested_at=requested_at)

    @router.api_route(PREFIX + "/sessions/{session_id}/offer", methods=["POST", "PATCH"])
    async def offer(request: Request, state: State, viewer: Posting, session_id: str):
        """The browser's offer and ICE candidates, on to the session's instance."""
        live = state.supervisor.get(session_id)
        if live is None or live.organization_id != viewer.organization.id:
            raise SessionNotFound()
        return await forward(state, live, _bare(request), OFFER_PATH)


def _bare(request: Request) -> Request:
    """``request`` with only its body's headers: the login cookie and the CSRF token are
    the dashboard's, never the instance's."""
    kept = {b"content-type", b"content-length"}
    scope = dict(request.scope)
    scope["headers"] = [(k, v) for k, v in request.scope["headers"] if k in kept]
    return Request(scope, request.receive)


def _add_session_routes(router: APIRouter) -> None:
    @router.get(PREFIX + "/sessions")
    async def sessions(
        request: Request,
        db: DB,
        viewer: Looking,
        state: str | None = None,
        window: str | None = None,
        agent: str | None = None,
    ) -> Response:
        names = await views.agent_names(db, viewer.organization)
        agent_id = next((i for i, n in names.items() if n == agent), None) if agent else None
        rows = await views.session_list(
            db, viewer.organization, end_state=state, window=window, agent_id=agent_id
        )
        return page(
            request,
            "sessions.html",
            viewer,
            nav="sessions",
            sessions=rows,
            end_states=views.END_STATES,
            windows=list(views.WINDOWS),
            agents=sorted(names.values()),
            chosen={"state": state or "", "window": window or "", "agent": agent or ""},
        )

    @router.get(PREFIX + "/sessions/{session_id}")
    async def session(request: Request, state: State, db: DB, viewer: Looking, session_id: str):
        shown = await views.session_page(state, db, viewer.organization, session_id)
        return page(request, "session.html", viewer, nav="sessions", view=shown)

    @router.get(PREFIX + "/sessions/{session_id}/logs")
    async def log_events(
        request: Request, state: State, db: DB, viewer: Looking, session_id: str, after: int = 0
    ) -> StreamingResponse:
        found = await repo.get_session_by_id(db, session_id)
        if found is None or found.organization_id != viewer.organization.id:
            raise SessionNotFound(f"Session {session_id} not found")
        last = request.headers.get("last-event-id", "")
        after = int(last) if last.isdigit() else after
        return StreamingResponse(
            logstream.follow(state, session_id, after),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    @router.post(PREFIX + "/sessions/{session_id}/stop")
    async def stop(state: State, db: DB, viewer: Posting, session_id: str) -> Response:
        found = await repo.get_session_by_id(db, session_id)
        if found is None or found.organization_id != viewer.organization.id:
            raise SessionNotFound(f"Session {session_id} not found")
        await state.supervisor.stop(session_id)
        return RedirectResponse(f"{PREFIX}/sessions/{session_id}", status_code=303)


def _add_key_routes(router: APIRouter) -> None:
    async def key_page(request: Request, db: DB, viewer: Viewer, **context: Any) -> Response:
        shown = await repo.list_api_keys(db, viewer.organization.id, include_revoked=True)
        return page(
            request,
            "keys.html",
            viewer,
            nav="keys",
            keys=sorted(shown, key=lambda k: k.created_at, reverse=True),
            me=viewer.principal.key_id,
            **context,
        )

    @router.get(PREFIX + "/keys")
    async def list_keys(request: Request, db: DB, viewer: Looking) -> Response:
        return await key_page(request, db, viewer)

    @router.post(PREFIX + "/keys")
    async def create_key(request: Request, db: DB, viewer: Posting) -> Response:
        fields = await form(request)
        key, raw = await keys.create_key(
            db,
            viewer.organization,
            fields.get("type", "public"),
            fields.get("name", ""),
            user_id=viewer.principal.user_id,
        )
        await db.flush()
        return await key_page(request, db, viewer, created={"name": key.name, "key": raw})

    @router.post(PREFIX + "/keys/{key_id}/revoke")
    async def revoke_key(state: State, db: DB, viewer: Posting, key_id: str) -> Response:
        if key_id == viewer.principal.key_id:
            raise InvalidRequest("This is the key you are logged in with: log in with another")
        await keys.revoke_key(state, db, viewer.organization, key_id)
        return RedirectResponse(PREFIX + "/keys", status_code=303)


def _add_secret_routes(router: APIRouter) -> None:
    @router.get(PREFIX + "/secrets")
    async def list_secrets(request: Request, db: DB, viewer: Looking) -> Response:
        sets = await secret_sets.secret_keys(db, viewer.organization)
        return page(request, "secrets.html", viewer, nav="secrets", sets=sets)

    @router.post(PREFIX + "/secrets")
    async def set_secret(state: State, db: DB, request: Request, viewer: Posting) -> Response:
        fields = await form(request)
        await secret_sets.set_secrets(
            state,
            db,
            viewer.organization,
            fields.get("set", "").strip(),
            [(fields.get("key", "").strip(), fields.get("value", ""))],
        )
        return RedirectResponse(PREFIX + "/secrets", status_code=303)

    @router.post(PREFIX + "/secrets/{set_name}/{key}/unset")
    async def unset_secret(db: DB, viewer: Posting, set_name: str, key: str) -> Response:
        await secret_sets.unset_secret(db, viewer.organization, set_name, key)
        return RedirectResponse(PREFIX + "/secrets", status_code=303)


__all__ = ["build_router"]


def _add_build_routes(router: APIRouter) -> None:
    @router.get(PREFIX + "/builds")
    async def builds(request: Request, db: DB, viewer: Looking) -> Response:
        found, total = await repo.list_builds(db, viewer.organization.id, limit=BUILDS_SHOWN)
        return page(request, "builds.html", viewer, nav="builds", builds=found, total=total)

    @router.get(PREFIX + "/builds/{build_id}")
    async def build(request: Request, db: DB, viewer: Looking, build_id: str) -> Response:
        found = await repo.get_build(db, viewer.organization.id, build_id)
        if found is None:
            raise NotFound(f"Build {build_id!r} not found")
        lines = await repo.list_build_log_lines(db, found.id, limit=BUILD_LOG_LINES)
        return page(request, "build.html", viewer, nav="builds", build=found, lines=lines)
