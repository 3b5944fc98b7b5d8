"""Fault injection against the real processes: kill workers, restart Redis, fail GitLab and ECR — fail closed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.config import load_settings
from bot.core.report import MARKER
from tests import harness
from tests.fakes.ecr import basic_finding
from tests.harness import PUSH_API, PUSH_APP, Scenario, wait_for
from tests.stack import Stack

FINAL = ("success", "failed", "canceled")
HIGH = basic_finding("CVE-2023-44487", "HIGH", "nghttp2", "1.43.0-1", "1.43.0-1+deb11u1")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with Stack(Path(tmp_path_factory.mktemp("faults"))) as running:
        yield running
        prefix = running.env and load_prefix(running)
        leaked = harness.redis_keys_holding(running.redis.url, prefix, (harness.GITLAB_TOKEN, harness.WEBHOOK_SECRET))
        assert not leaked, leaked


def load_prefix(stack: Stack) -> str:
    return load_settings(stack.env["ECR_GATE_CONFIG"], env=stack.env).redis.key_prefix


def final_statuses(s: Scenario, repository: str) -> list[dict]:
    """Every final status job the gate ever posted (including ones later hidden)."""
    name = f"ecr-scan-gate/{repository}"
    return [st for st in s.gitlab.statuses(s.project_id, s.sha) if st["name"] == name and st["status"] in FINAL]


def assert_end_state(s: Scenario, expected: dict[str, str]) -> None:
    """Exactly one final status per gate, the expected verdicts, one note on the MR."""
    for repository, state in expected.items():
        assert s.wait_status(repository, timeout=60)["status"] == state
    wait_for(
        lambda: all(f"ecr-scan-gate/{r}" in n["body"] for n in s.notes() for r in expected) and s.notes(),
        60,
        "the note with every image",
    )
    time.sleep(1.0)  # let any late duplicate land before counting
    for repository, state in expected.items():
        finals = final_statuses(s, repository)
        assert [f["status"] for f in finals] == [state], finals
    notes = [n for n in s.notes() if MARKER in n["body"]]
    assert len(notes) == 1, [n["id"] for n in notes]


def start_both(s: Scenario, app_steps: list[dict], api_steps: list[dict]) -> None:
    s.push("app")
    s.push("api")
    s.script("app", app_steps)
    s.script("api", api_steps)
    assert s.pipeline_event("running").status_code == 202
    s.wait_status("app", {"pending"}, timeout=20)
    assert s.job_event(PUSH_APP).status_code == 202
    assert s.job_event(PUSH_API).status_code == 202


def test_worker_sigkill_mid_poll_loses_no_gate(stack: Stack):
    s = stack.scenario()
    start_both(
        s,
        [{"status": "IN_PROGRESS"}] * 4 + [{"status": "COMPLETE", "findings": []}],
        [{"status": "IN_PROGRESS"}] * 4 + [{"status": "COMPLETE", "findings": [HIGH]}],
    )
    s.wait_status("app", {"running"}, timeout=20)
    stack.workers[0].kill()  # SIGKILL the whole worker, children included: tasks in hand are lost
    time.sleep(1.0)
    stack.start_worker(0)
    assert_end_state(s, {"app": "success", "api": "failed"})


def test_redis_restart_mid_run(stack: Stack):
    s = stack.scenario()
    start_both(
        s,
        [{"status": "IN_PROGRESS"}] * 3 + [{"status": "COMPLETE", "findings": []}],
        [{"status": "IN_PROGRESS"}] * 3 + [{"status": "COMPLETE", "findings": []}],
    )
    stack.redis.stop()
    # While Redis is down the receiver refuses work (GitLab records a failed delivery to resend).
    down = s.pipeline_event("running", key="resend-after-redis-restart")
    assert down.status_code == 503
    time.sleep(1.0)
    stack.redis.start()
    again = s.pipeline_event("running", key="resend-after-redis-restart")
    assert again.status_code in (200, 202)
    assert_end_state(s, {"app": "success", "api": "success"})


def test_gitlab_errors_are_retried_to_exactly_one_final_status(stack: Stack):
    s = stack.scenario()
    path = rf"/projects/{s.project_id}/statuses/"
    stack.gitlab.inject_fault("POST", path, status=502, times=2)
    stack.gitlab.inject_fault("POST", path, status=429, times=1, retry_after=1)
    stack.gitlab.inject_fault("POST", path, status=409, times=1)
    stack.gitlab.inject_fault("POST", rf"/projects/{s.project_id}/merge_requests/\d+/notes", status=500, times=2)
    start_both(s, [{"status": "COMPLETE", "findings": []}], [{"status": "COMPLETE", "findings": [HIGH]}])
    assert_end_state(s, {"app": "success", "api": "failed"})


def test_note_post_timeout_does_not_post_twice(stack: Stack):
    s = stack.scenario()
    # GitLab stores the note but the answer arrives after the bot's 5 s timeout: the retry must edit it.
    stack.gitlab.inject_fault("POST", rf"/projects/{s.project_id}/merge_requests/\d+/notes", delay_s=6, times=1)
    start_both(s, [{"status": "COMPLETE", "findings": []}], [{"status": "COMPLETE", "findings": []}])
    assert_end_state(s, {"app": "success", "api": "success"})
    wait_for(lambda: all("PASSED" in n["body"] for n in s.notes()), 30, "note edited")


def test_ecr_throttling_and_server_errors_are_retried(stack: Stack):
    s = stack.scenario()
    throttled = [{"error": "ThrottlingException"}] * 3 + [{"error": "ServerException", "http": 500}]
    start_both(s, throttled + [{"status": "COMPLETE", "findings": []}], [{"status": "COMPLETE", "findings": []}])
    assert_end_state(s, {"app": "success", "api": "success"})


def test_lost_job_event_is_found_by_the_sweep(stack: Stack):
    s = stack.scenario()
    s.push("app")
    s.push("api")
    s.script("app", [{"status": "COMPLETE", "findings": []}])
    s.script("api", [{"status": "COMPLETE", "findings": []}])
    assert s.pipeline_event("running").status_code == 202
    s.wait_status("app", {"pending"}, timeout=20)
    # The push jobs succeed but GitLab's job events never reach the bot.
    stack.gitlab.set_job_status(s.jobs[PUSH_APP], "success")
    stack.gitlab.set_job_status(s.jobs[PUSH_API], "success")
    assert_end_state(s, {"app": "success", "api": "success"})


def test_duplicates_and_out_of_order_deliveries_change_nothing(stack: Stack):
    s = stack.scenario()
    s.push("app")
    s.push("api")
    s.script("app", [{"status": "COMPLETE", "findings": [HIGH]}])
    s.script("api", [{"status": "COMPLETE", "findings": []}])
    # Job events before their pipeline event, each delivered twice with the same Idempotency-Key.
    assert s.job_event(PUSH_APP, key="job-app").status_code == 202
    assert s.job_event(PUSH_APP, key="job-app").json()["status"] == "duplicate"
    assert s.pipeline_event("running", key="pipe-1").status_code == 202
    assert s.pipeline_event("running", key="pipe-1").json()["status"] == "duplicate"
    assert s.job_event(PUSH_API, key="job-api").status_code == 202
    assert_end_state(s, {"app": "failed", "api": "success"})
    # A stale "running" event and a "canceled" one after the verdicts: nothing changes.
    s.pipeline_event("running")
    s.pipeline_event("canceled")
    time.sleep(3)
    assert_end_state(s, {"app": "failed", "api": "success"})


def test_no_success_without_a_complete_scan_read(stack: Stack):
    s = stack.scenario()
    start_both(s, [{"status": "COMPLETE", "no_findings_object": True}], [{"error": "AccessDeniedException"}])
    assert_end_state(s, {"app": "failed", "api": "failed"})


def test_failed_push_job_is_canceled_by_the_sweep(stack: Stack):
    s = stack.scenario()
    assert s.pipeline_event("running").status_code == 202
    s.wait_status("app", {"pending"}, timeout=20)
    # The push jobs fail; their job events are ignored (a retry may follow) and our pending status
    # keeps the pipeline running, so no pipeline event will say it ended: the sweep must.
    assert s.job_event(PUSH_APP, "failed").json()["status"] == "ignored"
    stack.gitlab.set_job_status(s.jobs[PUSH_API], "canceled")
    assert_end_state(s, {"app": "canceled", "api": "canceled"})


def test_final_status_post_timeout_is_not_posted_twice(stack: Stack):
    """GitLab stores the verdict but answers after the bot's timeout: the retry must see it, not re-post.

    Re-posting a final state is not idempotent at GitLab (a new status job hides the first), which the
    soak run caught before this was guarded.
    """
    s = stack.scenario()
    start_both(
        s,
        [{"status": "IN_PROGRESS"}] * 3 + [{"status": "COMPLETE", "findings": []}],
        [{"status": "IN_PROGRESS"}] * 3 + [{"status": "COMPLETE", "findings": [HIGH]}],
    )
    s.wait_status("app", {"running"}, timeout=20)
    s.wait_status("api", {"running"}, timeout=20)
    stack.gitlab.inject_fault("POST", rf"/projects/{s.project_id}/statuses/", delay_s=6, times=2)
    assert_end_state(s, {"app": "success", "api": "failed"})


def test_lost_pipeline_task_is_replayed_from_the_receivers_inbox(stack: Stack):
    """A 202'd delivery whose queued task vanishes (kombu can drop a message a dying worker held)."""
    s = stack.scenario()
    s.push("app")
    s.push("api")
    s.script("app", [{"status": "COMPLETE", "findings": []}])
    s.script("api", [{"status": "COMPLETE", "findings": [HIGH]}])
    stack.workers[0].stop()
    try:
        assert s.pipeline_event("running").status_code == 202
        queue = f"{load_prefix(stack)}:celery:ecr-scan-gate"
        assert stack.store().delete(queue) == 1  # the task is gone; only the receiver's inbox entry remains
        stack.gitlab.set_job_status(s.jobs[PUSH_APP], "success")
        stack.gitlab.set_job_status(s.jobs[PUSH_API], "success")
    finally:
        stack.start_worker(0)
    assert_end_state(s, {"app": "success", "api": "failed"})
