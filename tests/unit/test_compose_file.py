"""The compose file users start: checked statically (no Docker engine runs here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
