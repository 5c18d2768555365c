"""Signed messages: who sent a record, and that nobody changed it since.

Every record a process publishes carries a signature over its topic, key,
value and CloudEvents headers, with the id of the key that made it
(``ce_signature``, ``ce_signaturekeyid``, ``ce_signaturealg``). Each key
belongs to a *principal*: ``coordinator`` or a service name. A consumer that
requires signatures accepts a record only when it is signed by a known key of
the principal that owns its topic:

* ``<service>.events``: the service itself, so the coordinator takes a step's
  events only from the service that owns that step;
* ``<service>.commands`` and ``saga.events``: the coordinator, so a service
  obeys a compensation (a refund!) only when the coordinator sent it.

Anything else (unsigned, an unknown key, another principal's key, a changed
byte, or a copy of a record already read at another position: a replay) goes
to the security dead-letter topic with the reason, and is counted in
``saga.security.rejected``. Every send is signed with a fresh nonce
(``ce_signaturenonce``), so the publisher sending a message again (the outbox
after a crash) is told apart from someone copying a record: the first is a
duplicate that the receiver's inbox drops, the second a replay.

Keys (``SAGA_SIGNING_KEYS``, JSON; or ``SAGA_SIGNING_KEYS_FILE``)::

    {"coordinator-2026-11": {"principal": "coordinator", "algorithm": "hmac-sha256",
                             "secret": "<base64>"},
     "payment-1": {"principal": "payment", "algorithm": "ed25519",
                   "public_key": "<base64>", "private_key": "<base64, only in payment>"}}

``SAGA_SIGNING_KEY_ID`` names the key this process signs with. Rotation
without downtime: add the new key everywhere, switch the signer to it, remove
the old key once nothing signed with it is in flight. HMAC keys are shared
secrets (every verifier could also sign); Ed25519 keys (the ``security``
extra) give verifiers only the public half.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, SecretStr, model_validator

from saga.errors import SagaError
from saga.messages import headers as h
from saga.messages.codec import Headers

Algorithm = Literal["hmac-sha256", "ed25519"]
__all__ = [
    "KeySpec",
    "SignatureError",
    "Signer",
    "Verifier",
    "new_hmac_secret",
    "parse_keys",
]

COORDINATOR = "coordinator"
#: Headers the signature leaves out: its own, and the trace context (rewritten per hop).
_UNSIGNED = frozenset(
    {h.SIGNATURE, h.SIGNATURE_KEY_ID, h.SIGNATURE_ALGORITHM, h.TRACEPARENT, h.TRACESTATE}
)


class KeySpec(BaseModel):
    """One key as configured."""

    # Errors never quote the input: it holds secrets.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    principal: str
    algorithm: Algorithm = "hmac-sha256"
    #: hmac-sha256: the shared secret (base64).
    secret: SecretStr | None = None
    #: ed25519: the public key (raw 32 bytes, base64), and the private key where it signs.
    public_key: str | None = None
    private_key: SecretStr | None = None

    @model_validator(mode="after")
    def _complete(self) -> KeySpec:
        if self.algorithm == "hmac-sha256":
            if self.secret is None:
                raise ValueError("an hmac-sha256 key needs 'secret'")
            if len(_strict_b64(self.secret.get_secret_value(), "secret")) < 32:
                raise ValueError("an hmac-sha256 secret must be at least 32 bytes (base64)")
        if self.algorithm == "ed25519":
            if self.public_key is None:
                raise ValueError("an ed25519 key needs 'public_key'")
            if len(_strict_b64(self.public_key, "public_key")) != 32:
                raise ValueError("an ed25519 public_key is 32 bytes (base64)")
            if (
                self.private_key is not None
                and len(_strict_b64(self.private_key.get_secret_value(), "private_key")) != 32
            ):
                raise ValueError("an ed25519 private_key is 32 bytes (base64)")
        return self

    @property
    def can_sign(self) -> bool:
        return self.algorithm == "hmac-sha256" or self.private_key is not None


def _strict_b64(value: str, name: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        raise ValueError(f"{name} is not valid base64") from None


class SignatureError(SagaError):
    """Why a record is refused; the reason goes with it to the security dead letters.

    ``kind`` is one of a fixed set (for metrics): unsigned, unknown_key,
    wrong_principal, bad_signature, replayed, malformed.
    """

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind


def payload_to_sign(topic: str, key: bytes | None, value: bytes | None, headers: Headers) -> bytes:
    """The bytes a signature covers: topic, key, value and headers, unambiguously framed."""
    parts: list[bytes | None] = [topic.encode(), key, value]
    for name, header in sorted(
        ((n, v) for n, v in headers if n not in _UNSIGNED),
        key=lambda item: (item[0], item[1] or b""),
    ):
        parts += [name.encode(), header]
    # Each part: a presence byte (null and empty differ), its length, its bytes.
    return b"".join(
        b"\x00" if part is None else b"\x01" + len(part).to_bytes(4, "big") + part for part in parts
    )


def expected_principal(topic: str, prefix: str = "") -> str | None:
    """Who must have signed a record of ``topic`` (``None``: not a saga topic)."""
    name = topic[len(prefix) :] if prefix and topic.startswith(prefix) else topic
    owner, _, kind = name.rpartition(".")
    if not owner or kind not in ("events", "commands"):
        return None
    if kind == "commands" or owner == "saga":
        return COORDINATOR
    return owner


@dataclass(frozen=True)
class _Key:
    key_id: str
    spec: KeySpec

    def sign(self, data: bytes) -> bytes:
        if self.spec.algorithm == "hmac-sha256":
            assert self.spec.secret is not None
            secret = base64.b64decode(self.spec.secret.get_secret_value())
            return hmac.new(secret, data, hashlib.sha256).digest()
        if self.spec.private_key is None:
            raise ValueError(f"key {self.key_id!r} has no private key here: cannot sign")
        ed25519 = _ed25519()
        private = ed25519.Ed25519PrivateKey.from_private_bytes(
            base64.b64decode(self.spec.private_key.get_secret_value())
        )
        signature: bytes = private.sign(data)
        return signature

    def verify(self, data: bytes, signature: bytes) -> bool:
        if self.spec.algorithm == "hmac-sha256":
            return hmac.compare_digest(self.sign(data), signature)
        ed25519 = _ed25519()
        assert self.spec.public_key is not None
        public = ed25519.Ed25519PublicKey.from_public_bytes(base64.b64decode(self.spec.public_key))
        try:
            public.verify(signature, data)
        except Exception:
            return False
        return True


def _ed25519() -> Any:
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise ImportError(
            "ed25519 keys need the 'security' extra: pip install 'kafka-saga[security]'"
        ) from None
    return ed25519


class Signer:
    """Signs records as one principal, with one key."""

    def __init__(self, keys: Mapping[str, KeySpec], key_id: str) -> None:
        if key_id not in keys:
            raise ValueError(f"SAGA_SIGNING_KEY_ID={key_id!r} is not in SAGA_SIGNING_KEYS")
        self.key = _Key(key_id, keys[key_id])
        self.principal = self.key.spec.principal

    def sign(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Headers
    ) -> list[tuple[str, bytes | None]]:
        """``headers`` plus the signature of the record.

        A record signed before (a dead letter of someone else's record) keeps its
        original signature as evidence, under the ``dlq_signature*`` names.
        """
        kept = [(n, v) for n, v in headers if n not in _ORIGINAL]
        kept += [(_ORIGINAL[n], v) for n, v in headers if n in _ORIGINAL]
        kept.append((h.SIGNATURE_NONCE, secrets.token_hex(16).encode()))
        signature = self.key.sign(payload_to_sign(topic, key, value, kept))
        return [
            *kept,
            (h.SIGNATURE, base64.b64encode(signature)),
            (h.SIGNATURE_KEY_ID, self.key.key_id.encode()),
            (h.SIGNATURE_ALGORITHM, self.key.spec.algorithm.encode()),
        ]


_ORIGINAL = {
    h.SIGNATURE: h.DLQ_SIGNATURE,
    h.SIGNATURE_KEY_ID: h.DLQ_SIGNATURE_KEY_ID,
    h.SIGNATURE_ALGORITHM: h.DLQ_SIGNATURE_ALGORITHM,
    h.SIGNATURE_NONCE: h.DLQ_SIGNATURE_NONCE,
}


class Verifier:
    """Checks records against the keys and the topic ownership rule; remembers ids."""

    def __init__(
        self, keys: Mapping[str, KeySpec], *, topic_prefix: str = "", remember: int = 100_000
    ) -> None:
        self.keys = {key_id: _Key(key_id, spec) for key_id, spec in keys.items()}
        self.prefix = topic_prefix
        # (message id, signature) -> (topic, partition, offset) where it was first read
        self._seen: OrderedDict[tuple[str, bytes], tuple[str, int, int]] = OrderedDict()
        self._remember = remember

    def check(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        headers: Headers,
    ) -> None:
        """Return if the record is genuine; raise :class:`SignatureError` saying why not."""
        found = {name: v for name, v in headers}
        signature, key_id = found.get(h.SIGNATURE), found.get(h.SIGNATURE_KEY_ID)
        if not signature or not key_id:
            raise SignatureError("unsigned", "unsigned: no ce_signature / ce_signaturekeyid header")
        known = self.keys.get(key_id.decode(errors="replace"))
        if known is None:
            shown = key_id.decode(errors="replace")[:64]
            raise SignatureError("unknown_key", f"signed with an unknown key {shown!r}")
        algorithm = (found.get(h.SIGNATURE_ALGORITHM) or b"").decode(errors="replace")
        if algorithm != known.spec.algorithm:
            raise SignatureError(
                "malformed", f"algorithm {algorithm[:32]!r} does not match key {known.key_id!r}"
            )
        owner = expected_principal(topic, self.prefix)
        if owner is None:
            raise SignatureError("wrong_principal", f"{topic} is not a saga topic: nobody owns it")
        if known.spec.principal != owner:
            raise SignatureError(
                "wrong_principal",
                f"signed by {known.spec.principal!r}, but only {owner!r} may publish on {topic}",
            )
        try:
            raw_signature = base64.b64decode(signature, validate=True)
            genuine = known.verify(payload_to_sign(topic, key, value, headers), raw_signature)
        except ValueError:
            genuine = False
        if not genuine:
            raise SignatureError(
                "bad_signature", f"bad signature for key {known.key_id!r}: forged or tampered"
            )
        message_id = (found.get(h.ID) or b"").decode(errors="replace")
        if not message_id:
            raise SignatureError("malformed", "no message id (ce_id)")
        # The owner signing an id again (a re-send, fresh nonce) is a duplicate that the
        # receiver's inbox drops; the same signed bytes at another position are a copy.
        seen = (message_id, signature)
        position = (topic, partition, offset)
        first = self._seen.get(seen)
        if first is not None and first != position:
            raise SignatureError(
                "replayed",
                f"replayed: message id {message_id} was already read at "
                f"{first[0]}[{first[1]}]@{first[2]}",
            )
        self._seen[seen] = position
        self._seen.move_to_end(seen)
        while len(self._seen) > self._remember:
            self._seen.popitem(last=False)


def parse_keys(raw: str | Mapping[str, Any]) -> dict[str, KeySpec]:
    """``SAGA_SIGNING_KEYS`` (JSON text or a mapping) -> key specs by id."""
    import json

    data = json.loads(raw) if isinstance(raw, str) else raw
    return {key_id: KeySpec.model_validate(spec) for key_id, spec in data.items()}


def new_hmac_secret() -> str:
    """A fresh 256-bit secret, base64 (for an hmac-sha256 key's ``secret``)."""
    return base64.b64encode(secrets.token_bytes(32)).decode()
