"""Traces: one trace from the control plane's start to the bot's pipeline spans.

In process (``create_app`` on httpx's ASGI transport) with a stand-in OTLP/HTTP collector
on loopback, which parses the protobuf bodies both the control plane and the instance
send. The instance runs the traced test bot (Pipecat's ``enable_tracing=True``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.support.control import ORG
from tests.support.inprocess import app_client
from tests.support.processes import TEST_BOTS
from tests.support.waiting import async_wait_for

TRACED = TEST_BOTS / "traced"


@dataclass(frozen=True)
class Span:
    name: str
    service: str
    trace_id: str
    span_id: str
    parent_id: str


@dataclass
class Collector:
    """A stand-in for an OpenTelemetry collector's OTLP/HTTP traces endpoint."""

    spans: list[Span] = field(default_factory=list)
    url: str = ""

    async def traces(self, request: web.Request) -> web.Response:
        export = ExportTraceServiceRequest()
        export.ParseFromString(await request.read())
        for resource_spans in export.resource_spans:
            attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    self.spans.append(
                        Span(
                            span.name,
                            attributes.get("service.name", ""),
                            span.trace_id.hex(),
                            span.span_id.hex(),
                            span.parent_span_id.hex(),
                        )
                    )
        body = ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=body, content_type="application/x-protobuf")

    def named(self, name: str) -> Span:
        found = [s for s in self.spans if s.name == name]
        assert len(found) == 1, (name, self.spans)
        return found[0]


@asynccontextmanager
async def collecting() -> AsyncIterator[Collector]:
    collector = Collector()
    app = web.Application()
    app.router.add_post("/v1/traces", collector.traces)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    collector.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield collector
    finally:
        await runner.cleanup()


async def start_traced(client: httpx.AsyncClient) -> str:
    body = {"serviceName": "traced", "image": f"{TRACED}:latest"}
    body["autoScaling"] = {"minAgents": 1, "maxAgents": 1}
    resp = await client.post(f"/v1/organizations/{ORG}/services", json=body)
    assert resp.status_code == 200, resp.text

    async def warm() -> bool:
        resp = await client.get(f"/v1/organizations/{ORG}/services/traced")
        return resp.json()["body"]["pool"]["idle"] == 1

    await async_wait_for(warm, timeout=60, what="a warm instance")
    key = await client.post(
        f"/v1/organizations/{ORG}/apiKeys", json={"name": "app", "type": "public"}
    )
    resp = await client.post(
        "/v1/public/traced/start",
        json={"createDailyRoom": False},
        headers={"Authorization": f"Bearer {key.json()['key']}"},
    )
    assert resp.status_code == 200, resp.text
    session_id = resp.json()["sessionId"]

    async def ended() -> bool:
        path = f"/v1/organizations/{ORG}/services/traced/sessions/{session_id}"
        return (await client.get(path)).json()["endState"] == "completed"

    await async_wait_for(ended, timeout=60, what="the session to end")
    return session_id


async def test_one_trace_from_the_start_to_the_pipeline(tmp_path: Path) -> None:
    async with collecting() as collector:
        async with app_client(tmp_path / "state", otlp_endpoint=collector.url) as client:
            await start_traced(client)

            async def pipeline_traced() -> bool:
                return any(s.name == "conversation" for s in collector.spans)

            await async_wait_for(pipeline_traced, timeout=30, what="the pipeline's spans")
        # the control plane exports what is left as it closes
        start, acquire, dispatch = (collector.named(n) for n in ("start", "acquire", "dispatch"))
        bot, conversation = collector.named("bot"), collector.named("conversation")
        assert start.service == "cattery" and bot.service == "cattery-instance"
        assert {s.trace_id for s in (start, acquire, dispatch, bot, conversation)} == {
            start.trace_id
        }
        assert start.parent_id == ""
        assert acquire.parent_id == dispatch.parent_id == start.span_id
        assert bot.parent_id == dispatch.span_id
        assert conversation.parent_id == bot.span_id


#: a control plane's lifespan without an endpoint, then what of OpenTelemetry's SDK it loaded
NO_ENDPOINT = """
import asyncio, sys
from tests.support.inprocess import running_app, settings_for
async def main():
    async with running_app(settings_for(sys.argv[1])) as app:
        assert not app.state.control.tracing.enabled
        assert app.state.control.tracing.traceparent() is None
    sdk = ("opentelemetry.sdk", "opentelemetry.exporter")
    print(sorted(m for m in sys.modules if m.startswith(sdk)))
asyncio.run(main())
"""


def test_nothing_is_traced_or_loaded_without_an_endpoint(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CATTERY_"))}
    done = subprocess.run(
        [sys.executable, "-c", NO_ENDPOINT, str(tmp_path / "state")],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).parents[3],
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout
