"""Resilience: retry policies, circuit breakers and fault injection rules."""
