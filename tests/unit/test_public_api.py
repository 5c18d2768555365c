"""The exported names are the public API: a change here is a deliberate one."""

from __future__ import annotations

import saga.messages as contracts
import saga


def test_saga_exports() -> None:
    assert saga.__all__ == [
        "BadRequest",
        "CircuitBreaker",
        "CircuitOpen",
        "CircuitState",
        "ConfigurationError",
        "Consumer",
        "DeadLetter",
        "DevStackError",
        "FaultRule",
        "Handler",
        "HttpRequest",
        "HttpResponse",
        "IdempotenceUnsupported",
        "MessageTooLarge",
        "NonRetryableError",
        "Outcome",
        "Published",
        "Publisher",
        "RequestContext",
        "RetryPolicy",
        "SagaError",
        "Service",
        "ServiceRuntime",
        "Settings",
        "StepContext",
        "StepFailure",
        "StepTimeout",
        "__version__",
        "ensure_topics",
    ]


def test_testing_kit_exports() -> None:
    import saga.testing

    assert saga.testing.__all__ == ["InMemoryTransport", "ServiceTestKit"]


def test_security_exports() -> None:
    import saga.security.signing
    import saga.security.tokens
    import saga.security.vault

    assert saga.security.vault.__all__ == [
        "Connection",
        "ConnectionRevoked",
        "ConnectionUnavailable",
        "OAuthRefresh",
        "ProviderRefusedClient",
        "Refresher",
        "Vault",
        "VaultError",
        "VaultKeys",
    ]
    assert saga.security.tokens.__all__ == [
        "CachedTokenProvider",
        "ClientCredentials",
        "KafkaTokenProvider",
        "MskIamTokens",
        "TokenProvider",
        "TokenRejected",
        "TokenUnavailable",
        "require_https",
    ]
    assert saga.security.signing.__all__ == [
        "KeySpec",
        "SignatureError",
        "Signer",
        "Verifier",
        "new_hmac_secret",
        "parse_keys",
    ]
    for module in (saga.security.vault, saga.security.tokens, saga.security.signing):
        for name in module.__all__:
            assert getattr(module, name) is not None


def test_contracts_exports() -> None:
    assert contracts.__all__ == [
        "Command",
        "EncodedRecord",
        "Envelope",
        "Event",
        "InvalidHeader",
        "InvalidMessage",
        "Message",
        "MessageRegistry",
        "MissingHeader",
        "NotJson",
        "PayloadValidationFailed",
        "RawRecord",
        "UnknownMessageType",
        "UnknownSchemaVersion",
        "Upcaster",
        "commands_topic",
        "dead_letter_topic",
        "decode",
        "encode",
        "events_topic",
        "new_message_id",
    ]


def test_exports_are_sorted_and_resolve() -> None:
    for module in (saga, contracts):
        assert module.__all__ == sorted(module.__all__)
        for name in module.__all__:
            assert getattr(module, name) is not None


def test_shipped_commands_are_imperative_and_events_past_tense() -> None:
    from contracts.catalog import ALL_MESSAGES

    for model in ALL_MESSAGES:
        last_word = model.__name__
        if model.kind == "event":
            assert last_word.endswith("ed"), f"{model.__name__} should be past tense"
        else:
            assert not last_word.endswith("ed"), f"{model.__name__} should be imperative"
