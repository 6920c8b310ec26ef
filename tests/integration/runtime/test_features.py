"""``PCC_LOG_FEATURES_SUMMARY=true``: the runtime logs which optional features it can serve."""

from __future__ import annotations

import re

import httpx

from tests.support.processes import TEST_BOTS
from tests.support.waiting import wait_for

PROBE = TEST_BOTS / "probe"
WHATSAPP_ENV = {
    "WHATSAPP_TOKEN": "fake-token",
    "WHATSAPP_PHONE_NUMBER_ID": "1234567890",
    "WHATSAPP_APP_SECRET": "fake-app-secret",
}
# Every optional feature the pipecat-base image reports on.
FEATURES = (
    "Daily session arguments",
    "Daily transport",
    "WebSocket session arguments",
    "SmallWebRTC session arguments",
    "SmallWebRTC transport",
    "ICE candidates (PATCH /api/offer)",
    "WhatsApp",
    "Observability observers",
)


def summary(logs: str) -> dict[str, tuple[str, str]]:
    """Each of ``FEATURES`` (and the ICE config URL) found in the summary: (status, detail)."""
    block = logs.split("Features summary:\n", 1)[1]
    found: dict[str, tuple[str, str]] = {}
    for name in (*FEATURES, "ICE config URL"):
        pattern = rf"^  (enabled|disabled)\s+{re.escape(name)}(?: \((.*)\))?$"
        match = re.search(pattern, block, re.MULTILINE)
        if match:
            found[name] = (match[1], match[2] or "")
    return found


def test_features_summary_names_every_feature(start_runtime) -> None:
    rt = start_runtime(PROBE, PCC_LOG_FEATURES_SUMMARY="true")
    got = summary(wait_for(lambda: "Serving " in rt.logs() and rt.logs(), what="startup"))
    assert set(FEATURES) <= set(got), got
    for name in (
        "SmallWebRTC session arguments",
        "SmallWebRTC transport",
        "ICE candidates (PATCH /api/offer)",
        "WebSocket session arguments",
        "Daily session arguments",
    ):
        assert got[name][0] == "enabled", (name, got[name])
    status, detail = got["WhatsApp"]
    assert status == "disabled"
    for var in WHATSAPP_ENV:
        assert var in detail
    assert got["ICE config URL"][0] == "disabled"
    # The summary is logged before the server takes requests, and changes nothing in them.
    logs = rt.logs()
    assert logs.index("Features summary:") < logs.index("Serving ")
    assert httpx.get(rt.url + "/readyz").json() == {"status": "ok"}


def test_whatsapp_is_enabled_by_its_three_variables(start_runtime) -> None:
    rt = start_runtime(PROBE, PCC_LOG_FEATURES_SUMMARY="true", **WHATSAPP_ENV)
    got = summary(rt.logs())
    assert got["WhatsApp"] == ("enabled", "")
    assert "fake-app-secret" not in rt.logs() and "fake-token" not in rt.logs()


def test_one_whatsapp_variable_missing_disables_it(start_runtime) -> None:
    env = {**WHATSAPP_ENV, "WHATSAPP_APP_SECRET": ""}
    rt = start_runtime(PROBE, PCC_LOG_FEATURES_SUMMARY="true", **env)
    assert summary(rt.logs())["WhatsApp"][0] == "disabled"
    resp = httpx.post(rt.url + "/whatsapp", json={"object": "whatsapp_business_account"})
    assert resp.status_code in (404, 405)
    assert set(resp.json()) == {"code", "error"}


def test_no_summary_unless_asked(start_runtime) -> None:
    rt = start_runtime(PROBE)
    assert "Serving " in wait_for(lambda: "Serving " in rt.logs() and rt.logs(), what="startup")
    assert "Features summary" not in rt.logs()


def test_observability_observers_are_on_unless_disabled(start_runtime) -> None:
    rt = start_runtime(PROBE, PCC_LOG_FEATURES_SUMMARY="true")
    assert summary(rt.logs())["Observability observers"] == ("enabled", "")
    off = start_runtime(
        PROBE, PCC_LOG_FEATURES_SUMMARY="true", DISABLED_FEATURES="observability_observers"
    )
    status, detail = summary(off.logs())["Observability observers"]
    assert status == "disabled" and "DISABLED_FEATURES" in detail
