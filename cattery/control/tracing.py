"""OpenTelemetry spans for a start: ``start`` → ``acquire`` and ``dispatch``, whose context
goes to the instance as a W3C ``traceparent`` header (its ``bot`` span, then Pipecat's
``conversation`` and ``turn`` spans, continue the same trace).

Only with an OTLP endpoint configured (``OTEL_EXPORTER_OTLP_ENDPOINT``); otherwise every
call here is a no-op and OpenTelemetry is never imported. Each app has its own tracer
provider (no global one: tests run several apps in one process), closed with the app.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from cattery.contract import TRACEPARENT_HEADER

SERVICE_NAME = "cattery"


class Tracing:
    """Owned by the control plane's state; owns its tracer provider and exporter."""

    def __init__(self, endpoint: str | None) -> None:
        self.endpoint = endpoint.rstrip("/") if endpoint else None
        self._provider: Any = None
        self._tracer: Any = None
        if self.endpoint:
            self._open(self.endpoint)

    @property
    def enabled(self) -> bool:
        return self._tracer is not None

    def _open(self, endpoint: str) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
        exporter = OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces")
        provider.add_span_processor(BatchSpanProcessor(exporter))
        self._provider = provider
        self._tracer = provider.get_tracer("cattery.control")

    @contextmanager
    def span(self, name: str, **attributes: str) -> Iterator[None]:
        """A span, current for what runs inside (nested spans are its children)."""
        if self._tracer is None:
            yield
            return
        with self._tracer.start_as_current_span(name, attributes=attributes):
            yield

    def traceparent(self) -> str | None:
        """The current span as a ``traceparent`` header value, for the instance."""
        if self._tracer is None:
            return None
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        carrier: dict[str, str] = {}
        TraceContextTextMapPropagator().inject(carrier)
        return carrier.get(TRACEPARENT_HEADER)

    def aclose(self) -> None:
        """Export what is left, then stop."""
        if self._provider is not None:
            self._provider.shutdown()
            self._provider = self._tracer = None
