"""The inventory service: reserves stock for placed orders, releases it on compensation."""

from services.inventory.service import service

__all__ = ["service"]
