"""``python -m services.orders``: run the service; ``place`` / ``status``: use it.

    python -m services.orders                       # the service (SAGA_* settings)
    python -m services.orders place --customer alice --amount 42.00 [--sku sku-2]
                                    [--pay-from-bank HANDLE]
    python -m services.orders status ORDER_ID
    python -m services.orders list [--status cancelled]

``place``, ``status`` and ``list`` talk to a running orders service at
``--url`` (default ``$ORDERS_URL`` or http://localhost:8080) with the bearer token
``--token`` (default ``$ORDERS_TOKEN``, else the example's development token).
"""

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any

from saga import run_service
from services.orders import service
from services.system import DEV_TOKEN


def _call(url: str, method: str, token: str, body: dict[str, Any] | None = None) -> int:
    if not url.startswith(("http://", "https://")):
        print(f"--url must be an http(s) URL, not {url!r}", file=sys.stderr)
        return 2
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    request = urllib.request.Request(  # noqa: S310 (scheme checked above)
        url, data=data, method=method, headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (scheme checked above)
            print(json.dumps(json.load(response), indent=2))
            return 0
    except urllib.error.HTTPError as error:
        print(f"{error.code}: {error.read().decode(errors='replace')}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"cannot reach the orders service at {url}: {error}", file=sys.stderr)
        return 1


def main(argv: list[str]) -> int:
    if not argv:
        return run_service(service)
    parser = argparse.ArgumentParser(prog="python -m services.orders")
    parser.add_argument("--url", default=os.environ.get("ORDERS_URL", "http://localhost:8080"))
    parser.add_argument("--token", default=os.environ.get("ORDERS_TOKEN", DEV_TOKEN))
    commands = parser.add_subparsers(dest="command", required=True)
    place = commands.add_parser("place", help="place an order (starts its saga)")
    place.add_argument("--customer", required=True)
    place.add_argument("--amount", required=True, type=float, help="in currency units, e.g. 42.00")
    place.add_argument("--sku", default="sku-1")
    place.add_argument("--quantity", type=int, default=1)
    place.add_argument("--order-id", help="default: a new id (printed in the answer)")
    place.add_argument(
        "--pay-from-bank", metavar="HANDLE", help="a bank connection handle (payment service)"
    )
    status = commands.add_parser("status", help="show an order and its status")
    status.add_argument("order_id")
    listing = commands.add_parser("list", help="the latest orders")
    listing.add_argument("--status")
    args = parser.parse_args(argv)
    base = args.url.rstrip("/")
    if args.command == "place":
        body: dict[str, Any] = {
            "customer_id": args.customer,
            "amount_cents": round(args.amount * 100),
            "sku": args.sku,
            "quantity": args.quantity,
        }
        if args.pay_from_bank:
            body["payment_connection"] = args.pay_from_bank
        # Chosen here, so that placing the same order again (a retry) is harmless.
        body["order_id"] = args.order_id or f"order-{uuid.uuid4().hex[:12]}"
        return _call(f"{base}/orders", "POST", args.token, body)
    if args.command == "status":
        return _call(f"{base}/orders/{args.order_id}", "GET", args.token)
    query = f"?status={urllib.parse.quote(args.status)}" if args.status else ""
    return _call(f"{base}/orders{query}", "GET", args.token)


raise SystemExit(main(sys.argv[1:]))
