"""Signatures: only a topic's owner may publish on it, and nothing changes on the way."""

from __future__ import annotations

import base64

import pytest

from contracts.payment import RefundPayment
from saga.messages import headers as h
from saga.messages.base import Message
from saga.messages.codec import encode
from saga.messages.envelope import Envelope
from saga.security.signing import (
    KeySpec,
    SignatureError,
    Signer,
    Verifier,
    expected_principal,
    new_hmac_secret,
    parse_keys,
)

KEYS = parse_keys(
    {
        "coord-1": {"principal": "coordinator", "secret": new_hmac_secret()},
        "coord-2": {"principal": "coordinator", "secret": new_hmac_secret()},
        "inventory-1": {"principal": "inventory", "secret": new_hmac_secret()},
    }
)
TOPIC = "payment.commands"


def refund(order_id: str = "o-1") -> Envelope[Message]:
    return Envelope(payload=RefundPayment(order_id=order_id), saga_id=order_id, source="/c")


def signed(
    key_id: str, envelope: Envelope[Message] | None = None, topic: str = TOPIC
) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]]]:
    record = encode(envelope or refund())
    headers = Signer(KEYS, key_id).sign(topic, record.key, record.value, record.headers)
    return record.key, record.value, headers


def check(
    verifier: Verifier,
    record: tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]]],
    offset: int = 0,
    topic: str = TOPIC,
) -> None:
    key, value, headers = record
    verifier.check(topic, 0, offset, key, value, headers)


def test_owners_of_topics() -> None:
    assert expected_principal("payment.commands") == "coordinator"
    assert expected_principal("saga.events") == "coordinator"
    assert expected_principal("payment.events") == "payment"
    assert expected_principal("staging.payment.events", "staging.") == "payment"
    assert expected_principal("payment.events.dlq") is None


def test_a_genuine_command_passes_and_a_redelivery_of_the_same_record_too() -> None:
    verifier = Verifier(KEYS)
    record = signed("coord-1")
    check(verifier, record, offset=7)
    check(verifier, record, offset=7)  # the same position read again: a redelivery


def test_a_resend_by_the_publisher_passes_but_a_copy_of_the_record_is_a_replay() -> None:
    verifier = Verifier(KEYS)
    command = refund()
    first, again = signed("coord-1", command), signed("coord-1", command)  # the outbox re-sends
    assert dict(first[2])[h.SIGNATURE_NONCE] != dict(again[2])[h.SIGNATURE_NONCE]
    check(verifier, first, offset=1)
    check(verifier, again, offset=2)  # the same message id, signed anew: the inbox drops it
    with pytest.raises(SignatureError, match="replayed"):
        check(verifier, again, offset=3)  # the same bytes at another offset: copied


@pytest.mark.parametrize(
    ("forge", "reason"),
    [
        ("unsigned", "unsigned"),
        ("unknown key", "unknown key"),
        ("another principal", "only 'coordinator' may publish"),
        ("tampered payload", "forged or tampered"),
        ("tampered header", "forged or tampered"),
        ("nonce changed", "forged or tampered"),
        ("moved to another topic", "forged or tampered"),
        ("replayed", "replayed"),
    ],
)
def test_forged_commands_are_refused_with_the_reason(forge: str, reason: str) -> None:
    verifier = Verifier(KEYS)
    key, value, headers = signed("coord-1")
    topic, offset = TOPIC, 0
    if forge == "unsigned":
        headers = [(n, v) for n, v in headers if n != h.SIGNATURE]
    elif forge == "unknown key":
        other = {"rogue": KeySpec(principal="coordinator", secret=new_hmac_secret())}  # type: ignore[arg-type]
        key, value, headers = key, value, Signer(other, "rogue").sign(TOPIC, key, value, headers)
    elif forge == "another principal":
        key, value, headers = signed("inventory-1")
    elif forge == "tampered payload":
        value = (value or b"").replace(b"o-1", b"o-2")
    elif forge == "tampered header":
        headers = [(n, b"/elsewhere" if n == h.SOURCE else v) for n, v in headers]
    elif forge == "nonce changed":  # to pass a copy off as a re-send
        headers = [(n, b"0" * 32 if n == h.SIGNATURE_NONCE else v) for n, v in headers]
    elif forge == "moved to another topic":
        topic = "shipping.commands"
    elif forge == "replayed":
        check(verifier, (key, value, headers), offset=1)
        offset = 2
    with pytest.raises(SignatureError, match=reason):
        verifier.check(topic, 0, offset, key, value, headers)


