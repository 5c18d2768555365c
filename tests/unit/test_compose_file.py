"""The compose file users start: checked statically (no Docker engine runs here)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"


def load() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def test_kafka_runs_in_kraft_mode_without_zookeeper() -> None:
    services = load()["services"]
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = kafka["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "zookeeper" not in services
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false", "topics are provisioned explicitly"


def test_postgres_and_jaeger_v2_with_otlp_ports() -> None:
    services = load()["services"]
    assert services["postgres"]["image"].startswith("postgres:")
    jaeger = services["jaeger"]
    assert jaeger["image"].startswith("jaegertracing/jaeger:2")
    assert {"16686:16686", "4317:4317", "4318:4318"} <= set(jaeger["ports"])


def test_every_service_with_a_port_has_an_image_and_named_volumes_exist() -> None:
    data = load()
    for name, service in data["services"].items():
        assert "image" in service or "build" in service, name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in data["volumes"], f"{name} uses undeclared volume {source}"


# --- the saga system in compose agrees with the code -------------------------------

ROOT = COMPOSE.parent
APP_IMAGE = "kafka-saga:local"


def apps() -> dict[str, dict[str, Any]]:
    """Compose services built from the project's Dockerfile."""
    return {n: s for n, s in load()["services"].items() if s.get("image") == APP_IMAGE}


def test_the_coordinator_and_every_example_service_run_from_the_one_dockerfile() -> None:
    from services.system import PROCESSES

    running = {name: service["command"] for name, service in apps().items()}
    assert running == PROCESSES, "the same processes as `make demo`, started the same way"
    for service in apps().values():
        assert service["build"] == "."
    assert (ROOT / "Dockerfile").exists()
    for name, command in PROCESSES.items():
        module = command[0].replace(".", "/")
        assert (ROOT / f"{module}.py").exists() or (ROOT / module / "__main__.py").exists(), name


def test_the_coordinator_is_told_where_the_example_definitions_are() -> None:
    from services.system import DEFINITIONS

    coordinator = apps()["coordinator"]
    assert coordinator["environment"]["SAGA_DEFINITIONS"] == DEFINITIONS


def test_every_step_service_of_the_shipped_sagas_runs_in_compose() -> None:
    from contracts.catalog import saga_definitions

    needed = {s for d in saga_definitions() for s in d.services}
    needed |= {d.starts_with.message_type.split(".")[0] for d in saga_definitions()}
    assert needed <= set(apps()), f"topics nobody serves: {needed - set(apps())}"


def test_every_saga_setting_is_a_known_setting_and_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    from saga.settings import Settings

    known = {f"SAGA_{name.upper()}" for name in Settings.model_fields}
    for name, service in apps().items():
        env = {k: str(v) for k, v in service["environment"].items()}
        assert set(env) <= known, f"{name}: unknown settings {set(env) - known}"
        for key in [k for k in os.environ if k.startswith("SAGA_")]:
            monkeypatch.delenv(key)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        Settings()  # raises if a value is invalid


def test_addresses_ports_and_credentials_match_the_infrastructure() -> None:
    services = load()["services"]
    kafka = services["kafka"]["environment"]
    internal = next(
        url.split("://")[1]
        for url in kafka["KAFKA_ADVERTISED_LISTENERS"].split(",")
        if url.startswith("INTERNAL://")
    )
    postgres = services["postgres"]["environment"]
    expected_db = (
        f"postgresql://{postgres['POSTGRES_USER']}:{postgres['POSTGRES_PASSWORD']}"
        f"@postgres:5432/{postgres['POSTGRES_DB']}"
    )
    jaeger_ports = {p.split(":")[1].split()[0] for p in services["jaeger"]["ports"]}
    for name, service in apps().items():
        env = service["environment"]
        assert env["SAGA_BOOTSTRAP_SERVERS"] == internal, name
        assert env["SAGA_DATABASE_URL"] == expected_db, name
        otlp = urlparse(env["SAGA_OTLP_ENDPOINT"])
        assert otlp.hostname == "jaeger" and str(otlp.port) in jaeger_ports, name
        assert env["SAGA_TOPIC_PARTITIONS"] == str(kafka["KAFKA_NUM_PARTITIONS"])
        port = env["SAGA_HEALTH_PORT"]
        assert f"127.0.0.1:{port}/readyz" in " ".join(service["healthcheck"]["test"]), name
        for mapping in service.get("ports", []):
            assert mapping.split(":")[-1] == port, f"{name} publishes its HTTP port"
        conditions = service["depends_on"]
        assert conditions["kafka"]["condition"] == "service_healthy", name
        assert conditions["postgres"]["condition"] == "service_healthy", name
    assert "8080:8080" in services["orders"]["ports"], "POST /orders from the host"
    dockerfile = (ROOT / "Dockerfile").read_text()
    port = apps()["orders"]["environment"]["SAGA_HEALTH_PORT"]
    assert f"EXPOSE {port}" in dockerfile and f"127.0.0.1:{port}/readyz" in dockerfile


def test_the_orders_route_the_readme_shows_exists() -> None:
    from services.orders import service

    routes = {(r.method, r.pattern) for r in service.routes}
    assert {("POST", "/orders"), ("GET", "/orders/{order_id}")} <= routes
    readme = (ROOT / "README.md").read_text()
    assert "localhost:8080/orders" in readme and "localhost:16686" in readme


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_docker_compose_config_accepts_the_file() -> None:
    result = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE), "config", "--quiet"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_the_compose_services_accept_the_examples_development_tokens() -> None:
    from services.system import DEV_TOKEN, DEV_TOKENS

    environment = load()["x-saga"]["environment"]
    assert json.loads(environment["SAGA_AUTH_TOKENS"]) == DEV_TOKENS
    assert DEV_TOKENS[DEV_TOKEN]["roles"] == ["operator"]
