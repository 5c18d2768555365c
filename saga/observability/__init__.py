"""Observability: tracing over OTLP, metrics, logs, memory, and the health endpoints."""
