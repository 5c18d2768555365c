"""All settings, in one place, read from ``SAGA_*`` environment variables.

>>> Settings(bootstrap_servers="kafka:9092").bootstrap_servers
'kafka:9092'

Every field below is also an environment variable: ``bootstrap_servers`` is
``SAGA_BOOTSTRAP_SERVERS``, ``sasl_password`` is ``SAGA_SASL_PASSWORD``. A
``.env`` file in the working directory is read too. Secrets are
``SecretStr``: they never show in ``repr``, logs or error messages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from saga.resilience.faults import FaultRule
from saga.security.signing import KeySpec, parse_keys

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"]
Compression = Literal["none", "gzip", "snappy", "lz4", "zstd"]


class Settings(BaseSettings):
    """Connection, security and tuning settings shared by services and coordinator."""

    model_config = SettingsConfigDict(
        # Errors never quote values: some are secrets.
        hide_input_in_errors=True,
        env_prefix="SAGA_",
        env_file=".env",
        extra="ignore",
        frozen=True,
    )

    # --- Kafka connection -------------------------------------------------
    bootstrap_servers: str = Field(
        default="localhost:9092", description="Comma-separated host:port list."
    )
    client_id: str = Field(default="saga", description="Kafka client id prefix.")

    # --- Kafka security ---------------------------------------------------
    security_protocol: SecurityProtocol = "PLAINTEXT"
    ssl_cafile: str | None = Field(default=None, description="CA bundle to trust (PEM).")
    ssl_certfile: str | None = Field(default=None, description="Client certificate (mTLS).")
    ssl_keyfile: str | None = Field(default=None, description="Client key (mTLS).")
    ssl_key_password: SecretStr | None = None
    ssl_check_hostname: bool = True
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    #: OAUTHBEARER: OAuth 2.0 client-credentials token endpoint, client and scope.
    sasl_oauth_token_url: str | None = None
    sasl_oauth_client_id: str | None = None
    sasl_oauth_client_secret: SecretStr | None = None
    sasl_oauth_scope: str | None = None
    #: Where OAUTHBEARER tokens come from: that endpoint, or AWS MSK IAM (the ``aws`` extra).
    sasl_oauth_provider: Literal["client_credentials", "aws_msk_iam"] = "client_credentials"
    aws_region: str | None = Field(default=None, description="For sasl_oauth_provider=aws_msk_iam.")

    # --- Producer ---------------------------------------------------------
    enable_idempotence: bool = Field(
        default=True,
        description=(
            "Idempotent producer (no duplicates from producer retries). Brokers that "
            "reject it (e.g. the embedded dev broker) need SAGA_ENABLE_IDEMPOTENCE=false."
        ),
    )
    compression_type: Compression = "gzip"
    linger_ms: int = Field(
        default=0,
        ge=0,
        description=(
            "How long the producer holds a record for more to join its batch. A hand-over "
            "(a batch's records, once committed) is enqueued at once and goes out together "
            "anyway, and records enqueued while a request is in flight join the next one: "
            "a linger only delays each hop."
        ),
    )
    max_message_bytes: int = Field(
        default=1_048_576,
        gt=1024,
        description=(
            "Largest record produced, and smallest per-partition fetch, so that any "
            "record we can write we can also read."
        ),
    )
    request_timeout_ms: int = Field(default=40_000, gt=0)

    # --- Consumer ---------------------------------------------------------
    fetch_max_wait_ms: int = Field(
        default=500,
        ge=0,
        description="Longest a fetch waits for data. Use 5 with the embedded dev broker.",
    )
    fetch_idle_max_wait_ms: int = Field(
        default=50,
        ge=0,
        description=(
            "Longest a fetch waits for data once its consumer has been idle: the wait"
            " doubles from fetch_max_wait_ms after each idle second up to this, and"
            " drops back with the first record. For a broker that answers a waiting fetch"
            " only when the wait is over (the embedded dev broker); no effect when not"
            " above fetch_max_wait_ms (Apache Kafka's 500)."
        ),
    )
    max_poll_records: int = Field(default=500, gt=0, description="Records per fetched batch.")
    max_concurrency: int = Field(
        default=16, gt=0, description="Partitions handled at once by one consumer."
    )
    session_timeout_ms: int = Field(default=10_000, gt=0)
    heartbeat_interval_ms: int = Field(default=3_000, gt=0)
    max_poll_interval_ms: int = Field(default=300_000, gt=0)
    commit_interval_ms: int = Field(
        default=200, ge=0, description="Longest handled offsets wait before being committed."
    )
    shutdown_grace_ms: int = Field(
        default=45_000,
        gt=0,
        description="Longest a graceful stop may take before the process stops anyway.",
    )
    commit_timeout_ms: int = Field(
        default=10_000, gt=0, description="Longest wait for an offset commit before retrying."
    )
    drain_timeout_ms: int = Field(
        default=30_000,
        gt=0,
        description="Longest wait for in-flight records on revocation and shutdown.",
    )
    handler_max_attempts: int = Field(
        default=5, ge=1, description="Tries of a failing handler before dead-lettering."
    )
    handler_retry_initial_ms: int = Field(default=100, ge=0)
    handler_retry_max_ms: int = Field(default=5_000, ge=0)
    stall_after_ms: int = Field(
        default=60_000,
        gt=0,
        description="A partition with records waiting and no progress for this long is"
        " reported stalled (/readyz, log, metric).",
    )

    # --- Topics -----------------------------------------------------------
    topic_prefix: str = Field(
        default="",
        pattern=r"^[a-zA-Z0-9._-]*$",
        description="Put before every topic name, e.g. 'staging.' to share a cluster.",
    )
    topic_partitions: int = Field(default=6, gt=0, description="Partitions of created topics.")
    topic_replication_factor: int = Field(default=1, gt=0)

    # --- Services -----------------------------------------------------------
    mode: Literal["choreography", "orchestration"] = Field(
        default="choreography",
        description=(
            "The saga mode of the whole system, read by the coordinator and every service."
            " choreography: services react to each other's events. orchestration: the"
            " coordinator sends each step its trigger and services consume only their"
            " commands (and saga.events)."
        ),
    )
    health_port: int | None = Field(
        default=8080, ge=0, description="HTTP health endpoint port (0: any free port)."
    )
    health_host: str = Field(default="0.0.0.0", description="Address the health endpoint binds.")
    delivery_batch: int = Field(
        default=100,
        gt=0,
        description=(
            "Deliveries of one partition a service with a PostgreSQL store handles in one"
            " transaction (with a savepoint per delivery only after a handler failed); 1: a"
            " transaction each."
        ),
    )
    relay_interval_ms: int = Field(
        default=500, gt=0, description="How often the outbox relay looks for unsent rows."
    )
    inbox_retention_hours: float = Field(
        default=168,
        gt=0,
        description=(
            "How long handled message ids are kept to drop redeliveries: at least as long"
            " as the topics keep records."
        ),
    )
    outbox_retention_hours: float = Field(
        default=0,
        ge=0,
        description=(
            "How long sent outbox rows are kept for inspection; 0: deleted as soon as the"
            " broker has them (unsent and parked ones are always kept)."
        ),
    )
    prune_interval_ms: int = Field(
        default=600_000,
        ge=0,
        description=(
            "How often old inbox rows, sent outbox rows and (by the coordinator) finished"
            " sagas are deleted; 0: never."
        ),
    )
    memory_trim_interval_ms: int = Field(
        default=60_000,
        ge=0,
        description=(
            "How often a process hands the heap memory it freed back to the operating"
            " system (glibc's malloc_trim), so that its RSS does not keep the high-water"
            " mark of past bursts; 0: never."
        ),
    )
    socket_read_bytes: int = Field(
        default=32_768,
        ge=0,
        description=(
            "Most bytes a process reads from a socket at once (asyncio's selector"
            " transports read 256 KiB). Each read's buffer comes from the C heap and"
            " is shrunk to what arrived; smaller buffers fit the holes earlier ones"
            " leave, where 256 KiB ones keep extending the heap. 0: asyncio's default."
        ),
    )

    # --- Coordinator --------------------------------------------------------
    definitions: str = Field(
        default="",
        description=(
            "module:attribute of the saga definitions the coordinator runs (a sequence,"
            " or a function returning one), e.g. 'myapp.sagas:SAGAS'. Required by the"
            " coordinator and the commands that read definitions."
        ),
    )
    timer_interval_ms: int = Field(
        default=200, gt=0, description="How often the coordinator looks for due timers."
    )
    orphan_hold_ms: int = Field(
        default=300_000,
        gt=0,
        description=(
            "How long the coordinator holds an event of a saga not started yet for its"
            " start event (read late from another topic, it is decided right after it);"
            " then the event goes to its topic's dead letters as an OrphanEvent. Longer"
            " than the lag between the coordinator's topics can be (a rebalance, a"
            " catch-up after downtime)."
        ),
    )
    finished_saga_retention_hours: float = Field(
        default=168,
        gt=0,
        description=(
            "How long the coordinator keeps a completed or compensated saga (its row, log"
            " and tasks) after it finished: at least as long as the topics keep records."
        ),
    )
    resolved_saga_retention_hours: float = Field(
        default=720,
        gt=0,
        description=(
            "How long the coordinator keeps a saga an operator resolved after it finished;"
            " parked and running sagas are kept until they finish."
        ),
    )
    coordinator_cached_sagas: int = Field(
        default=4096,
        ge=0,
        description=(
            "Running sagas the coordinator keeps in memory as it saved them (a few KB each),"
            " so that their state is not read and parsed again; 0: none."
        ),
    )

    # --- PostgreSQL and telemetry -----------------------------------------
    database_url: SecretStr = Field(
        default=SecretStr("postgresql://postgres@localhost:5432/saga"),
        description="PostgreSQL DSN of the saga log (coordinator) or service store.",
    )
    otlp_endpoint: str | None = Field(
        default=None, description="OTLP/HTTP traces endpoint, e.g. http://jaeger:4318."
    )
    otlp_metrics_endpoint: str | None = Field(
        default=None,
        description="OTLP/HTTP metrics endpoint, e.g. http://otel-collector:4318 (not Jaeger).",
    )
    otlp_timeout_ms: int = Field(
        default=2_000, gt=0, description="An OTLP export gives up after this long."
    )
    otlp_export_interval_ms: int = Field(
        default=1_000, gt=0, description="How often finished spans are exported in a batch."
    )
    otlp_queue_size: int = Field(
        default=8_192, gt=0, description="Spans kept while the collector is slow; more are dropped."
    )
    metrics_interval_ms: int = Field(
        default=10_000, gt=0, description="How often metrics are exported."
    )
    service_name: str = Field(default="saga", description="OpenTelemetry service.name.")

    # --- Message signatures -------------------------------------------------
    signing_keys: dict[str, KeySpec] = Field(
        default_factory=dict,
        description="JSON: key id -> {principal, algorithm, secret | public_key, private_key}.",
    )
    signing_keys_file: Path | None = Field(
        default=None, description="A JSON file of more signing keys (same shape)."
    )
    signing_key_id: str | None = Field(
        default=None, description="The key this process signs what it publishes with."
    )
    require_signatures: bool = Field(
        default=False,
        description="Refuse records not signed by their topic's owner (to the security DLQ).",
    )

    # --- HTTP authentication ------------------------------------------------
    auth_tokens: SecretStr | None = Field(
        default=None,
        description=(
            'Development only: JSON {"<token>": {"sub": "alice", "roles": ["operator"]}},'
            " static bearer tokens and who each one is."
        ),
    )
    auth_jwks_url: str | None = Field(
        default=None,
        description="JWKS URL of the OIDC provider whose JWTs are accepted as bearer tokens.",
    )
    auth_issuer: str | None = Field(
        default=None, description="The `iss` a JWT must carry (required with a JWKS URL)."
    )
    auth_audience: str | None = Field(
        default=None, description="The `aud` a JWT must carry (required with a JWKS URL)."
    )
    auth_roles_claim: str = Field(
        default="roles",
        description="The JWT claim holding the caller's roles (a dotted path for nested claims).",
    )

    # --- The saga console ---------------------------------------------------
    console_host: str = Field(default="127.0.0.1", description="Address the console binds.")
    console_port: int = Field(
        default=8088, ge=0, le=65535, description="Port of the saga console (0: any free port)."
    )
    trace_url_template: str | None = Field(
        default=None,
        description=(
            "Link from a saga to its trace, e.g. http://localhost:16686/trace/{trace_id}"
            " (Jaeger); none: the console shows the trace id only."
        ),
    )

    # --- Fault injection ----------------------------------------------------
    faults: list[FaultRule] = Field(
        default_factory=list,
        description="JSON list of fault rules for demos and tests (see saga.resilience.faults).",
    )

    def all_signing_keys(self) -> dict[str, KeySpec]:
        """``SAGA_SIGNING_KEYS`` plus the keys of ``SAGA_SIGNING_KEYS_FILE``."""
        keys = dict(self.signing_keys)
        if self.signing_keys_file is not None:
            keys.update(parse_keys(self.signing_keys_file.read_text()))
        return keys

    @model_validator(mode="after")
    def _check_security(self) -> Self:
        sasl = self.security_protocol.startswith("SASL_")
        if sasl and self.sasl_mechanism is None:
            raise ValueError(
                f"SAGA_SECURITY_PROTOCOL={self.security_protocol} needs SAGA_SASL_MECHANISM"
            )
        if self.sasl_mechanism is not None and not sasl:
            raise ValueError(
                "SAGA_SASL_MECHANISM is set but SAGA_SECURITY_PROTOCOL is "
                f"{self.security_protocol}; use SASL_SSL (or SASL_PLAINTEXT)"
            )
        if self.sasl_mechanism in {"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"} and (
            not self.sasl_username or self.sasl_password is None
        ):
            raise ValueError(
                f"SAGA_SASL_MECHANISM={self.sasl_mechanism} needs SAGA_SASL_USERNAME "
                "and SAGA_SASL_PASSWORD"
            )
        if (
            self.sasl_mechanism == "OAUTHBEARER"
            and self.sasl_oauth_provider == "aws_msk_iam"
            and not self.aws_region
        ):
            raise ValueError("SAGA_SASL_OAUTH_PROVIDER=aws_msk_iam needs SAGA_AWS_REGION")
        if (
            self.sasl_mechanism == "OAUTHBEARER"
            and self.sasl_oauth_provider == "client_credentials"
            and not (
                self.sasl_oauth_token_url
                and self.sasl_oauth_client_id
                and self.sasl_oauth_client_secret is not None
            )
        ):
            raise ValueError(
                "SAGA_SASL_MECHANISM=OAUTHBEARER needs SAGA_SASL_OAUTH_TOKEN_URL, "
                "SAGA_SASL_OAUTH_CLIENT_ID and SAGA_SASL_OAUTH_CLIENT_SECRET"
            )
        if bool(self.ssl_certfile) != bool(self.ssl_keyfile):
            raise ValueError("SAGA_SSL_CERTFILE and SAGA_SSL_KEYFILE go together")
        keys = self.all_signing_keys()
        if self.signing_key_id is not None:
            if self.signing_key_id not in keys:
                raise ValueError(f"SAGA_SIGNING_KEY_ID={self.signing_key_id!r} is not a known key")
            if not keys[self.signing_key_id].can_sign:
                raise ValueError(
                    f"SAGA_SIGNING_KEY_ID={self.signing_key_id!r} has no private key here"
                )
        if self.require_signatures and not keys:
            raise ValueError("SAGA_REQUIRE_SIGNATURES needs SAGA_SIGNING_KEYS (or _FILE)")
        if self.drain_timeout_ms >= self.max_poll_interval_ms:
            raise ValueError("SAGA_DRAIN_TIMEOUT_MS must be below SAGA_MAX_POLL_INTERVAL_MS")
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise ValueError("SAGA_HEARTBEAT_INTERVAL_MS must be below SAGA_SESSION_TIMEOUT_MS")
        return self
