"""Security: users' connect tokens in a vault, machine tokens, message signatures, redaction.

* :mod:`saga.security.vault`: user-scoped connect tokens, encrypted at rest and
  referenced by handle (:class:`Connection` on a step, :class:`Vault`);
* :mod:`saga.security.tokens`: machine tokens from a provider, cached and
  refreshed before expiry (broker OAUTHBEARER, AWS MSK IAM, outbound calls);
* :mod:`saga.security.signing`: message signatures, so a service obeys
  compensation commands from the coordinator only;
* :mod:`saga.security.redaction`: secrets kept out of logs, spans and dead letters.
"""

from saga.security.signing import KeySpec, SignatureError, Signer, Verifier
from saga.security.tokens import (
    CachedTokenProvider,
    ClientCredentials,
    KafkaTokenProvider,
    MskIamTokens,
    TokenProvider,
    TokenRejected,
    TokenUnavailable,
    require_https,
)
from saga.security.vault import (
    Connection,
    ConnectionNotOwned,
    ConnectionRevoked,
    ConnectionUnavailable,
    OAuthRefresh,
    ProviderRefusedClient,
    Refresher,
    Vault,
    VaultError,
    VaultKeys,
)

__all__ = [
    "CachedTokenProvider",
    "ClientCredentials",
    "Connection",
    "ConnectionNotOwned",
    "ConnectionRevoked",
    "ConnectionUnavailable",
    "KafkaTokenProvider",
    "KeySpec",
    "MskIamTokens",
    "OAuthRefresh",
    "ProviderRefusedClient",
    "Refresher",
    "SignatureError",
    "Signer",
    "TokenProvider",
    "TokenRejected",
    "TokenUnavailable",
    "Vault",
    "VaultError",
    "VaultKeys",
    "Verifier",
    "require_https",
]
