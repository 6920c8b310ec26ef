"""The OpenAPI document ``/openapi.json`` serves: FastAPI's, with every path parameter
declared (``{org}`` is read by a dependency, so FastAPI leaves it out) and one operation id
per operation (FastAPI gives a route's methods one id: the Session API's proxy and the
refusals of cloud-only routes answer several methods each)."""

from __future__ import annotations

import re
import warnings
from collections import Counter
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

_PARAM = re.compile(r"{([^}:]+)(?::[^}]*)?}")
_METHOD_SUFFIX = re.compile(r"_(get|put|post|delete|options|head|patch|trace)$")


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            with warnings.catch_warnings():  # made unique below
                warnings.filterwarnings("ignore", message="Duplicate Operation ID")
                schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            declare_path_parameters(schema)
            unique_operation_ids(schema)
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


def unique_operation_ids(schema: dict[str, Any]) -> None:
    """An id several operations share gets each one's own method as its suffix."""
    operations = [
        (method, operation)
        for path_item in schema.get("paths", {}).values()
        for method, operation in path_item.items()
        if isinstance(operation, dict) and "operationId" in operation
    ]
    shared = Counter(operation["operationId"] for _, operation in operations)
    for method, operation in operations:
        if shared[operation["operationId"]] > 1:
            base = _METHOD_SUFFIX.sub("", operation["operationId"])
            operation["operationId"] = f"{base}_{method}"
