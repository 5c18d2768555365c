"""The exported names are the public API: a change here is a deliberate one.

The example system is a user of the library like any other: it imports only
public names, from ``saga`` and its documented subpackages.
"""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import saga
import saga.coordinator
import saga.dev
import saga.errors
import saga.security
import saga.testing

ROOT = Path(__file__).resolve().parents[2]

#: Where a user's system may import from: the package and its documented subpackages.
DOCUMENTED = (
    "saga",
    "saga.testing",
    "saga.security",
    "saga.dev",
    "saga.dev.otlp",
    "saga.coordinator",
)


def test_saga_exports() -> None:
    assert saga.__all__ == [
        "Approval",
        "BadRequest",
        "CancelRefused",
        "CancelRequested",
        "CircuitBreaker",
        "CircuitOpen",
        "CircuitState",
        "Command",
        "CompensationFailed",
        "ConfigurationError",
        "Connection",
        "Consumer",
        "ContractMismatch",
        "DeadLetter",
        "DefinitionError",
        "DevStackError",
        "Envelope",
        "Event",
        "FaultRule",
        "Forbidden",
        "Handler",
        "HttpRequest",
        "HttpResponse",
        "IdempotenceUnsupported",
        "InvalidHeader",
        "InvalidMessage",
        "InvalidMessageModel",
        "Join",
        "Message",
        "MessageRegistry",
        "MessageTooLarge",
        "MissingHeader",
        "NoDatabase",
        "NonRetryableError",
        "NotJson",
        "OnTimeout",
        "Outcome",
        "PayloadValidationFailed",
        "Principal",
        "Published",
        "Publisher",
        "RequestContext",
        "RetryPolicy",
        "SagaDefinition",
        "SagaError",
        "SagaFinished",
        "SagaMode",
        "SagaOutcome",
        "Service",
        "ServiceMisconfigured",
        "ServiceRuntime",
        "Settings",
        "Step",
        "StepContext",
        "StepContract",
        "StepDefinition",
        "StepFailed",
        "StepFailure",
        "StepTimeout",
        "StoreUnavailable",
        "TaskApproved",
        "TaskEscalated",
        "TaskOpened",
        "TaskRejected",
        "Unauthenticated",
        "UnknownMessageType",
        "UnknownSchemaVersion",
        "Upcaster",
        "__version__",
        "commands_topic",
        "dead_letter_topic",
        "ensure_topics",
        "events_topic",
        "new_message_id",
        "outbox_relay",
        "prefixed",
        "run_service",
        "saga_transaction",
    ]


def test_subpackage_exports() -> None:
    assert saga.security.__all__ == [
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
    assert saga.dev.__all__ == ["DevStack", "LocalSystem", "StackInfo"]
    assert saga.testing.__all__ == [
        "CommandToSend",
        "Decision",
        "EventToPublish",
        "InMemorySagaSystem",
        "InMemoryTransport",
        "SagaScenario",
        "ServiceTestKit",
        "TaskChange",
    ]
    assert saga.coordinator.__all__ == ["SagaState", "StepState", "render_timeline"]


def test_exports_are_sorted_and_resolve() -> None:
    for name in DOCUMENTED:
        module = importlib.import_module(name)
        assert module.__all__ == sorted(module.__all__), name
        for exported in module.__all__:
            assert getattr(module, exported) is not None, f"{name}.{exported}"


def test_every_error_the_framework_exports_is_a_saga_error() -> None:
    for name in DOCUMENTED:
        module = importlib.import_module(name)
        for exported in module.__all__:
            value = getattr(module, exported)
            if inspect.isclass(value) and issubclass(value, BaseException):
                assert issubclass(value, saga.SagaError), f"{name}.{exported}"
                assert value.__name__ in (saga.errors.__doc__ or ""), f"{exported} not drawn"


def imports_of(path: Path) -> list[tuple[str, str]]:
    """``(module, name)`` for every ``from saga... import name`` in ``path``."""
    found: list[tuple[str, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "saga":
            found += [(node.module or "", alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(a.name, "") for a in node.names if a.name.split(".")[0] == "saga"]
    return found


def test_the_example_imports_only_public_names() -> None:
    files = sorted((ROOT / "contracts").rglob("*.py")) + sorted((ROOT / "services").rglob("*.py"))
    assert len(files) > 10
    private = []
    for path in files:
        for module, name in imports_of(path):
            public = module in DOCUMENTED and (
                not name or name in importlib.import_module(module).__all__
            )
            if not public:
                private.append(f"{path.relative_to(ROOT)}: from {module} import {name}")
    assert private == []


def test_the_library_imports_nothing_of_the_example() -> None:
    for path in sorted((ROOT / "saga").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            modules = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            for module in modules:
                assert module.split(".")[0] not in {"contracts", "services", "tests"}, path


def test_shipped_commands_are_imperative_and_events_past_tense() -> None:
    from contracts.catalog import ALL_MESSAGES

    for model in ALL_MESSAGES:
        last_word = model.__name__
        if model.kind == "event":
            assert last_word.endswith("ed"), f"{model.__name__} should be past tense"
        else:
            assert not last_word.endswith("ed"), f"{model.__name__} should be imperative"
