"""OpenTelemetry traces, off unless OTEL_EXPORTER_OTLP_ENDPOINT is set: then every HTTP request
(and websocket) is a span (the ASGI instrumentation), with a child span per SQL statement sent
through the app's SQLAlchemy engine (the SQLAlchemy instrumentation, on that engine only). The
spans go over OTLP/HTTP to the collector, batched in the background. Off, nothing is wrapped:
no cost on the hot path.

The provider is the app's own, not the process-wide global one: two apps in one process (the
tests) trace apart, and the OTEL_* variables of the SDK still apply to the exporter.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from sqlalchemy.ext.asyncio import AsyncEngine
    from starlette.applications import Starlette

    from core.settings import Settings


def enable(app: Starlette, settings: Settings, exporter: SpanExporter | None = None) -> None:
    """Trace `app`'s requests, to `exporter` (a test's in-memory one) or else to the OTLP
    endpoint of the settings; nothing when neither is given. Call before the app serves."""
    if exporter is None and not settings.otel_exporter_otlp_endpoint:
        return
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    provider = TracerProvider(
        resource=Resource.create({"service.name": settings.otel_service_name})
    )
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        base = str(settings.otel_exporter_otlp_endpoint).rstrip("/")
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(f"{base}/v1/traces")))
    app.state.tracer_provider = provider
    # Outermost: the request's span is the parent of everything the request does.
    app.add_middleware(
        OpenTelemetryMiddleware, tracer_provider=provider, exclude_spans=["receive", "send"]
    )


def trace_engine(app: Starlette, engine: AsyncEngine) -> None:
    """A span per SQL statement of `engine`, under the request's, when `app` is traced."""
    provider: TracerProvider | None = getattr(app.state, "tracer_provider", None)
    if provider is None:
        return
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
    from opentelemetry.metrics import NoOpMeterProvider

    usage = (
        NoOpMeterProvider()
        .get_meter(__name__)
        .create_up_down_counter("db.client.connections.usage", unit="connections")
    )
    EngineTracer(provider.get_tracer(__name__), engine.sync_engine, usage)


def shutdown(app: Starlette) -> None:
    """Send the spans still batched, when `app` is traced (at the end of its lifespan)."""
    provider: TracerProvider | None = getattr(app.state, "tracer_provider", None)
    if provider is not None:
        provider.shutdown()
