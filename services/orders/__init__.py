"""The orders service: takes orders over HTTP, starts their sagas, shows their outcome."""

from services.orders.service import service

__all__ = ["service"]
