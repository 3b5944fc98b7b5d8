"""Pure: the operating sections of the config ([metrics], [dashboard], [logging]): what an operator sees."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, StrictBool

# The environment variables holding these sections' secrets (config.py reads them; logs.py redacts them).
METRICS_TOKEN_ENV = "ECR_GATE_METRICS_TOKEN"  # noqa: S105 - a variable name, not a secret
DASHBOARD_PASSWORD_ENV = "ECR_GATE_DASHBOARD_PASSWORD"  # noqa: S105 - a variable name


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MetricsSettings(_Model):
    """Prometheus metrics: /metrics on the web process, and an HTTP port of the worker's own."""

    # On by default: counters cost a few microseconds, and an operator expects /metrics to be there.
    # With ECR_GATE_METRICS_TOKEN set, a scrape must send it as a bearer token, on every port below too.
    enabled: StrictBool = True
    # The worker's main process serves its (and its prefork children's) metrics here; 0 = not served.
    # 9808: unassigned in Prometheus' port allocation list, next to the exporters teams already run.
    worker_port: int = Field(9808, ge=0, le=65535)
    # The events process' port (its SQS receive counters); 0 = not served.
    events_port: int = Field(0, ge=0, le=65535)
    # Where the worker binds: all interfaces, as a scrape target on its host; 127.0.0.1 keeps it local.
    bind: str = "0.0.0.0"  # noqa: S104 - a scrape target is reached from the Prometheus host


class DashboardSettings(_Model):
    """The read-only dashboard at /dashboard: off unless enabled, behind HTTP Basic auth."""

    enabled: StrictBool = False
    # The Basic auth user; the password comes from ECR_GATE_DASHBOARD_PASSWORD (required when enabled).
    username: str = Field("ecr-scan-gate", min_length=1, max_length=64, pattern=r"^[^:\s]+$")
    # Exceptions ending within this many days are listed as "expiring soon": two weeks leaves time to fix.
    expiring_within_days: int = Field(14, ge=1, le=365)
    # Recent verdicts listed; the store keeps the newest 1,000 (bot/adapters/history.py).
    recent: int = Field(50, ge=1, le=1000)
    # Wrong credentials accepted per minute, over all web processes; past it every login (right ones too)
    # gets 429 until the minute ends. A person mistypes a few times; 20 a minute holds a guesser to
    # 28,800 tries a day against a password doctor asks to be 16+ random characters.
    failed_logins_per_minute: int = Field(20, ge=1, le=10_000)


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"  # one object per line, with gate, project, pipeline and reason fields on every line


class LoggingSettings(_Model):
    format: LogFormat = LogFormat.TEXT
    level: str = Field("INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")
