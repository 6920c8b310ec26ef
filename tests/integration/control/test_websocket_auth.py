"""An agent deployed with ``websocketAuth: token`` wants a token on its carriers'
WebSockets even where the platform's ``CATTERY_WS_AUTH`` doesn't."""

from __future__ import annotations

from tests.integration.control.helpers import start
from tests.support.control import ORG, ControlPlane
from tests.support.processes import TEST_BOTS
from tests.support.telephony import TwilioCall


async def test_an_agents_websocket_auth_wants_a_token(control: ControlPlane) -> None:
    control.deploy(
        "guarded",
        TEST_BOTS / "probe",
        autoScaling={"minAgents": 0, "maxAgents": 1},
        websocketAuth="token",
    )
    with control.client() as c:
        body = c.get(f"/v1/organizations/{ORG}/services/guarded").json()["body"]
    assert body["websocketAuth"] == "token"
    ws = control.process.ws_url
    code, reason = await TwilioCall().refused(f"{ws}/ws/twilio?serviceHost=guarded.{ORG}")
    assert code == 4003 and "websocketAuth" in reason, reason
    resp = start(control, control.public_key(), "guarded", transport="twilio")
    assert resp.status_code == 200 and resp.json()["token"], resp.text
