"""The example system's processes: what ``python -m`` runs for each, and the settings they share.

The demo, the tests and ``docker-compose.yml`` start the same processes the same way.
"""

from __future__ import annotations

import json

#: What ``python -m`` runs for each process name.
PROCESSES: dict[str, list[str]] = {
    "coordinator": ["saga.cli", "coordinator"],
    "orders": ["services.orders"],
    "inventory": ["services.inventory"],
    "payment": ["services.payment"],
    "shipping": ["services.shipping"],
    "notification": ["services.notification"],
    "console": ["saga.cli", "console"],
}

#: Where the coordinator finds the example's saga definitions.
DEFINITIONS = "contracts.catalog:saga_definitions"

#: The example's bearer tokens, for development only (SAGA_AUTH_TOKENS): a production
#: system verifies its OIDC provider's JWTs instead (SAGA_AUTH_JWKS_URL, docs/security.md).
DEV_TOKENS: dict[str, dict[str, object]] = {
    "dev-operator": {"sub": "operator", "roles": ["operator"]},
    "dev-viewer": {"sub": "viewer", "roles": ["viewer"]},
}
#: The token the demo and ``python -m services.orders place`` send.
DEV_TOKEN = "dev-operator"  # noqa: S105 (a development token, by design)

#: Settings every process of the example gets on top of the stack's.
ENVIRONMENT: dict[str, str] = {
    "SAGA_DEFINITIONS": DEFINITIONS,
    "SAGA_AUTH_TOKENS": json.dumps(DEV_TOKENS),
}
