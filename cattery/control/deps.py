"""Request dependencies: the transaction, the caller's key, and the organization in scope."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from cattery.control.lookups import Principal
from cattery.control.state import ControlState
from cattery.errors import Forbidden, NotFound, Unauthorized
from cattery.store.models import ApiKeyKind, Organization


async def control_state(request: Request) -> ControlState:
    """Async on purpose: FastAPI runs a plain ``def`` dependency in its thread pool, a hop
    per request."""
    return request.app.state.control


State = Annotated[ControlState, Depends(control_state)]


async def db_session(state: State) -> AsyncIterator[AsyncSession]:
    """The request owns the transaction: commit on success, roll back on error."""
    async with state.sessionmaker() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


#: the transaction commits before the response leaves, so the next request sees it
DB = Annotated[AsyncSession, Depends(db_session, scope="function")]


def bearer_token(request: Request) -> str:
    return bearer_key(request.headers.get("authorization"))


def bearer_key(header: str | None) -> str:
    """The key of an ``Authorization: Bearer <key>`` header; else a 401."""
    scheme, _, token = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Missing API key: send Authorization: Bearer <key>")
    return token.strip()


async def any_key(request: Request, state: State) -> Principal:
    """The caller's key, from memory when it was seen lately (``lookups.py``): a Session
    API request then reaches its instance without opening a database session."""
    principal = await state.lookups.principal(state.sessionmaker, bearer_token(request))
    if principal is None:
        raise Unauthorized("Invalid or revoked API key")
    return principal


async def private_key(principal: Annotated[Principal, Depends(any_key)]) -> Principal:
    if principal.kind == ApiKeyKind.PUBLIC:
        raise Forbidden("A public key can't be used here: use a private key or the admin token")
    return principal


async def disconnected(request: Request) -> None:
    """Return once the caller has closed its connection (its body was read already)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def base_url(request: Request) -> str:
    """The control plane's URL as this caller reached it (scheme and host)."""
    return f"{request.url.scheme}://{request.url.netloc}"


PublicCaller = Annotated[Principal, Depends(any_key)]
PrivateCaller = Annotated[Principal, Depends(private_key)]


async def organization(request: Request, caller: PrivateCaller) -> Organization:
    """The org in the path (org-scoped routes) must be the caller's; else it doesn't exist."""
    name = request.path_params.get("org")
    if name is not None and name != caller.organization.name:
        raise NotFound(f"Organization {name!r} not found")
    return caller.organization


Org = Annotated[Organization, Depends(organization)]
