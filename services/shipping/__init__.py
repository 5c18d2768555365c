"""The shipping service: ships paid orders, cancels shipments on compensation."""

from services.shipping.service import service

__all__ = ["service"]
