"""Routes whose JSON bodies FastAPI parses go through ``jsonlimits``: a deeply nested body
is a 400 before any model sees it."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from cattery import jsonlimits


class BoundedJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = jsonlimits.loads(await self.body())
        return self._json


class BoundedJSONRoute(APIRoute):
    """An ``APIRoute`` whose request parses JSON with a bound on nesting (FastAPI renders
    the parser's refusal as a 400)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def bounded(request: Request) -> Response:
            return await handler(BoundedJSONRequest(request.scope, request.receive))

        return bounded
