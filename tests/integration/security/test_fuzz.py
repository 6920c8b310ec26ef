"""Fuzzing cattery's own OpenAPI: the public start, the webhooks and the private API, in
process. Bounded and deterministic: at most ``EXAMPLES`` cases per operation from a fixed
derivation; every answer must be no server error (a 501 naming what a self-hosted cattery
leaves out is by design) and fit the documented response schema.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance
from starlette.testclient import TestClient

from cattery.control.app import create_app
from cattery.settings import Settings
from tests.support.control import ADMIN_TOKEN, ORG
from tests.support.inprocess import settings_for

EXAMPLES = 20
#: the schema is the app's own, as ``/openapi.json`` serves it (made without a lifespan)
schema = schemathesis.openapi.from_dict(
    create_app(Settings(state_dir=Path(tempfile.gettempdir()) / "cattery-fuzz-schema")).openapi()
)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, str]]:
    """One control plane for the whole run, and a public key of its organization."""
    app = create_app(settings_for(tmp_path_factory.mktemp("fuzz") / "state"))
    with TestClient(app, raise_server_exceptions=False) as client:
        resp = client.post(
            f"/v1/organizations/{ORG}/apiKeys",
            json={"name": "fuzz", "type": "public"},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        assert resp.status_code == 200, resp.text
        yield client, resp.json()["key"]


def _request_kwargs(case: Any, public_key: str) -> dict[str, Any]:
    """The case as httpx arguments, with the key its route takes (none for webhooks)."""
    if case.path.startswith("/v1/public/webhooks/"):
        auth = {}
    elif case.path.startswith("/v1/public/"):
        auth = {"Authorization": f"Bearer {public_key}"}
    else:
        auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    kwargs = case.as_transport_kwargs(base_url="http://testserver", headers=auth)
    if "data" in kwargs and isinstance(kwargs["data"], str | bytes):
        kwargs["content"] = kwargs.pop("data")
    if not kwargs.get("cookies"):
        kwargs.pop("cookies", None)
    kwargs.pop("timeout", None)
    kwargs.pop("allow_redirects", None)
    return kwargs


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_the_api_never_fails_and_keeps_its_schema(case: Any, api: tuple[TestClient, str]) -> None:
    client, public_key = api
    response = client.request(**_request_kwargs(case, public_key))
    if _by_design(response):
        return
    case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])


def _by_design(response: Any) -> bool:
    """A 501 that says what a self-hosted cattery doesn't do, and what to do instead."""
    if response.status_code != 501:
        return False
    return response.json().get("code") == "NOT_AVAILABLE_SELF_HOSTED"
