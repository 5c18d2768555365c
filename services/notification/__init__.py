"""The notification service: tells the customer their order is on its way."""

from services.notification.service import service

__all__ = ["service"]
