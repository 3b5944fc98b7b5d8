"""Metrics in one process: the Redis gauges on real Redis, /metrics' auth, outcome labels, the Grafana dashboard."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from bot.adapters import metrics
from bot.adapters.store import Store
from bot.adapters.task_message import queue_key
from bot.core.models import Reason
from bot.core.policy import failed_verdict
from bot.web.app import create_app
from tests import inprocess
from tests.harness import Scenario

base, rt = inprocess.base, inprocess.rt
ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "docs" / "grafana-dashboard.json"


def families(text: str) -> dict[str, str]:
    """Metric family name -> type, for the ecr_scan_gate_ families."""
    return {f.name: f.type for f in text_string_to_metric_families(text) if f.name.startswith("ecr_scan_gate_")}


def sample_names(found: dict[str, str]) -> set[str]:
    """What a PromQL expression may name for each family (counters _total, histograms _bucket/_sum/_count)."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    return {name + suffix for name, kind in found.items() for suffix in suffixes[kind]}


def test_the_redis_gauges_count_open_gates_by_state_and_the_queue(rt, fake_gitlab, ecr):
    s = Scenario(fake_gitlab, ecr, lambda *a: None)
    waiting = inprocess.gate(rt, s, "app")
    polling = inprocess.gate(rt, s, "api")
    assert rt.store.start_polling(polling.key, 1.0, 100.0)
    rt.store.r.lpush(queue_key(rt.settings.redis.key_prefix), "m1", "m2", "m3")
    found = {
        (f.name, tuple(sorted(x.labels.items()))): x.value
        for f in text_string_to_metric_families(
            metrics.exposition(rt.store, queue_key(rt.settings.redis.key_prefix)).decode()
        )
        for x in f.samples
    }
    assert found[("ecr_scan_gate_open_gates", (("state", "waiting"),))] == 1
    assert found[("ecr_scan_gate_open_gates", (("state", "polling"),))] == 1
    assert found[("ecr_scan_gate_open_gates", (("state", "done"),))] == 0
    assert found[("ecr_scan_gate_queue_depth", (("queue", "ecr-scan-gate"),))] == 3
    # A verdict moves the gate to done (open until posted and noted); an expired record is told apart.
    assert rt.store.finish(waiting.key, failed_verdict(Reason.TIMEOUT, waiting.image))
    rt.store.r.delete(rt.store._k(polling.key))
    assert rt.store.open_gate_states(100) == {"done": 1, "expired": 1}
    assert rt.store.open_gate_states(1) == {"done": 1, "unscanned": 1}


def test_a_scrape_while_redis_is_down_still_answers_without_the_gauges():
    dead = Store.from_url("redis://127.0.0.1:1/0", 3600, socket_timeout_s=0.2)
    text = metrics.exposition(dead, "esg:celery:ecr-scan-gate").decode()
    assert "ecr_scan_gate_gates_finished" in text  # this process' own metrics
    assert "ecr_scan_gate_open_gates" not in text and "ecr_scan_gate_queue_depth" not in text


@pytest.mark.parametrize(
    ("code", "outcome"),
    [
        ("", "ok"),
        ("ThrottlingException", "throttled"),
        ("AccessDeniedException", "denied"),
        ("UnrecognizedClientException", "denied"),
        ("ImageNotFoundException", "not_found"),
        ("ScanNotFoundException", "not_found"),
        ("ServerException", "error"),
    ],
)
def test_ecr_outcomes_are_a_small_fixed_set(code, outcome):
    assert metrics.ecr_outcome(code) == outcome


@pytest.mark.parametrize(
    ("code", "outcome"),
    [
        (None, "unreachable"),
        (200, "ok"),
        (201, "ok"),
        (404, "client_error"),
        (429, "rate_limited"),
        (503, "server_error"),
    ],
)
def test_gitlab_outcomes(code, outcome):
    assert metrics.gitlab_outcome(code) == outcome


def test_gate_finished_observes_only_what_it_knows():
    def count(name: str, **labels: str) -> float:
        return metrics.REGISTRY.get_sample_value(name, labels) or 0.0

    before = count("ecr_scan_gate_gates_finished_total", reason="canceled", kind="merge")
    pushes = count("ecr_scan_gate_push_to_verdict_seconds_count", reason="canceled")
    scans = count("ecr_scan_gate_scan_to_verdict_seconds_count")
    metrics.gate_finished("merge", "canceled", 0.0, "", 1000.0)  # never pushed, no scan
    assert count("ecr_scan_gate_gates_finished_total", reason="canceled", kind="merge") == before + 1
    assert count("ecr_scan_gate_push_to_verdict_seconds_count", reason="canceled") == pushes
    metrics.gate_finished("merge", "canceled", 990.0, "1970-01-01 00:16:35+00:00", 1000.0)
    assert count("ecr_scan_gate_push_to_verdict_seconds_count", reason="canceled") == pushes + 1
    assert count("ecr_scan_gate_scan_to_verdict_seconds_count") == scans + 1
    metrics.gate_finished("merge", "canceled", 990.0, "not a time", 1000.0)
    assert count("ecr_scan_gate_scan_to_verdict_seconds_count") == scans + 1


