"""What a forked child takes over from its parent's build: the token, the random state."""

from __future__ import annotations

import sys
import types

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from cattery.backends.forking.child import reseed
from cattery.runtime.guard import InstanceGuard, InstanceToken
from cattery.runtime.main import Prebuilt
from cattery.runtime.options import INSTANCE_TOKEN_HEADER, RuntimeOptions
from cattery.runtime.sessions import SessionRunner


async def _bot(_args: object) -> None:
    return None


def _guarded(token: InstanceToken) -> httpx.AsyncClient:
    async def ok(_request: object) -> JSONResponse:
        return JSONResponse({})

    app = Starlette(routes=[Route("/bot", ok, methods=["POST"]), Route("/livez", ok)])
    guarded = InstanceGuard(app, runner=SessionRunner(_bot), token=token)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=guarded), base_url="http://i")


async def test_a_token_set_after_the_app_was_built_is_the_one_checked() -> None:
    token = InstanceToken(None)  # the parent builds the app before any child has a token
    async with _guarded(token) as client:
        assert (await client.post("/bot")).status_code == 200
        token.set("child-token")
        assert (await client.post("/bot")).status_code == 401
        wrong = {INSTANCE_TOKEN_HEADER: "other"}
        assert (await client.post("/bot", headers=wrong)).status_code == 401
        right = {INSTANCE_TOKEN_HEADER: "child-token"}
        assert (await client.post("/bot", headers=right)).status_code == 200
        assert (await client.get("/livez")).status_code == 200  # open without a token


def _prebuilt(options: RuntimeOptions) -> Prebuilt:
    return Prebuilt(None, options, None, None, None)  # type: ignore[arg-type]


def test_a_child_serves_the_parents_build_when_only_its_token_differs() -> None:
    parent = RuntimeOptions(host="127.0.0.1", log_level="INFO")
    child = RuntimeOptions(host="127.0.0.1", log_level="INFO", instance_token="t1")
    assert _prebuilt(parent).serves(child)


def test_a_child_serves_the_parents_build_with_its_own_limits_and_logging() -> None:
    parent = RuntimeOptions(host="127.0.0.1", log_level="INFO")
    child = RuntimeOptions(
        host="127.0.0.1", log_level="DEBUG", shutdown_timeout=1, memory_limit_bytes=2**30
    )
    assert _prebuilt(parent).serves(child)


@pytest.mark.parametrize(
    "changed",
    [{"image_version": "v2"}, {"ice_fallback_urls": ()}, {"esp32_host": "10.0.0.1"}],
)
def test_a_child_with_other_app_settings_builds_its_own(changed: dict) -> None:
    parent = RuntimeOptions(host="127.0.0.1", log_level="INFO")
    child = RuntimeOptions(host="127.0.0.1", log_level="INFO", instance_token="t1")
    assert not _prebuilt(parent).serves(RuntimeOptions(**{**child.__dict__, **changed}))


def test_reseed_leaves_a_numpy_generator_nobody_imported_unimported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delitem(sys.modules, "numpy.random", raising=False)
    reseed()
    assert "numpy.random" not in sys.modules  # importing it costs a child ~10 ms


def test_reseed_renews_a_numpy_generator_the_parent_imported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seeded: list[bool] = []
    stand_in = types.ModuleType("numpy.random")
    stand_in.seed = lambda: seeded.append(True)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "numpy.random", stand_in)
    reseed()
    assert seeded == [True]


async def test_an_unbuilt_app_is_the_bots_own_again() -> None:
    from fastapi import FastAPI

    from cattery.runtime.app import Unbuilt

    app = FastAPI()

    @app.get("/mine")
    async def mine() -> dict:
        return {}

    before = Unbuilt.of(app)
    app.add_middleware(InstanceGuard, runner=SessionRunner(_bot), token=InstanceToken("t"))

    @app.get("/theirs")
    async def theirs() -> dict:
        return {}

    app.middleware_stack = app.build_middleware_stack()
    before.restore(app)
    app.add_middleware(InstanceGuard, runner=SessionRunner(_bot), token=InstanceToken(None))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://i") as c:
        assert (await c.get("/mine")).status_code == 200
        assert (await c.get("/theirs")).status_code == 404
