"""Logging in to the dashboard, and what every page and form asks of its caller.

A login proves the admin token or a private key once; the browser then holds an HttpOnly,
``SameSite=Lax``, ``Secure`` cookie scoped to ``/dashboard/`` (Chromium and Firefox keep
Secure cookies on ``http://127.0.0.1`` and ``localhost``; anywhere else the dashboard must be
served over HTTPS). Every form and script POST carries the login's CSRF token. The key is
checked again on every request through the same lookup the API uses, so a revoked key is
logged out at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from cattery.control.dashboard.logins import Login, Logins
from cattery.control.deps import State
from cattery.control.lookups import Principal
from cattery.control.state import ControlState
from cattery.errors import Forbidden, Unauthorized
from cattery.store.models import ApiKeyKind, Organization

PREFIX = "/dashboard"
COOKIE = "cattery_dashboard"
COOKIE_PATH = PREFIX + "/"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
#: what every page may load, run and post to: only this origin (nothing beyond the
#: machine, no inline script), and no other site may frame it
PAGE_HEADERS = {
    "cache-control": "no-store",
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; media-src 'self' blob:; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "referrer-policy": "same-origin",
    "x-content-type-options": "nosniff",
}


class LoginRequired(Exception):
    """No valid login: a page redirects to the login form, anything else is a 401."""

    def __init__(self, request: Request) -> None:
        super().__init__("login required")
        self.request = request


@dataclass(frozen=True)
class Viewer:
    """Who is looking: their login (its CSRF token) and the key's organization."""

    login_id: str
    login: Login
    principal: Principal

    @property
    def organization(self) -> Organization:
        return self.principal.organization

    @property
    def csrf(self) -> str:
        return self.login.csrf


def logins(request: Request) -> Logins:
    return request.state.dashboard_logins


async def key_holder(state: ControlState, token: str) -> Principal | None:
    """The caller ``token`` proves, if it may log in: the admin token or a private key."""
    token = token.strip()
    if not token:
        return None
    principal = await state.lookups.principal(state.sessionmaker, token)
    if principal is None or principal.kind == ApiKeyKind.PUBLIC:
        return None
    return principal


async def viewer(request: Request, state: State) -> Viewer:
    login_id = request.cookies.get(COOKIE)
    known = logins(request)
    login = known.get(login_id)
    if login_id is None or login is None:
        raise LoginRequired(request)
    principal = await key_holder(state, login.token)
    if principal is None:  # revoked since it logged in
        known.close(login_id)
        raise LoginRequired(request)
    return Viewer(login_id=login_id, login=login, principal=principal)


async def form_viewer(request: Request, seen: Annotated[Viewer, Depends(viewer)]) -> Viewer:
    """A POST's caller, whose CSRF token (form field or header) must be the login's."""
    given = request.headers.get(CSRF_HEADER)
    if given is None and _is_form(request):
        field = (await request.form()).get(CSRF_FIELD)
        given = field if isinstance(field, str) else None
    if not seen.login.csrf_matches(given):
        raise Forbidden("The form's CSRF token is missing or wrong: reload the page and retry")
    return seen


Looking = Annotated[Viewer, Depends(viewer)]
Posting = Annotated[Viewer, Depends(form_viewer)]


def _is_form(request: Request) -> bool:
    kind = request.headers.get("content-type", "")
    return kind.startswith(("application/x-www-form-urlencoded", "multipart/form-data"))


def set_login_cookie(response: Response, request: Request, login_id: str, ttl: float) -> None:
    response.set_cookie(
        COOKIE,
        login_id,
        max_age=int(ttl),
        path=COOKIE_PATH,
        httponly=True,
        secure=True,
        samesite="lax",
    )


def clear_login_cookie(response: Response) -> None:
    response.delete_cookie(COOKIE, path=COOKIE_PATH, httponly=True, secure=True, samesite="lax")


def insecure_origin(request: Request) -> bool:
    """Plain HTTP to a host other than loopback: browsers drop the Secure cookie there."""
    host = (request.url.hostname or "").lower()
    return request.url.scheme != "https" and host not in LOOPBACK_HOSTS


def safe_next(target: str | None) -> str:
    """Where to go after logging in: a dashboard path only, never another site."""
    if target and target.startswith(PREFIX + "/") and not target.startswith("//"):
        return target
    return PREFIX + "/"


async def login_required(request: Request, exc: Exception) -> Response:
    """Pages go to the login form (and come back); other requests get a 401."""
    assert isinstance(exc, LoginRequired)
    if request.method == "GET" and request.headers.get("accept", "").find("text/event") < 0:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        response: Response = RedirectResponse(
            f"{PREFIX}/login?next={quote(target, safe='/')}", status_code=303
        )
    else:
        error = Unauthorized("Log in to the dashboard first")
        response = JSONResponse(error.to_body(), status_code=error.status_code)
    if request.cookies.get(COOKIE):
        clear_login_cookie(response)
    return response
