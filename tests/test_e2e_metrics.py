"""End to end: every metric moves on real gates (gunicorn's /metrics, 2 processes; the worker's port); JSON logs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests import harness
from tests.fakes.ecr import basic_finding
from tests.harness import PUSH_APP, Scenario, wait_for
from tests.stack import Stack, free_port

HIGH = basic_finding("CVE-2023-44487", "HIGH", "nghttp2", "1.43.0-1", "1.43.0-1+deb11u1")
TOKEN = "metrics-token-for-the-suite-0123456789"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # No worker at first: the queue-depth gauge is read while a delivery waits for one.
    port = free_port()
    with Stack(
        Path(tmp_path_factory.mktemp("metrics")),
        workers=0,
        metrics={"worker_port": port, "bind": "127.0.0.1"},
        logging={"format": "json"},
        extra_env={"ECR_GATE_METRICS_TOKEN": TOKEN},
    ) as running:
        running.worker_metrics = f"http://127.0.0.1:{port}/metrics"  # type: ignore[attr-defined]
        yield running


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def web(stack: Stack) -> Samples:
    answer = requests.get(f"{stack.base_url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"].startswith("text/plain")
    return parse(answer.text)


def worker(stack: Stack) -> Samples:
    answer = requests.get(stack.worker_metrics, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)  # type: ignore[attr-defined]
    assert answer.status_code == 200, answer.text
    return parse(answer.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def refused_without_the_token(url: str) -> None:
    missing = requests.get(url, timeout=5)
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"].startswith("Bearer")
    for wrong in ("Bearer nope", f"Basic {TOKEN}", f"Bearer {TOKEN}x", TOKEN):
        answer = requests.get(url, headers={"Authorization": wrong}, timeout=5)
        assert answer.status_code == 401, wrong
        assert TOKEN not in answer.text and "ecr_scan_gate" not in answer.text


def test_metrics_refuse_a_scrape_without_the_token(stack: Stack):
    refused_without_the_token(f"{stack.base_url}/metrics")


def test_every_metric_moves_on_a_real_gate(stack: Stack):
    s: Scenario = stack.scenario()
    s.push("app")
    s.script("app", [{"status": "IN_PROGRESS"}, {"status": "COMPLETE", "findings": [HIGH]}])
    before = web(stack)
    assert s.pipeline_event("running").status_code == 202
    # The delivery waits in the queue: no worker runs yet.
    after_delivery = web(stack)
    assert value(after_delivery, "ecr_scan_gate_deliveries_total", code="202") == (
        value(before, "ecr_scan_gate_deliveries_total", code="202") + 1
    )
    assert value(after_delivery, "ecr_scan_gate_queue_depth", queue="ecr-scan-gate") >= 1
    # An event the bot does not use is answered 200 (and counted so).
    assert stack.deliver("Push Hook", {"object_kind": "push"}, None).status_code == 200
    ignored = "ecr_scan_gate_deliveries_total"
    assert value(web(stack), ignored, code="200") == value(before, ignored, code="200") + 1

    stack.start_worker(0)
    s.wait_status("app", {"pending"}, timeout=30)
    waiting = wait_for(
        lambda: (m := web(stack)) and value(m, "ecr_scan_gate_open_gates", state="waiting") == 2 and m,
        20,
        "both gates (app, api) waiting in ecr_scan_gate_open_gates",
    )
    assert value(waiting, "ecr_scan_gate_queue_depth", queue="ecr-scan-gate") == 0
    # beat sweeps every 2 s: the waiting gate is looked at and left alone ("ok").
    wait_for(lambda: value(worker(stack), "ecr_scan_gate_sweep_actions_total", action="ok") >= 1, 20, "a sweep action")
    refused_without_the_token(stack.worker_metrics)  # type: ignore[attr-defined]  # the same token on the worker's port

    assert s.job_event(PUSH_APP, "success").status_code == 202
    assert s.wait_status("app")["status"] == "failed"
    s.wait_note("BLOCKED")  # the note's POST may come after the status
    m = wait_for(
        lambda: (
            (m := worker(stack))
            and value(m, "ecr_scan_gate_gates_finished_total", reason="blocked", kind="merge")
            and value(m, "ecr_scan_gate_gitlab_calls_total", operation="POST note", outcome="ok")
            and m
        ),
        20,
        "the verdict counted",
    )
    assert value(m, "ecr_scan_gate_gates_finished_total", reason="blocked", kind="merge") == 1
    assert value(m, "ecr_scan_gate_push_to_verdict_seconds_count", reason="blocked") == 1
    assert value(m, "ecr_scan_gate_push_to_verdict_seconds_sum", reason="blocked") > 0
    assert value(m, "ecr_scan_gate_scan_to_verdict_seconds_count") == 1
    # IN_PROGRESS, then COMPLETE: two reads, both answered.
    assert value(m, "ecr_scan_gate_ecr_calls_total", operation="DescribeImageScanFindings", outcome="ok") == 2
    assert value(m, "ecr_scan_gate_gitlab_calls_total", operation="POST statuses", outcome="ok") >= 3
    assert value(m, "ecr_scan_gate_gitlab_calls_total", operation="POST note", outcome="ok") >= 1
    # app is done, posted and noted: no longer open; api (its push job never ran) still waits.
    wait_for(
        lambda: (
            [value(web(stack), "ecr_scan_gate_open_gates", state=st) for st in ("waiting", "polling", "done")]
            == [1, 0, 0]
        ),
        30,
        "app's gate to leave the open gates",
    )


def test_failures_are_counted_by_outcome(stack: Stack):
    if not stack.workers:
        stack.start_worker(0)
    s = stack.scenario()
    s.push("app")
    s.script("app", [{"error": "AccessDeniedException"}])
    # GitLab answers the first status POST with a 503: counted, retried, then posted.
    stack.gitlab.inject_fault("POST", r"/statuses/", status=503, times=1)
    before = worker(stack)
    assert s.pipeline_event("running").status_code == 202
    s.wait_status("app", {"pending"}, timeout=30)
    assert s.job_event(PUSH_APP, "success").status_code == 202
    assert s.wait_status("app")["status"] == "failed"
    m = wait_for(
        lambda: (
            (m := worker(stack))
            and value(m, "ecr_scan_gate_gates_finished_total", reason="access_denied", kind="merge")
            and m
        ),
        20,
        "the access_denied verdict counted",
    )
    name = "ecr_scan_gate_ecr_calls_total"
    op = "DescribeImageScanFindings"
    assert value(m, name, operation=op, outcome="denied") == value(before, name, operation=op, outcome="denied") + 1
    assert value(m, "ecr_scan_gate_gitlab_calls_total", operation="POST statuses", outcome="server_error") >= 1


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_json_logs_carry_gate_project_pipeline_and_reason(stack: Stack):
    if not stack.workers:
        stack.start_worker(0)
    s = stack.scenario()
    s.push("app")
    s.script("app", [{"status": "COMPLETE", "findings": [HIGH]}])
    assert s.pipeline_event("running").status_code == 202
    s.wait_status("app", {"pending"}, timeout=30)
    assert s.job_event(PUSH_APP, "success").status_code == 202
    assert s.wait_status("app")["status"] == "failed"
    gate = f"gate:{s.project_id}:{s.pipeline_id}:app"
    lines = wait_for(
        lambda: [line for line in json_lines(stack.workers[0].log_text()) if line["gate"] == gate and line["reason"]],
        20,
        "the verdict's log line",
    )
    verdict = lines[0]
    assert verdict["reason"] == "blocked" and verdict["project"] == s.project_id
    assert verdict["pipeline"] == s.pipeline_id and "blocking" in verdict["message"]
    web_log = stack.web.log_text()  # type: ignore[union-attr]
    # The web process' every line is JSON, gunicorn's own (boots, exits) included.
    assert [line for line in web_log.splitlines() if line.strip() and not line.startswith("{")] == []
    assert any(r["logger"] == "gunicorn.error" for r in json_lines(web_log))
    # So is the worker's: Celery's banner is one JSON line, and the config's warning (the suite polls every
    # second), logged before Celery set up logging, was kept and comes out as JSON.
    worker_log = stack.workers[0].log_text()
    assert [line for line in worker_log.splitlines() if line.strip() and not line.startswith("{")] == []
    assert any("celery worker" in r["message"] and "ready" in r["message"] for r in json_lines(worker_log))
    assert any(r["message"].startswith("scan.poll_interval_s=") for r in json_lines(worker_log))
    records = json_lines(stack.workers[0].log_text()) + json_lines(web_log)
    assert records
    for record in records:
        assert {"time", "level", "logger", "message", "gate", "project", "pipeline", "reason"} <= set(record)
    # Every task of this pipeline logged its context: the pipeline event's lines name project and pipeline.
    mine = [r for r in records if r["project"] == s.project_id]
    assert any(r["logger"] == "bot.web.webhook" and r["pipeline"] == s.pipeline_id for r in mine)
    assert any(r["logger"] == "celery.app.trace" and r["gate"] == gate for r in mine)
    # Redaction still applies to JSON lines.
    whole = stack.workers[0].log_text() + stack.web.log_text()  # type: ignore[union-attr]
    assert harness.GITLAB_TOKEN not in whole and harness.WEBHOOK_SECRET not in whole and TOKEN not in whole
