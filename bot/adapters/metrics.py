"""Prometheus metrics, named ecr_scan_gate_*: counters and histograms each process keeps, gauges read from Redis.

Under gunicorn and Celery prefork every process writes its own files in PROMETHEUS_MULTIPROC_DIR (set before
prometheus_client is first imported: bot/web/serving.py, workers/main.py) and a scrape adds them up.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import redis
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from bot.adapters import metrics_dir
from bot.core.models import epoch_of

if TYPE_CHECKING:
    from bot.adapters.store import Store

# *_created samples (one more series per label set) are not written in multiprocess mode either: leave them out
# everywhere, so every process exposes the same series.
disable_created_metrics()

DELIVERIES = Counter("ecr_scan_gate_deliveries", "Webhook deliveries, by the HTTP code answered", ["code"])
GATES_FINISHED = Counter(
    "ecr_scan_gate_gates_finished", "Gates given a verdict, by its reason and the gate's kind", ["reason", "kind"]
)
# From the push job's success to the verdict: scans take 10-90 s (the runbook), a timeout is 600 s by
# default, so the buckets are dense below 2 minutes and reach past the timeout.
PUSH_TO_VERDICT = Histogram(
    "ecr_scan_gate_push_to_verdict_seconds",
    "Seconds from the push job's success to the gate's verdict",
    ["reason"],
    buckets=(5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600, 900, 1800),
)
# From ECR's imageScanCompletedAt to the verdict: what events save. Polling at 15 s puts most under 15 s;
# the events backstop at 120 s; anything beyond a few minutes is a lost wake-up.
SCAN_TO_VERDICT = Histogram(
    "ecr_scan_gate_scan_to_verdict_seconds",
    "Seconds from ECR's scan completion to the gate's verdict (completed scans only)",
    buckets=(0.25, 0.5, 1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600),
)
ECR_CALLS = Counter("ecr_scan_gate_ecr_calls", "ECR API calls, by operation and outcome", ["operation", "outcome"])
GITLAB_CALLS = Counter(
    "ecr_scan_gate_gitlab_calls", "GitLab API calls, by operation and outcome", ["operation", "outcome"]
)
SWEEP_ACTIONS = Counter("ecr_scan_gate_sweep_actions", "What the sweep did to the gates it looked at", ["action"])
REGISTRY_EVENTS = Counter(
    "ecr_scan_gate_registry_events", "SQS messages the events process handled, by outcome", ["outcome"]
)

CHALLENGE = 'Bearer realm="ecr-scan-gate metrics"'

# Gates scanned per scrape for the open-gates gauge; past this the gauge says so with state="unscanned".
MAX_OPEN_SCANNED = 20_000


def scrape_allowed(authorization: str, token: str) -> bool:
    """Whether a scrape's Authorization header carries the bearer token (any scrape when no token is set)."""
    if not token:
        return True
    scheme, _, given = authorization.partition(" ")
    # Constant time, on bytes: the comparison must not tell an attacker how much of the token matched.
    # surrogateescape: a token from a non-UTF-8 environment, or a latin-1 header, compares without raising.
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode("utf-8", "surrogateescape"), token.encode("utf-8", "surrogateescape")
    )


def multiprocess_mode() -> bool:
    return bool(os.environ.get(metrics_dir.MULTIPROC_ENV))


def gate_finished(kind: str, reason: str, polling_since: float, completed_at: str, now: float) -> None:
    """Count one verdict; the histograms only where their start is known (a push seen, a scan completed)."""
    GATES_FINISHED.labels(reason=reason, kind=kind).inc()
    if polling_since > 0:
        PUSH_TO_VERDICT.labels(reason=reason).observe(max(0.0, now - polling_since))
    completed = epoch_of(completed_at)
    if completed is not None:
        SCAN_TO_VERDICT.observe(max(0.0, now - completed))


def ecr_outcome(code: str) -> str:
    """A small fixed set of outcomes from an AWS error code ("" = the call succeeded)."""
    if not code:
        return "ok"
    if "Throttl" in code or code in ("TooManyRequestsException", "RequestLimitExceeded", "LimitExceededException"):
        return "throttled"
    if "AccessDenied" in code or code in ("UnrecognizedClientException", "NoCredentials", "ExpiredToken"):
        return "denied"
    if code.endswith("NotFoundException"):
        return "not_found"
    return "error"


def gitlab_outcome(code: int | None) -> str:
    """ok, or the class of GitLab's refusal (None: no answer at all)."""
    if code is None:
        return "unreachable"
    if code < 400:
        return "ok"
    if code == 429:
        return "rate_limited"
    if code >= 500:
        return "server_error"
    return "client_error"


class RedisGauges(Collector):
    """Read at scrape time from Redis, so every process reports the same truth: open gates and queue depth."""

    def __init__(self, store: Store, queue_key: str) -> None:
        self.store = store
        self.queue_key = queue_key

    def collect(self) -> Iterator[GaugeMetricFamily]:
        states = GaugeMetricFamily(
            "ecr_scan_gate_open_gates", "Unfinished gates (and done ones not yet posted)", labels=["state"]
        )
        depth = GaugeMetricFamily("ecr_scan_gate_queue_depth", "Tasks waiting in the Celery queue", labels=["queue"])
        try:
            counts = self.store.open_gate_states(MAX_OPEN_SCANNED)
            queued = self.store.queue_length(self.queue_key)
        except redis.RedisError:  # a scrape while Redis is down reports the gauges as absent, not a 500
            return
        for state in ("waiting", "polling", "done"):
            states.add_metric([state], counts.pop(state, 0))
        for state, n in sorted(counts.items()):
            states.add_metric([state], n)
        depth.add_metric([self.queue_key.rsplit(":", 1)[-1]], queued)
        yield states
        yield depth


def exposition(store: Store | None = None, queue_key: str = "") -> bytes:
    """The text format of a scrape: this process' metrics (or every process' in multiprocess mode), plus the
    Redis gauges when a store is given."""
    registry = CollectorRegistry()
    if multiprocess_mode():
        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(REGISTRY)  # a registry is a collector: this process' own metrics
    if store is not None:
        registry.register(RedisGauges(store, queue_key))
    return generate_latest(registry)
