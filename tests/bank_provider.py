"""A customer's bank for tests: an OAuth 2.0 token endpoint and a payments API, on loopback.

``/token`` answers the refresh-token grant (customers' connections) and the
client-credentials grant (the merchant's machine token); ``/payments`` takes a
customer's live access token; ``/refunds`` takes the merchant's. Every token it
hands out is a fresh random value, so a test can search for all of them.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from tests.http_helpers import QuietHandler, serving

CLIENT_ID, CLIENT_SECRET = "shop", f"client-secret-{secrets.token_hex(12)}"


@dataclass
class Grant:
    customer: str
    access: str
    refresh: str
    expires_at: float


@dataclass
class BankProvider:
    url: str = ""
    grants: list[Grant] = field(default_factory=list)
    revoked: set[str] = field(default_factory=set)  # customers who withdrew access
    merchant_tokens: list[str] = field(default_factory=list)
    refreshed: list[str] = field(default_factory=list)  # customers whose grant was refreshed
    payments: list[tuple[str, str]] = field(default_factory=list)  # (customer, order id)
    refunds: list[tuple[str, str]] = field(default_factory=list)  # (merchant token, order id)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def authorize(self, customer: str, expires_in: float) -> Grant:
        """The customer said yes at the bank (the authorization-code flow, in short)."""
        grant = Grant(
            customer,
            f"at-{secrets.token_urlsafe(18)}",
            f"rt-{secrets.token_urlsafe(18)}",
            time.monotonic() + expires_in,
        )
        with self.lock:
            self.grants.append(grant)
        return grant

    def handed_out(self) -> list[str]:
        """Every token handed out, and the client secret."""
        with self.lock:
            tokens = [t for g in self.grants for t in (g.access, g.refresh)]
            return [*tokens, *self.merchant_tokens, CLIENT_SECRET]

    def env(self) -> dict[str, str]:
        """The payment service's settings for this bank."""
        return {
            "PAYMENT_BANK_API_URL": self.url,
            "PAYMENT_BANK_TOKEN_URL": f"{self.url}/token",
            "PAYMENT_BANK_CLIENT_ID": CLIENT_ID,
            "PAYMENT_BANK_CLIENT_SECRET": CLIENT_SECRET,
        }

    def token(self, form: dict[str, str]) -> tuple[int, object]:
        if (form.get("client_id"), form.get("client_secret")) != (CLIENT_ID, CLIENT_SECRET):
            return 401, {"error": "invalid_client"}
        if form.get("grant_type") == "client_credentials":
            token = f"mt-{secrets.token_urlsafe(18)}"
            self.merchant_tokens.append(token)
            return 200, {"access_token": token, "token_type": "Bearer", "expires_in": 3600}
        old = next((g for g in self.grants if g.refresh == form.get("refresh_token")), None)
        if old is None or old.customer in self.revoked:
            return 400, {"error": "invalid_grant"}
        self.grants.remove(old)
        new = Grant(  # "aa-", "rr-": tokens from a refresh
            old.customer,
            f"aa-{secrets.token_urlsafe(18)}",
            f"rr-{secrets.token_urlsafe(18)}",
            time.monotonic() + 3600,
        )
        self.grants.append(new)
        self.refreshed.append(old.customer)
        return 200, {"access_token": new.access, "refresh_token": new.refresh, "expires_in": 3600}

    def pay(self, bearer: str, body: dict[str, object]) -> tuple[int, object]:
        grant = next((g for g in self.grants if g.access == bearer), None)
        if grant is None or grant.expires_at < time.monotonic() or grant.customer in self.revoked:
            return 401, {"error": "invalid_token"}
        self.payments.append((grant.customer, str(body["order_id"])))
        return 201, {"payment_id": f"pay-{len(self.payments)}"}

    def refund(self, bearer: str, body: dict[str, object]) -> tuple[int, object]:
        if bearer not in self.merchant_tokens:
            return 401, {"error": "invalid_token"}
        self.refunds.append((bearer, str(body["order_id"])))
        return 200, {"refunded": True}


@contextmanager
def bank_provider() -> Iterator[BankProvider]:
    bank = BankProvider()

    class Handler(QuietHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            bearer = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
            with bank.lock:
                if self.path == "/token":
                    form = dict(urllib.parse.parse_qsl(raw.decode()))
                    status, answer = bank.token(form)
                elif self.path == "/payments":
                    status, answer = bank.pay(bearer, json.loads(raw))
                elif self.path == "/refunds":
                    status, answer = bank.refund(bearer, json.loads(raw))
                else:
                    status, answer = 404, {"error": "not found"}
            self.send_json(status, answer)

    with serving(Handler) as port:
        bank.url = f"http://127.0.0.1:{port}"
        yield bank