def test_metrics_can_be_off_or_behind_a_token(settings):
    off = settings.model_copy(update={"metrics": settings.metrics.model_copy(update={"enabled": False})})
    assert create_app(off).test_client().get("/metrics").status_code == 404
    guarded = settings.model_copy(update={"metrics_token": type(settings.metrics_token)("s3cret-token-value")})
    client = create_app(guarded).test_client()
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Basic s3cret-token-value"}).status_code == 401
    ok = client.get("/metrics", headers={"Authorization": "Bearer s3cret-token-value"})
    assert ok.status_code == 200 and b"ecr_scan_gate_deliveries" in ok.data
    assert create_app(settings).test_client().get("/metrics").status_code == 200  # no token set: open


@pytest.mark.parametrize(
    ("header", "allowed"),
    [
        ("Bearer s3cret-token-value", True),
        ("bearer s3cret-token-value", True),  # the scheme is case-insensitive (RFC 9110 11.1)
        ("Bearer  s3cret-token-value ", True),
        ("", False),
        ("Bearer", False),
        ("Bearer s3cret-token-valu", False),
        ("Bearer s3cret-token-value2", False),
        ("Basic s3cret-token-value", False),
        ("s3cret-token-value", False),
        ("Bearer s3cr\udcffet", False),  # not UTF-8: refused, never raised
    ],
)
def test_a_scrape_needs_the_exact_bearer_token(header: str, allowed: bool):
    assert metrics.scrape_allowed(header, "s3cret-token-value") is allowed
    assert metrics.scrape_allowed(header, "") is True  # no token set: any scrape


def test_the_worker_port_answers_only_with_the_token():
    from bot.adapters.metrics_server import serve

    server = serve("127.0.0.1", 0, "test", "s3cret-token-value")
    assert server is not None
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        assert requests.get(f"{url}/metrics", timeout=5).status_code == 401
        wrong = requests.get(f"{url}/metrics", headers={"Authorization": "Bearer nope"}, timeout=5)
        assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"] == metrics.CHALLENGE
        assert "ecr_scan_gate" not in wrong.text
        ok = requests.get(f"{url}/metrics", headers={"Authorization": "Bearer s3cret-token-value"}, timeout=5)
        assert ok.status_code == 200 and "# TYPE ecr_scan_gate_deliveries" in ok.text
        assert requests.get(f"{url}/other", timeout=5).status_code == 404
    finally:
        server.shutdown()
        server.server_close()
    # A port in use is logged and skipped, not fatal: a second worker on the same host.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert serve("127.0.0.1", taken.getsockname()[1], "test") is None


def test_a_delivery_is_counted_by_its_answer(settings):
    client = create_app(settings).test_client()

    def refused() -> float:
        return metrics.REGISTRY.get_sample_value("ecr_scan_gate_deliveries_total", {"code": "401"}) or 0.0

    before = refused()
    assert client.post("/webhook", json={}).status_code == 401
    assert refused() == before + 1


def test_the_grafana_dashboard_names_only_metrics_that_exist_and_shows_each(settings):
    found = families(create_app(settings).test_client().get("/metrics").get_data(as_text=True))
    found |= {"ecr_scan_gate_open_gates": "gauge", "ecr_scan_gate_queue_depth": "gauge"}  # from Redis
    assert len(found) == 10
    names = sample_names(found)
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"ecr_scan_gate_[a-z_]+", e)}
    assert used <= names, f"panels name metrics that do not exist: {sorted(used - names)}"
    assert {n for n in found if not any(u.startswith(n) for u in used)} == set(), "a metric no panel shows"
    assert all(p["datasource"]["uid"] == "${datasource}" for p in dashboard["panels"])


def test_the_dashboard_check_can_fail():
    names = sample_names({"ecr_scan_gate_gates_finished": "counter"})
    assert "ecr_scan_gate_gates_finished_total" in names
    assert "ecr_scan_gate_gates_finished" not in names and "ecr_scan_gate_gates_finished_bucket" not in names
