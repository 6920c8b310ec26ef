"""Renders every error as Pipecat Cloud's ``{"code": ..., "error": ...}`` body.

Shared by the runtime and the control plane, the only two HTTP servers.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from loguru import logger
from starlette.exceptions import HTTPException as StarletteHTTPException

from cattery.errors import CatteryError

_HTTP_CODES = {
    400: "GENERIC_BAD_REQUEST",
    401: "401",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    429: "PCC-AGENT-AT-CAPACITY",
    503: "SERVICE_UNAVAILABLE",
}


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"code": code, "error": message}, status_code=status)


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "Invalid request: " + "; ".join(parts)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(CatteryError)
    async def _cattery(_: Request, exc: CatteryError) -> JSONResponse:
        return error_response(exc.status_code, exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(400, "GENERIC_BAD_REQUEST", _describe_validation(exc))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # the traceback is logged by the server; the client gets the platform's shape, never
        # a plain-text page or the exception's text (it may hold an engine's or a bot's data)
        logger.opt(exception=exc).error(f"Unhandled error on {request.method} {request.url.path}")
        return error_response(500, CatteryError.code, CatteryError.default_message)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, str(exc.status_code))
        return error_response(exc.status_code, code, str(exc.detail))
