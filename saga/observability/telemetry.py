"""Export traces and metrics over OTLP/HTTP (protobuf), or not at all.

:func:`configure` is called once per ``saga`` process (service or coordinator)
with its settings:

* ``SAGA_OTLP_ENDPOINT`` (e.g. ``http://jaeger:4318``): spans go to
  ``<endpoint>/v1/traces``, batched on a background thread. An unreachable
  collector never blocks or fails a saga: a full queue drops spans, and an
  export gives up after ``SAGA_OTLP_TIMEOUT_MS``.
* ``SAGA_OTLP_METRICS_ENDPOINT`` (e.g. an OpenTelemetry Collector at
  ``http://otel-collector:4318``; Jaeger takes no metrics): the instruments of
  :mod:`saga.observability.metrics` go to ``<endpoint>/v1/metrics`` every
  ``SAGA_METRICS_INTERVAL_MS``.

Neither set: the OpenTelemetry API stays a no-op and costs next to nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.sdk.resources import Resource

from saga.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Telemetry:
    """The providers one process set up; :meth:`shutdown` flushes them (bounded)."""

    providers: list[Any] = field(default_factory=list)

    def shutdown(self) -> None:
        for provider in self.providers:
            try:
                provider.shutdown()
            except Exception as exc:  # telemetry never fails the process
                log.warning("telemetry shutdown failed: %s", exc)
        self.providers.clear()


def configure(settings: Settings, *, set_global: bool = True) -> Telemetry:
    """Providers for ``settings``; made the process-wide ones unless ``set_global=False``.

    Telemetry that cannot be set up is logged and left out: it never stops a process.
    """
    try:
        return _configure(settings, set_global)
    except Exception as exc:
        log.warning("telemetry disabled: %s: %s", type(exc).__name__, exc)
        return Telemetry()


def _configure(settings: Settings, set_global: bool) -> Telemetry:
    telemetry = Telemetry()
    if not settings.otlp_endpoint and not settings.otlp_metrics_endpoint:
        return telemetry
    try:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        log.warning(
            "SAGA_OTLP_ENDPOINT is set but the OTLP exporter is not installed: "
            "pip install 'kafka-saga[otlp]'; not exporting telemetry"
        )
        return telemetry
    resource = Resource.create({"service.name": settings.service_name})
    timeout_s = settings.otlp_timeout_ms / 1000
    if settings.otlp_endpoint:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        tracer_provider = TracerProvider(resource=resource)
        exporter = OTLPSpanExporter(
            endpoint=_url(settings.otlp_endpoint, "traces"), timeout=timeout_s
        )
        tracer_provider.add_span_processor(
            BatchSpanProcessor(
                exporter,
                max_queue_size=settings.otlp_queue_size,
                max_export_batch_size=min(512, settings.otlp_queue_size),
                schedule_delay_millis=settings.otlp_export_interval_ms,
                export_timeout_millis=settings.otlp_timeout_ms,
            )
        )
        telemetry.providers.append(tracer_provider)
        if set_global:
            trace.set_tracer_provider(tracer_provider)
        log.info("exporting traces to %s", _url(settings.otlp_endpoint, "traces"))
    if settings.otlp_metrics_endpoint:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        reader = PeriodicExportingMetricReader(
            OTLPMetricExporter(
                endpoint=_url(settings.otlp_metrics_endpoint, "metrics"), timeout=timeout_s
            ),
            export_interval_millis=settings.metrics_interval_ms,
            export_timeout_millis=settings.otlp_timeout_ms,
        )
        meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
        telemetry.providers.append(meter_provider)
        if set_global:
            metrics.set_meter_provider(meter_provider)
        log.info("exporting metrics to %s", _url(settings.otlp_metrics_endpoint, "metrics"))
    return telemetry


def _url(endpoint: str, signal: str) -> str:
    """``http://host:4318`` -> ``http://host:4318/v1/<signal>``; a full path is kept."""
    base = endpoint.rstrip("/")
    return base if base.endswith(f"/v1/{signal}") else f"{base}/v1/{signal}"