def test_trace_context_may_change_on_the_way() -> None:
    key, value, headers = signed("coord-1")
    headers = [(n, v) for n, v in headers if n != h.TRACEPARENT]
    headers.append((h.TRACEPARENT, b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"))
    Verifier(KEYS).check(TOPIC, 0, 0, key, value, headers)


def test_rotation_old_and_new_keys_of_the_same_principal_both_verify() -> None:
    verifier = Verifier(KEYS)
    check(verifier, signed("coord-1", refund("o-1")), offset=1)
    check(verifier, signed("coord-2", refund("o-2")), offset=2)
    retired = Verifier({k: v for k, v in KEYS.items() if k != "coord-1"})
    with pytest.raises(SignatureError, match="unknown key"):
        check(retired, signed("coord-1", refund("o-3")), offset=3)


def test_events_are_accepted_only_from_the_service_that_owns_the_topic() -> None:
    verifier = Verifier(KEYS)
    check(verifier, signed("inventory-1", topic="inventory.events"), topic="inventory.events")
    with pytest.raises(SignatureError, match="only 'payment' may publish"):
        check(verifier, signed("inventory-1", topic="payment.events"), topic="payment.events")


def test_ed25519_verifiers_hold_only_the_public_key() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private = Ed25519PrivateKey.generate()
    raw_private = private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    raw_public = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    public = {
        "principal": "coordinator",
        "algorithm": "ed25519",
        "public_key": base64.b64encode(raw_public).decode(),
    }
    signing = parse_keys(
        {"c-ed": {**public, "private_key": base64.b64encode(raw_private).decode()}}
    )
    verifying = parse_keys({"c-ed": public})
    record = encode(refund())
    headers = Signer(signing, "c-ed").sign(TOPIC, record.key, record.value, record.headers)
    Verifier(verifying).check(TOPIC, 0, 0, record.key, record.value, headers)
    tampered = (record.value or b"").replace(b"o-1", b"o-9")
    with pytest.raises(SignatureError, match="forged or tampered"):
        Verifier(verifying).check(TOPIC, 0, 1, record.key, tampered, headers)
    with pytest.raises(ValueError, match="no private key"):
        Signer(verifying, "c-ed").sign(TOPIC, record.key, record.value, record.headers)


def test_key_specs_are_validated() -> None:
    with pytest.raises(ValueError, match="needs 'secret'"):
        parse_keys({"k": {"principal": "x"}})
    with pytest.raises(ValueError, match="needs 'public_key'"):
        parse_keys({"k": {"principal": "x", "algorithm": "ed25519"}})


def test_weak_or_malformed_key_material_is_refused_without_quoting_it() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes") as weak:
        parse_keys({"k": {"principal": "x", "secret": base64.b64encode(b"change-me").decode()}})
    assert "Y2hhbmdlLW1l" not in str(weak.value), "the secret is not quoted"
    with pytest.raises(ValueError, match="not valid base64"):
        parse_keys({"k": {"principal": "x", "secret": "not base64 at all!"}})


def test_records_on_topics_nobody_owns_are_refused() -> None:
    record = signed("coord-1", topic="payment.commands.dlq")
    with pytest.raises(SignatureError, match="nobody owns it") as refused:
        check(Verifier(KEYS), record, topic="payment.commands.dlq")
    assert refused.value.kind == "wrong_principal"


def test_a_dead_letter_signed_anew_keeps_the_original_signature_as_evidence() -> None:
    key, value, headers = signed("inventory-1", topic="inventory.events")
    original = dict(headers)
    letter = Signer(KEYS, "coord-1").sign("inventory.events.dlq", key, value, headers)
    found = dict(letter)
    assert found[h.SIGNATURE_KEY_ID] == b"coord-1"
    assert found[h.DLQ_SIGNATURE_KEY_ID] == b"inventory-1"
    assert found[h.DLQ_SIGNATURE] == original[h.SIGNATURE]
