"""The payment service: charges orders whose stock is reserved, refunds on compensation."""

from services.payment.service import service

__all__ = ["service"]
