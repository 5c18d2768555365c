"""The customer's bank over HTTP, for pay-by-bank orders.

Two identities meet here:

- a payment is made **as the customer**, with the access token of their bank
  connection (a connect token from the vault, refreshed before the step if it
  would expire during it);
- a refund is sent **as the merchant**, with the payment service's own machine
  token (OAuth 2.0 client credentials, cached and refreshed by
  :class:`~saga.security.tokens.ClientCredentials`).

Configured by ``PAYMENT_BANK_API_URL`` and ``PAYMENT_BANK_TOKEN_URL``,
``PAYMENT_BANK_CLIENT_ID``, ``PAYMENT_BANK_CLIENT_SECRET`` (the same client
refreshes customers' connections).
"""

from __future__ import annotations

import asyncio
import json
import os
import urllib.error
import urllib.request
from typing import Any

from saga.security import ClientCredentials, TokenProvider, require_https


class BankRefusedToken(Exception):
    """The bank answered 401/403: the token it was shown is not (or no longer) valid."""


class BankUnavailable(Exception):
    """The bank could not be reached or failed (network, 5xx): worth retrying."""


class BankApi:
    def __init__(self, base_url: str, merchant: TokenProvider, *, timeout_s: float = 10) -> None:
        require_https(base_url, "bank API URL")
        self.base_url = base_url.rstrip("/")
        self.merchant = merchant
        self.timeout_s = timeout_s

    @classmethod
    def from_env(cls) -> BankApi | None:
        url = os.environ.get("PAYMENT_BANK_API_URL")
        return cls(url, ClientCredentials.from_env("PAYMENT_BANK")) if url else None

    async def pay(
        self, customer_token: str, idempotency_key: str, order_id: str, amount_cents: int
    ) -> str:
        """Pay ``amount_cents`` from the customer's account; the bank's payment id."""
        body = {"order_id": order_id, "amount_cents": amount_cents}
        answer = await self._post("/payments", customer_token, idempotency_key, body)
        return str(answer["payment_id"])

    async def refund(self, payment_id: str, order_id: str, amount_cents: int) -> None:
        """Give the payment back, as the merchant; the same refund twice is one refund."""
        token = await self.merchant.token()
        body = {"payment_id": payment_id, "order_id": order_id, "amount_cents": amount_cents}
        try:
            await self._post("/refunds", token, f"refund-{payment_id}", body)
        except BankRefusedToken:
            self.merchant.invalidate(token)  # the next attempt fetches a fresh one
            raise BankUnavailable("the bank refused the merchant token") from None

    async def _post(
        self, path: str, bearer: str, idempotency_key: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        return await asyncio.to_thread(self._post_now, path, bearer, idempotency_key, body)

    def _post_now(
        self, path: str, bearer: str, idempotency_key: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        url = self.base_url + path
        request = urllib.request.Request(  # noqa: S310 (scheme checked)
            url, data=json.dumps(body).encode(), method="POST"
        )
        request.add_header("Content-Type", "application/json")
        request.add_header("Authorization", f"Bearer {bearer}")
        request.add_header("Idempotency-Key", idempotency_key)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310
                answer = json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            if error.code in (401, 403):
                raise BankRefusedToken(f"HTTP {error.code} from {url}") from None
            raise BankUnavailable(f"HTTP {error.code} from {url}") from None
        except (OSError, ValueError) as error:
            raise BankUnavailable(f"{url}: {type(error).__name__}: {error}") from None
        return answer if isinstance(answer, dict) else {}
