"""All pipeline settings in one object; every env var is `EVALSTREAM_<FIELD>` (listed in the README).

Plain typed fields, read from the environment here and nowhere else in the pipeline (the SDK reads its
own in `sdk/config.py`). This module imports nothing of the pipeline: what a setting configures builds
its own object from it (`AssemblyConfig.from_settings`, `SessionConfig.from_settings`,
`RetryPolicy.from_settings`, `scoring/judges.py` `judge_config`, `kafka_security.aiokafka_options`),
and the composition root (`worker/app.py`, the CLI) hands those objects down.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ROLES = ("assembler", "router", "scorer", "alerter")  # the default; the sink is `sink_enabled` (one chDB opener)
OPTIONAL_ROLES = ("otel-export",)  # off unless named: scores out as OpenTelemetry events (docs/opentelemetry.md)
DEFAULT_ROLES = ",".join(ROLES)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EVALSTREAM_", frozen=True, extra="ignore")

    # Where things live. Unset bootstrap / DSN = the embedded default under data_dir.
    data_dir: Path = Path(".evalstream")
    kafka_bootstrap: str | None = None
    clickhouse_dsn: str | None = None
    clickhouse_database: str = "evalstream"
    rules_file: Path | None = None

    # Kafka
    app_id: str = "evalstream"
    topic_partitions: int = Field(default=8, ge=1)
    topic_replication_factor: int = Field(default=1, ge=1)  # `evalstream topics init` and workers' own creation
    topic_retention_hours: float = Field(default=72.0, gt=0)  # data topics; dead letters keep 4x as long
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: str | None = None  # the CA of the brokers' certificates (default: the system's)
    kafka_ssl_certfile: str | None = None  # client certificate and key, for mutual TLS
    kafka_ssl_keyfile: str | None = None
    # The embedded broker (`up` without kafka_bootstrap) keeps every record in memory and gives none back: `up`
    # samples its RSS every check_s for `evalstream status`, and warns from warn_mb (None: a quarter of the
    # machine's memory), then at every further half of it (pipeline/broker_memory.py, docs/operations.md).
    embedded_broker_warn_mb: float | None = Field(default=None, gt=0)
    embedded_broker_check_s: float = Field(default=30.0, gt=0)
    session_timeout_s: float = Field(default=10.0, gt=0)
    fetch_max_wait_ms: int = Field(default=10, ge=0)
    max_message_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)

    # Assembly
    quiet_period_s: float = Field(default=2.0, ge=0)
    idle_timeout_s: float = Field(default=300.0, gt=0)
    reopen_window_s: float = Field(default=900.0, ge=0)
    # A remote call (a span that propagated the trace to another service) waits this long for the callee's
    # spans before the trace closes without them: OpenTelemetry's BatchSpanProcessor exports every 5 s.
    remote_wait_s: float = Field(default=10.0, ge=0)
    tick_interval_s: float = Field(default=0.5, gt=0)

    # Sessions (conversations): closed after this long without a new turn, or by an end marker
    session_idle_timeout_s: float = Field(default=600.0, gt=0)
    session_reopen_window_s: float = Field(default=1800.0, ge=0)  # a later turn re-opens it as version + 1
    session_tombstone_ttl_s: float | None = Field(default=None, gt=0)  # None: remember the last version for ever
    # After a turn with the end marker, wait this long for earlier turns whose traces closed later (each would
    # otherwise re-open the conversation as a new version); 0 closes at once.
    session_end_grace_s: float = Field(default=2.0, ge=0)

    # Scoring
    scorer_timeout_s: float = Field(default=30.0, gt=0)
    scorer_concurrency: int = Field(default=16, ge=1)
    scorer_max_attempts: int = Field(default=3, ge=1)
    scorer_backoff_s: float = Field(default=0.5, ge=0)
    scorer_cache_size: int = Field(default=256, ge=1)  # scorer instances kept per process (LRU by scorer + params)
    budget_window_s: float = Field(default=3600.0, gt=0)  # rules' budgets are per this window (an hour)
    # The shared spend ledger (docs/budgets.md): a reservation never settled (its process died) counts for this long
    budget_reservation_timeout_s: float = Field(default=600.0, gt=0)
    budget_confirm_timeout_s: float = Field(default=10.0, gt=0)  # wait for a reservation to come back from the topic
    budget_default_estimate_tokens: int = Field(default=2000, ge=0)  # a job's estimate before the rule has settled one
    budget_default_estimate_usd: float = Field(default=0.02, ge=0)
    defer_max_sleep_s: float = Field(default=30.0, gt=0)  # a deferred job waits at most this long per pass
    defer_concurrency: int = Field(default=64, ge=1)  # deferred jobs waiting at once per worker

    # Judges (docs/judges.md): the process's judge client and the defaults of every judge; unset = the
    # judge client's default (`scorers/judges/config.py`). A rule's params beat these.
    judge_model: str | None = None  # litellm model string (default openai/gpt-4o-mini)
    judge_api_base: str | None = None  # endpoint (default: the provider's)
    judge_api_key: SecretStr | None = None  # else a rule's api_key_env, else litellm's provider variable
    judge_max_concurrency: int | None = Field(default=None, ge=1)  # calls in flight per model (default 16)
    judge_requests_per_minute: float | None = Field(default=None, gt=0)  # per model (default unlimited)
    judge_tokens_per_minute: float | None = Field(default=None, gt=0)  # per model (default unlimited)
    judge_timeout_s: float | None = Field(default=None, gt=0)  # per call (default 60)
    judge_max_attempts: int | None = Field(default=None, ge=1)  # per call, with Retry-After (default 5)
    judge_cache_size: int | None = Field(default=None, ge=0)  # identical calls answered from memory (default 1024)
    judge_send_spacing_ms: float | None = Field(default=None, ge=0)  # least time between two sends (default 4)
    # Each judged job's model calls and tool runs as a trace of project evalstream-judges (docs/judges.md)
    judge_evaluation_traces: bool = True

    # Uploaded scorers (`evalstream scorers upload`) each run in a sandbox process (docs/scorers.md)
    sandbox_timeout_s: float = Field(default=20.0, gt=0)  # wall clock per job, capped by scorer_timeout_s
    sandbox_cpu_s: int = Field(default=300, ge=1)  # CPU-seconds per sandbox process (RLIMIT_CPU)
    sandbox_memory_mb: int = Field(default=2048, ge=128)  # address space per sandbox process (RLIMIT_AS)
    sandbox_concurrency: int = Field(default=4, ge=1)  # jobs running at once in one sandbox process
    sandbox_env_allow: str = ""  # env vars the scorers may see, comma-separated names or globs (OPENAI_*)
    sandbox_start_timeout_s: float = Field(default=60.0, gt=0)  # to import the uploaded module
    sandbox_install_timeout_s: float = Field(default=600.0, gt=0)  # venv + pip install of its requirements
    sandbox_uid: int | None = Field(default=None, ge=1)  # a root worker runs scorers as this uid (else evalstream-sandbox)
    sandbox_gid: int | None = Field(default=None, ge=1)  # ... and gid (else the user's group)
    sandbox_require_isolation: bool = False  # refuse to run uploaded scorers when a part of the isolation is refused

    # Sink
    sink_enabled: bool = True
    roles: str = DEFAULT_ROLES  # which roles this process runs (comma-separated; ROLES)
    sink_batch_rows: int = Field(default=5000, ge=1)
    sink_flush_interval_s: float = Field(default=0.5, gt=0)
    retention_days: int = Field(default=30, ge=1)
    query_port: int = Field(default=0, ge=0)  # 0 = a free port, written to data_dir/run.json

    # Metrics (docs/metrics.md): GET /metrics on every worker; consumer lag sampled and sent to the sink
    metrics_host: str = "127.0.0.1"  # 0.0.0.0 for a Prometheus on another host
    metrics_port: int = Field(default=0, ge=0, le=65535)  # 0 = a free port, in the log and data_dir/run.json
    metrics_interval_s: float = Field(default=10.0, gt=0)  # consumer-lag samples (gauges and `consumer_lag` rows)

    # Alerts: Slack by incoming webhook, or bot token + channel; neither = console.
    slack_webhook_url: SecretStr | None = None
    slack_bot_token: SecretStr | None = None
    slack_channel: str | None = None
    slack_base_url: str | None = None  # Slack API base URL (tests point it at a local server)
    alert_retry_backoff_s: float = Field(default=30.0, gt=0)  # first redelivery of a failed alert
    alert_retry_max_backoff_s: float = Field(default=900.0, gt=0)  # then doubling up to this; never given up
    alert_webhook_url: str | None = None  # any HTTP endpoint: alerts as JSON POSTs
    alert_webhook_secret: SecretStr | None = None  # HMAC-SHA256 key for X-Evalstream-Signature
    alert_hook: str | None = None  # "package.module:function" called with every Alert (on_fail)
    trace_url_template: str | None = None  # e.g. "https://grafana.example/d/trace?var-trace={trace_id}"
    # a link on every alert, e.g. "https://grafana.example/d/evalstream?var-rule={rule}&from={from_ms}&to={to_ms}"
    alert_dashboard_url_template: str | None = None
    alert_grace_s: float = Field(default=5.0, ge=0)  # a window closes this long after its end (late results)
    alert_tick_interval_s: float = Field(default=1.0, gt=0)  # how often windows and cooldowns are checked
    # The built-in rule-health alert (docs/rule-health.md): the sink checks every rule's health this often and
    # alerts once when a rule turns erroring or starved, and once when it is healthy or idle again.
    rule_health_alerts: bool = True
    rule_health_interval_s: float = Field(default=30.0, gt=0)
    rule_health_window_s: float = Field(default=3600.0, gt=0)  # the figures' window (erroring looks at 5 min)
    rule_health_cooldown_s: float = Field(default=900.0, ge=0)  # at most one firing per rule this often

    # OTLP/HTTP receiver (`evalstream otlp`)
    otlp_host: str = "127.0.0.1"
    otlp_port: int = Field(default=4318, ge=0, le=65535)
    otlp_token: SecretStr | None = None  # clients must send `Authorization: Bearer <token>` when set
    otlp_max_request_bytes: int = Field(default=20 * 1024 * 1024, ge=1024)  # before and after gzip
    otlp_default_project: str = Field(default="default", min_length=1)  # for spans without evalstream.project

    log_level: str = "info"
    # SIGINT / SIGTERM: a graceful stop (the sink commits only what it stored), ended by force after this long
    stop_timeout_s: float = Field(default=10.0, ge=2)

    @field_validator("trace_url_template", "alert_dashboard_url_template")
    @classmethod
    def _template_formats(cls, value: str | None, info: Any) -> str | None:
        """A bad template would otherwise fail inside the alerter, on the first alert."""
        if value:
            sample = {"trace_id": "t", "alert_rule": "a", "rule": "r", "from_ms": 0, "to_ms": 1}
            try:
                value.format(**sample)
            except (KeyError, IndexError, ValueError) as exc:
                raise ValueError(f"EVALSTREAM_{info.field_name.upper()}={value!r}: {exc!r}; use "
                                 f"{{{'}, {'.join(sample)}}} (double braces for literal ones)") from None
        return value

    @field_validator("roles")
    @classmethod
    def _known_roles(cls, value: str) -> str:
        chosen = [r.strip() for r in value.split(",") if r.strip()]
        unknown = sorted(set(chosen) - set(ROLES) - set(OPTIONAL_ROLES))
        if unknown:
            raise ValueError(f"unknown role(s) {', '.join(unknown)}: choose from {', '.join(ROLES + OPTIONAL_ROLES)}")
        return ",".join(chosen)

    @property
    def role_set(self) -> frozenset[str]:
        return frozenset(self.roles.split(",")) if self.roles else frozenset()

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.kafka_security_protocol.startswith("SASL") and not (self.kafka_sasl_username and
                                                                    self.kafka_sasl_password):
            raise ValueError("EVALSTREAM_KAFKA_SECURITY_PROTOCOL=SASL_* needs EVALSTREAM_KAFKA_SASL_USERNAME and "
                             "EVALSTREAM_KAFKA_SASL_PASSWORD")
        if self.slack_bot_token and not self.slack_channel:
            raise ValueError("EVALSTREAM_SLACK_BOT_TOKEN needs EVALSTREAM_SLACK_CHANNEL")
        return self

    @property
    def fetch_max_bytes(self) -> int:
        """Consumers fetch more than the message limit, so an oversized message is read and dead-lettered
        instead of stalling its partition."""
        return max(2 * self.max_message_bytes, 16 * 1024 * 1024)

    @property
    def run_file(self) -> Path:
        return self.data_dir / "run.json"
