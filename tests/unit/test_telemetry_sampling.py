"""Which traces are sampled is the OpenTelemetry SDK's standard setting (docs/settings.md)."""

from __future__ import annotations

import pytest

from saga.observability.telemetry import configure
from saga.settings import Settings


def sampler_of(settings: Settings) -> str:
    telemetry = configure(settings, set_global=False)
    try:
        (provider,) = telemetry.providers
        description: str = provider.sampler.get_description()
        return description
    finally:
        telemetry.shutdown()


def test_every_trace_is_sampled_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_TRACES_SAMPLER", raising=False)
    monkeypatch.delenv("OTEL_TRACES_SAMPLER_ARG", raising=False)
    description = sampler_of(Settings(otlp_endpoint="http://127.0.0.1:9"))
    assert description.startswith("ParentBased{root:AlwaysOnSampler")


def test_a_parent_based_ratio_from_the_sdk_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.1")
    description = sampler_of(Settings(otlp_endpoint="http://127.0.0.1:9"))
    assert description.startswith("ParentBased{root:TraceIdRatioBased{0.1}")
