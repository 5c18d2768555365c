"""The console's pure parts: filters as SQL, sagas as views, dead letters as the record
to redrive, pages that escape what they show, static tokens and roles, the CLI's
arguments, and the console in compose beside Jaeger."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml

from contracts.order_saga import ORDER_SAGA
from saga.cli import main
from saga.console.dead_letters import (
    Letter,
    NotRedrivable,
    dead_letter_topics,
    parse_id,
    redrive_of,
)
from saga.console.pages import saga_rows, sign_in
from saga.console.queries import (
    SagaFilter,
    SagaView,
    business_keys,
    current_step,
    saga_view,
    search_fields,
    trace_url,
    where,
)
from saga.coordinator.state import SagaState, StepState
from saga.definition.saga import DefinitionError
from saga.messages import headers as h
from saga.security.auth import StaticTokens
from saga.security.signing import Signer, Verifier, parse_keys
from saga.settings import Settings
from tests.unit.test_compose_file import load

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def parked(saga_id: str = "o-1") -> SagaState:
    return SagaState(
        saga_id=saga_id,
        saga_type="order",
        status="parked",
        steps={
            "reserve": StepState(
                "completed", data={"order_id": saga_id, "customer_id": "c-7", "sku": "s"}
            ),
            "charge": StepState(
                "compensation_failed", error="StepTimeout: no answer in 3s", attempt=1
            ),
            "ship": StepState(),
            "notify": StepState(),
        },
        started_at=NOW,
        traceparent="00-" + "ab" * 16 + "-" + "cd" * 8 + "-01",
    )


# --- filters and views -----------------------------------------------------------


def test_a_filter_becomes_one_condition_with_numbered_parameters_only() -> None:
    wanted = SagaFilter(
        state="parked",
        saga_type="order",
        step="charge",
        error_type="StepTimeout",
        key="customer_id=c-7",
        older_than=timedelta(minutes=10),
    )
    sql, params = where(wanted, ["order_id", "customer_id"])
    assert "c-7" not in sql and "charge" not in sql and "StepTimeout" not in sql
    assert params[:3] == ["parked", "order", timedelta(minutes=10)]
    assert params[-2:] == [["customer_id"], "c-7"], "FIELD=VALUE searches that field only"
    assert sql.count("$") == len(params) == 8


def test_a_bare_key_searches_every_searchable_field_and_no_filter_is_everything() -> None:
    _, params = where(SagaFilter(key="o-1"), ["order_id", "customer_id"])
    assert params == [["order_id", "customer_id"], "o-1"]
    _, params = where(SagaFilter(key="sku=s"), ["order_id"])
    assert params == [["order_id"], "sku=s"], "a field not searchable is part of the value"
    assert where(SagaFilter(), []) == ("true", [])


def test_the_console_query_string_round_trips_and_a_bad_age_is_named() -> None:
    wanted = SagaFilter.of({"state": "parked", "step": "charge", "key": "o-1", "older_than": "90"})
    assert wanted.older_than == timedelta(minutes=90), "minutes by default"
    assert SagaFilter.of(wanted.query()) == wanted
    assert wanted.describe() == "state parked, step charge, key o-1, older_than 5400s"
    with pytest.raises(ValueError, match="older than: 'soon'"):
        SagaFilter.of({"older_than": "soon"})


def test_a_saga_row_shows_its_step_error_type_business_keys_and_trace_link() -> None:
    state = parked()
    row = {"state": state.to_json(), "version": 3, "created_at": NOW, "updated_at": NOW}
    view = saga_view(row, ORDER_SAGA)
    assert (view.step, view.error_type) == ("charge", "StepTimeout")
    assert view.keys == {"order_id": "o-1", "customer_id": "c-7"}
    assert current_step(state) == "charge"
    assert business_keys(state, ["sku"]) == {"sku": "s"}
    template = "http://localhost:16686/trace/{trace_id}"
    assert trace_url(template, state) == "http://localhost:16686/trace/" + "ab" * 16
    assert trace_url(None, state) is None
    assert search_fields([ORDER_SAGA]) == ["order_id", "customer_id"]


def test_a_definition_searches_only_fields_of_its_start_event() -> None:
    from dataclasses import replace

    with pytest.raises(DefinitionError, match="search names nope, not fields of OrderPlaced"):
        replace(ORDER_SAGA, search=("order_id", "nope"))


def test_pages_escape_what_they_show() -> None:
    view = SagaView(
        saga_id="<script>x</script>",
        saga_type="order",
        status="parked",
        started_at=NOW,
        updated_at=NOW,
        step="charge",
        error="<b>",
        error_type="<i>",
        keys={"order_id": '"><img>'},
    )
    html = saga_rows([view], NOW + timedelta(hours=2))
    assert "<script>" not in html and "<img>" not in html and "<i>" not in html
    assert "&lt;script&gt;" in html and ">2h<" in html
    assert "&lt;" in sign_in("<bad>") and "<bad>" not in sign_in("<bad>")


# --- dead letters ------------------------------------------------------------------


def letter(headers: list[tuple[str, bytes | None]], **more: object) -> Letter:
    return Letter("t.orders.events.dlq", 0, 7, b"o-1", b"{}", tuple(headers), **more)  # type: ignore[arg-type]


PROVENANCE: list[tuple[str, bytes | None]] = [
    (h.DLQ_REASON, b"NotJson: not JSON"),
    (h.DLQ_ERROR_TYPE, b"NotJson"),
    (h.DLQ_TOPIC, b"t.orders.events"),
    (h.DLQ_PARTITION, b"2"),
    (h.DLQ_OFFSET, b"41"),
    (h.DLQ_GROUP, b"coordinator"),
    (h.DLQ_TIME, NOW.isoformat().encode()),
]


def test_a_dead_letter_goes_back_to_its_topic_without_the_dead_letter_headers() -> None:
    found = letter([(h.ID, b"m-1"), (h.TYPE, b"orders.OrderPlaced"), *PROVENANCE])
    assert (found.id, found.original, found.saga_id) == (
        "t.orders.events.dlq:0:7",
        "t.orders.events[2]@41",
        "o-1",
    )
    assert (found.error_type, found.group, found.at) == ("NotJson", "coordinator", NOW)
    again = redrive_of(found)
    assert again.topic == "t.orders.events"
    assert (again.key, again.value) == (b"o-1", b"{}")
    assert again.headers == [(h.ID, b"m-1"), (h.TYPE, b"orders.OrderPlaced")]


def test_a_redriven_signed_record_has_its_original_signature_and_verifies() -> None:
    secret = base64.b64encode(b"k" * 32).decode()
    keys = parse_keys(
        {
            "orders-1": {"principal": "orders", "algorithm": "hmac-sha256", "secret": secret},
            "coordinator-1": {
                "principal": "coordinator",
                "algorithm": "hmac-sha256",
                "secret": secret,
            },
        }
    )
    topic, key, value = "orders.events", b"o-1", b'{"order_id": "o-1"}'
    original = Signer(keys, "orders-1").sign(topic, key, value, [(h.ID, b"m-1")])
    # The security dead letters keep the original signature as dlq_signature* and sign anew.
    moved = Signer(keys, "coordinator-1").sign(
        "saga.security.dlq", key, value, [*original, (h.DLQ_TOPIC, topic.encode())]
    )
    found = Letter("saga.security.dlq", 0, 3, key, value, tuple(moved))
    again = redrive_of(found)
    assert sorted(again.headers) == sorted(original)
    verifier = Verifier(keys)
    verifier.check(topic, 0, 99, again.key, again.value, again.headers)
    # A consumer that read it at its first position refuses the copy as a replay.
    reader = Verifier(keys)
    reader.check(topic, 0, 5, key, value, original)
    with pytest.raises(Exception, match="replayed"):
        reader.check(topic, 0, 99, again.key, again.value, again.headers)


def test_a_dead_letter_without_its_value_or_its_topic_is_not_redriven() -> None:
    with pytest.raises(NotRedrivable, match="value was left out"):
        redrive_of(letter([*PROVENANCE, (h.DLQ_VALUE_OMITTED, b"too large")]))
    with pytest.raises(NotRedrivable, match="its topic is unknown"):
        redrive_of(letter([(h.DLQ_REASON, b"x")]))


def test_the_dead_letter_topics_of_a_system_and_their_names() -> None:
    topics = ["t.orders.events", "t.orders.events.dlq", "t.saga.security.dlq", "u.x.dlq"]
    assert dead_letter_topics(topics, "t.") == ["t.orders.events.dlq", "t.saga.security.dlq"]
    assert parse_id("t.orders.events.dlq:2:41") == ("t.orders.events.dlq", 2, 41)
    with pytest.raises(ValueError, match="TOPIC:PARTITION:OFFSET"):
        parse_id("t.orders.events.dlq:x")


# --- sign-in and roles -------------------------------------------------------------


# --- the command line and compose ---------------------------------------------------


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["bulk", "retry", "--state", "parked"], "one of the arguments --dry-run --yes"),
        (["bulk", "reboot", "--dry-run"], "invalid choice: 'reboot'"),
        (["bulk", "retry", "--older-than", "soon", "--yes"], "'soon': use e.g. 90s"),
    ],
)
def test_a_bad_bulk_argument_is_a_usage_error(
    args: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == 2
    assert says in capsys.readouterr().err


def test_a_bulk_skip_without_a_step_or_a_resolve_without_a_reason_is_refused_first(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["bulk", "skip", "--state", "parked", "--dry-run"]) == 2
    assert "skip needs the step" in capsys.readouterr().err
    assert main(["bulk", "resolve", "--state", "parked", "--yes"]) == 2
    assert "resolve needs a reason" in capsys.readouterr().err


def test_redrive_names_dead_letters_or_a_whole_topic(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dead-letters", "redrive"]) == 2
    assert "name dead letters, or --topic T --all" in capsys.readouterr().err
    assert main(["dead-letters", "redrive", "--topic", "t.x.dlq"]) == 2
    assert "add --all" in capsys.readouterr().err


def test_the_console_runs_in_compose_beside_jaeger_and_links_to_it() -> None:
    services = load()["services"]
    console = services["console"]
    assert console["command"] == ["saga.cli", "console"]
    env = console["environment"]
    assert env["SAGA_CONSOLE_HOST"] == "0.0.0.0"
    assert env["SAGA_CONSOLE_PORT"] == env["SAGA_HEALTH_PORT"], "its healthcheck reads it"
    assert env["SAGA_TRACE_URL_TEMPLATE"] == "http://localhost:16686/trace/{trace_id}"
    assert "16686:16686" in services["jaeger"]["ports"]
    settings = Settings(auth_tokens=env["SAGA_AUTH_TOKENS"])
    assert settings.auth_tokens is not None
    assert StaticTokens.parse(settings.auth_tokens.get_secret_value())
    assert yaml.safe_dump(console)


async def test_a_nul_in_the_consoles_input_is_a_400_before_the_database() -> None:
    """A NUL in a path, a query or a form: refused, never a 500. (Percent-encoded bytes
    that are no UTF-8, a lone surrogate's among them, are read as U+FFFD: storable.)"""
    from saga.console.app import create_app

    tokens = json.dumps({"o": {"sub": "olga", "roles": ["operator"]}})
    app = create_app(
        Settings(auth_tokens=tokens, database_url="postgresql://nobody@127.0.0.1:1/none"),  # type: ignore[arg-type]
        [ORDER_SAGA],
    )

    async def status(path: str, query: bytes = b"", body: bytes = b"") -> int:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST" if body else "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode("utf-8", "surrogatepass"),
            "query_string": query,
            "root_path": "",
            "headers": [(b"authorization", b"Bearer o"), (b"host", b"testserver")],
            "server": ("testserver", 80),
            "client": ("127.0.0.1", 5),
        }
        sent: list[dict[str, Any]] = []
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict[str, Any]:
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await app(scope, receive, send)
        return int(next(m for m in sent if m["type"] == "http.response.start")["status"])

    assert await status("/sagas", b"state=%00x") == 400
    assert await status("/sagas/a\x00b") == 400
    assert await status("/sagas/o-1/resolve", body=b"reason=a%00b") == 400
