"""OpenTelemetry in an instance: the session's ``bot`` span, continuing the control plane's
trace, and an exporter Pipecat's own tracing (``enable_tracing=True``) sends through.

Only with ``OTEL_EXPORTER_OTLP_ENDPOINT`` set; otherwise nothing here imports OpenTelemetry.
The control plane sends a W3C ``traceparent`` header with ``POST /bot``; the bot runs inside
a ``bot`` span that is its child, so the pipeline's ``conversation`` and ``turn`` spans land
in the trace that began with the start request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from cattery.contract import TRACEPARENT_HEADER

SERVICE_NAME = "cattery-instance"
FLUSH_MILLIS = 5000

_provider: Any = None


def setup(endpoint: str | None) -> bool:
    """Install an OTLP/HTTP exporter as this process's tracer provider (once)."""
    global _provider
    if not endpoint or _provider is not None:
        return _provider is not None
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
    exporter = OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces")
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _provider = provider
    return True


@contextmanager
def session_span(traceparent: str | None, session_id: str) -> Iterator[None]:
    """The ``bot`` span of one session, current for what runs inside (the bot's task)."""
    if _provider is None:
        yield
        return
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    parent = TraceContextTextMapPropagator().extract({TRACEPARENT_HEADER: traceparent or ""})
    tracer = _provider.get_tracer("cattery.runtime")
    with tracer.start_as_current_span("bot", context=parent) as span:
        span.set_attribute("session.id", session_id)
        yield


async def flush() -> None:
    """Send what the session traced before the instance exits."""
    if _provider is not None:
        await asyncio.to_thread(_provider.force_flush, FLUSH_MILLIS)
