"""End to end with events on (gunicorn, worker, beat, the events process, Redis, fake GitLab, ECR double + SQS)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes.ecr import SCAN_OP, basic_finding, enhanced_finding
from tests.fakes.ecr.events import EventSpec, ecr_image_action_event, inspector2_finding_event
from tests.harness import PUSH_APP, Scenario, wait_for
from tests.stack import Stack, free_port

BACKSTOP_S = 10.0
HIGH = basic_finding("CVE-2023-44487", "HIGH", "nghttp2", "1.43.0-1", "1.43.0-1+deb11u1")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # A backstop of 10 s and a sweep that takes 30 s to call a gate stuck: a verdict within a few seconds of
    # the scan can only have come from its event, and a start without the job event only from the PUSH.
    events = {"wait_s": 20, "backstop_interval_s": BACKSTOP_S, "drift_after_s": 2, "visibility_timeout_s": 5}
    workdir = Path(tmp_path_factory.mktemp("events"))
    port = free_port()  # the events process' metrics port
    metrics = {"events_port": port, "bind": "127.0.0.1"}
    # [monitor] on for the Inspector finding test: its rescans come only from events here (beat's are hourly).
    monitor = {"enabled": True, "interval_s": 3600, "finding_settle_s": 2}
    with Stack(
        workdir, events=events, timeout_s=60, stuck_after=30, grace=5, metrics=metrics, monitor=monitor
    ) as running:
        running.events_metrics = f"http://127.0.0.1:{port}/metrics"  # type: ignore[attr-defined]
        yield running


def started(stack: Stack, *, pipeline: bool = True) -> Scenario:
    s = stack.scenario()
    s.push("app")
    if pipeline:
        assert s.pipeline_event("running").status_code == 202
        assert s.wait_status("app", {"pending"}, timeout=20)
    return s


def timeline(stack: Stack, s: Scenario, final: dict[str, Any], *, in_progress_s: float = 1.5, **spec: Any) -> None:
    events = None if spec.pop("lost", False) else EventSpec(queue_url=stack.queue_url, **spec)
    status = "ACTIVE" if spec.get("scanner") == "enhanced" else "IN_PROGRESS"
    steps = [{"status": status, "for_s": in_progress_s}, final]
    s.ecr.script("app", tag=s.tag("app"), steps=steps, events=events)


def scans(stack: Stack, s: Scenario) -> int:
    tag = s.tag("app")
    names = {tag, stack.ecr.digest_of("app", tag)}
    return sum(1 for c in stack.ecr.calls(SCAN_OP, "app") if c.image in names)


def completed_at(stack: Stack, s: Scenario) -> float:
    done = stack.ecr.completion_time("app", tag=s.tag("app"))
    assert done is not None
    return done


def final_posts(stack: Stack, s: Scenario) -> list[dict[str, Any]]:
    return [
        st
        for st in stack.gitlab.statuses(s.project_id, s.sha)
        if st["name"] == "ecr-scan-gate/app" and st["status"] in ("success", "failed")
    ]


def test_a_scan_event_brings_the_verdict_long_before_the_backstop_with_one_read(stack: Stack) -> None:
    s = started(stack)
    assert s.job_event(PUSH_APP).status_code == 202
    timeline(stack, s, {"status": "COMPLETE", "findings": [HIGH]})
    status = s.wait_status("app", timeout=30)
    seen = time.time()
    assert status["status"] == "failed" and "HIGH" in status["description"]
    assert seen - completed_at(stack, s) < BACKSTOP_S / 2  # not the backstop's read: the event's
    assert scans(stack, s) == 1  # no read before the scan was done, one after
    assert len(final_posts(stack, s)) == 1


def test_a_lost_event_only_delays_the_verdict_to_the_backstop(stack: Stack) -> None:
    s = started(stack)
    assert s.job_event(PUSH_APP).status_code == 202
    pushed = time.time()
    timeline(stack, s, {"status": "COMPLETE", "findings": []}, lost=True)
    status = s.wait_status("app", timeout=40)
    assert status["status"] == "success"
    assert time.time() - pushed >= BACKSTOP_S - 1  # read by the backstop, as no event came
    assert scans(stack, s) == 1


def test_a_duplicated_event_reads_ecr_once_and_posts_one_verdict(stack: Stack) -> None:
    s = started(stack)
    assert s.job_event(PUSH_APP).status_code == 202
    before = len(stack.ecr.events_sent())
    timeline(stack, s, {"status": "COMPLETE", "findings": [HIGH]}, copies=3)
    assert s.wait_status("app", timeout=30)["status"] == "failed"
    copies = wait_for(lambda: stack.ecr.events_sent()[before:] if len(stack.ecr.events_sent()) >= before + 3 else None)
    assert len({c.event_id for c in copies}) == 1 and not any(c.error for c in copies)
    redis = stack.store()
    # Each copy was handled once its marker shows: only the first acted, the others were dropped as seen.
    wait_for(lambda: redis.exists(f"{stack.prefix}:event:{copies[0].event_id}"), 10, "the event to be handled")
    time.sleep(1.0)
    assert scans(stack, s) == 1
    assert len(final_posts(stack, s)) == 1


def test_an_event_before_the_job_event_makes_the_first_read_immediate(stack: Stack) -> None:
    s = started(stack)
    timeline(stack, s, {"status": "COMPLETE", "findings": []}, in_progress_s=0.3)
    redis = stack.store()
    prefix = stack.prefix
    wait_for(lambda: redis.exists(f"{prefix}:scan:us-east-1:app:{s.tag('app')}"), 15, "the scan event to be recorded")
    assert s.status("app")["status"] == "pending"  # the push job's event has not come yet
    asked = time.time()
    assert s.job_event(PUSH_APP).status_code == 202
    assert s.wait_status("app", timeout=30)["status"] == "success"
    assert time.time() - asked < BACKSTOP_S / 2
    assert scans(stack, s) == 1


def test_an_inspector_event_names_the_repository_by_arn_and_findings_are_read_until_stable(stack: Stack) -> None:
    s = started(stack)
    assert s.job_event(PUSH_APP).status_code == 202
    critical = enhanced_finding("CVE-2024-1111", "CRITICAL", "glibc", "2.31", "2.32")
    timeline(stack, s, {"status": "ACTIVE", "enhanced_findings": [critical]}, scanner="enhanced")
    status = s.wait_status("app", timeout=30)
    assert status["status"] == "failed" and "CRITICAL" in status["description"]
    assert stack.ecr.events_sent()[-1].detail_type == "Inspector2 Scan"  # its repository-name is an ARN
    # Woken by it (so the ARN named the gate's repository), not by the backstop:
    assert time.time() - completed_at(stack, s) < BACKSTOP_S / 2
    assert scans(stack, s) == 2  # the event's read, and the one a settle interval later that agreed


def test_a_push_event_starts_a_gate_whose_job_event_was_lost(stack: Stack) -> None:
    s = started(stack)
    s.gitlab.set_job_status(s.jobs[PUSH_APP], "success")  # GitLab knows; its Job Hook never reaches us
    timeline(stack, s, {"status": "COMPLETE", "findings": []}, push=True)
    assert s.wait_status("app", timeout=20)["status"] == "success"  # the sweep would take 30 s to notice
    assert "push seen in ECR" in stack.workers[0].log_text()


def test_a_push_no_gate_waits_for_is_counted_as_config_drift(stack: Stack) -> None:
    redis = stack.store()
    key = f"{stack.prefix}:drift"
    before = int(redis.hget(key, "us-east-1/app") or 0)
    digest = stack.ecr.push_image("app", "hand-pushed")
    stack.ecr.send_event(stack.queue_url, ecr_image_action_event("app", digest, tag="hand-pushed"))
    wait_for(lambda: int(redis.hget(key, "us-east-1/app") or 0) == before + 1, 20, "the drift to be counted")
    wait_for(lambda: "config drift: app:hand-pushed" in stack.workers[0].log_text(), 5, "the drift's log line")


def test_poison_goes_to_the_dead_letter_queue_and_the_queue_keeps_flowing(stack: Stack) -> None:
    stack.ecr.send_event(stack.queue_url, "this is not an event")
    wait_for(lambda: stack.ecr.queue_messages(stack.dead_letter_url, wait_s=1), 20, "the poison message in the DLQ")
    s = started(stack)
    assert s.job_event(PUSH_APP).status_code == 202
    timeline(stack, s, {"status": "COMPLETE", "findings": []})
    assert s.wait_status("app", timeout=30)["status"] == "success"
    assert stack.events is not None
    assert "is poison (message body is not JSON): moved to the dead-letter queue" in stack.events.log_text()


def test_the_events_process_counts_what_it_handled_on_its_metrics_port(stack: Stack) -> None:
    def counted(outcome: str) -> float:
        text = requests.get(stack.events_metrics, timeout=5).text  # type: ignore[attr-defined]
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "ecr_scan_gate_registry_events_total" and sample.labels == {"outcome": outcome}:
                    return sample.value
        return 0.0

    before_queued, before_dead = counted("queued"), counted("dead")
    stack.ecr.send_event(stack.queue_url, "still not an event")
    s = started(stack)
    assert s.job_event(PUSH_APP).status_code == 202
    timeline(stack, s, {"status": "COMPLETE", "findings": []})
    assert s.wait_status("app", timeout=30)["status"] == "success"
    wait_for(lambda: counted("queued") > before_queued and counted("dead") == before_dead + 1, 20, "the counts")


def test_inspector_findings_on_a_watched_digest_are_read_once_soon_and_open_its_issue(stack: Stack) -> None:
    # A default-branch pipeline passes app on a clean enhanced scan: [monitor] watches its digest.
    s = stack.scenario()
    digest = s.push("app")
    timeline(stack, s, {"status": "ACTIVE", "enhanced_findings": []}, scanner="enhanced")
    body = s.push_pipeline_body()
    assert stack.deliver("Pipeline Hook", body, None).status_code == 202
    assert s.wait_status("app", timeout=30)["status"] == "success"
    redis = stack.store()
    wait_for(lambda: redis.hexists(f"{stack.prefix}:monitor:watched:{s.project_id}:app", digest), 20, "the watch")
    # Days later Inspector finds a new CVE in it: ECR lists it, and one event comes per finding (and copies).
    cve = enhanced_finding("CVE-2026-7777", "CRITICAL", "openssl", "3.0.1", "3.0.15")
    stack.ecr.script("app", tag=s.tag("app"), steps=[{"status": "ACTIVE", "enhanced_findings": [cve]}])
    before = scans(stack, s)
    for name in ("CVE-2026-7777", "CVE-2026-7778", "CVE-2026-7779"):
        event = inspector2_finding_event("app", digest, (s.tag("app"),), cve=name)
        stack.ecr.send_event(stack.queue_url, event)
    sent = time.time()

    def opened() -> dict[str, Any] | None:
        mine = stack.gitlab.issues(s.project_id)
        return mine[0] if len(mine) == 1 and "CVE-2026-7777" in mine[0]["description"] else None

    issue = wait_for(opened, 40, "one issue naming the CVE Inspector found")
    assert digest in issue["description"] and issue["confidential"] is True
    assert time.time() - sent < 30  # not tomorrow's rescan: the finding events' one read (and its settle read)
    assert scans(stack, s) - before == 2  # one read for the three events, and the enhanced settle read
    assert "(CVE-2026-7777, ACTIVE)" in stack.workers[0].log_text()
