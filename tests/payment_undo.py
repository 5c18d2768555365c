"""Two more ways to undo the example's charge, for tests of ``on_timeout``.

``VoidCharge`` needs the id the charge step created, which only its completion
carries; ``VoidOrderCharges`` needs only the order, which its trigger carries: what a
charge that timed out (no completion, no id) is undone with.
"""

from __future__ import annotations

from typing import ClassVar

from saga import Command


class VoidCharge(Command):
    """Undo a charge by the id the charge step created."""

    message_type: ClassVar[str] = "payment.VoidCharge"
    charge_id: str


class VoidOrderCharges(Command):
    """Undo whatever was charged for an order."""

    message_type: ClassVar[str] = "payment.VoidOrderCharges"
    order_id: str
