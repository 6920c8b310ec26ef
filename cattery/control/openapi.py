"""The OpenAPI document ``/openapi.json`` serves: FastAPI's, with every path parameter
declared (``{org}`` is read by a dependency, so FastAPI leaves it out)."""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

_PARAM = re.compile(r"{([^}:]+)(?::[^}]*)?}")


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            declare_path_parameters(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def declare_path_parameters(schema: dict[str, Any]) -> None:
    """Add a string parameter for each ``{name}`` of a path its operations don't declare."""
    for path, operations in schema.get("paths", {}).items():
        names = _PARAM.findall(path)
        for operation in operations.values():
            params = operation.setdefault("parameters", [])
            declared = {p.get("name") for p in params if p.get("in") == "path"}
            for name in names:
                if name not in declared:
                    params.append(
                        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                    )
