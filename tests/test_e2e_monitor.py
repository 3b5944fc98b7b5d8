"""End to end with [monitor] on: a merged image rescanned, its repository's one GitLab issue opened, kept, closed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.adapters.queue import make_celery
from bot.config import load_settings
from tests.fakes.ecr import SCAN_OP, basic_finding
from tests.harness import Scenario, wait_for
from tests.stack import Stack

CVE_1 = basic_finding("CVE-2026-1001", "CRITICAL", "openssl", "3.0.1", "3.0.9")
CVE_2 = basic_finding("CVE-2026-1002", "HIGH", "zlib", "1.2.11", "1.2.13")
LABEL = "ecr-scan-gate"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # interval of an hour: beat never rescans by itself here; each test asks for the rescan it needs.
    monitor = {"enabled": True, "interval_s": 3600, "keep_digests": 2}
    with Stack(Path(tmp_path_factory.mktemp("monitor")), monitor=monitor, timeout_s=20) as running:
        yield running


def rescan_now(stack: Stack) -> None:
    """What beat does once a day: one monitor.rescan_all."""
    settings = load_settings(Path(stack.env["ECR_GATE_CONFIG"]), stack.env)
    make_celery(settings).send_task("monitor.rescan_all")


def merged(stack: Stack, findings: list[dict[str, Any]] | None = None) -> tuple[Scenario, str]:
    """A default-branch pipeline that pushed and passed app: its digest is now watched."""
    s = stack.scenario()
    digest = s.push("app")
    s.script("app", [{"status": "COMPLETE", "findings": findings or []}])
    body = s.push_pipeline_body()
    assert stack.deliver("Pipeline Hook", body, None).status_code == 202
    assert s.wait_status("app")["status"] == "success"
    redis = stack.store()
    wait_for(lambda: redis.hexists(f"{stack.prefix}:monitor:watched:{s.project_id}:app", digest), 20, "the watch")
    return s, digest


def rescan_answers(stack: Stack, s: Scenario, *final: dict[str, Any]) -> None:
    """ECR's answers from now on for the merged image (scripted by its tag, which answers for its digest too)."""
    stack.ecr.script("app", tag=s.tag("app"), steps=[{"status": "IN_PROGRESS"}, *final])


def issues(stack: Stack, s: Scenario) -> list[dict[str, Any]]:
    return stack.gitlab.issues(s.project_id)


def wait_issue(stack: Stack, s: Scenario, *needles: str, state: str = "opened", timeout: float = 40) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        mine = issues(stack, s)
        if len(mine) == 1 and mine[0]["state"] == state and all(n in mine[0]["description"] for n in needles):
            return mine[0]
        return None

    return wait_for(found, timeout, f"one {state} issue holding {needles}")


def test_a_new_cve_opens_one_issue_more_update_it_and_a_fix_closes_it(stack: Stack) -> None:
    s, digest = merged(stack)
    rescan_answers(stack, s, {"status": "COMPLETE", "findings": [CVE_1]})
    rescan_now(stack)
    first = wait_issue(stack, s, "CVE-2026-1001", "3.0.9", digest, f"pipeline {s.pipeline_id}")
    assert first["confidential"] is True and LABEL in first["labels"]
    assert "1 new blocking finding" in first["title"]
    rescan_answers(stack, s, {"status": "COMPLETE", "findings": [CVE_1, CVE_2]})
    rescan_now(stack)
    second = wait_issue(stack, s, "CVE-2026-1001", "CVE-2026-1002")
    assert second["iid"] == first["iid"] and "2 new blocking findings" in second["title"]
    rescan_answers(stack, s, {"status": "COMPLETE", "findings": []})
    rescan_now(stack)
    closed = wait_issue(stack, s, state="closed")
    assert closed["iid"] == first["iid"]
    notes = stack.gitlab.issue_notes(s.project_id, first["iid"])
    assert any("clean or no longer deployed" in n["body"] for n in notes)
    # A new CVE later reopens the same issue: never a second one.
    rescan_answers(stack, s, {"status": "COMPLETE", "findings": [CVE_2]})
    rescan_now(stack)
    again = wait_issue(stack, s, "CVE-2026-1002")
    assert again["iid"] == first["iid"] and len(issues(stack, s)) == 1


def test_findings_known_when_the_image_was_let_through_are_no_news(stack: Stack) -> None:
    low = basic_finding("CVE-2026-1003", "LOW", "bash", "5.1", "5.2")
    s, digest = merged(stack, [low])
    rescan_answers(stack, s, {"status": "COMPLETE", "findings": [low]})
    rescan_now(stack)
    redis = stack.store()
    key = f"{stack.prefix}:monitor:watched:{s.project_id}:app"
    wait_for(lambda: '"checked_at":0.0' not in (redis.hget(key, digest) or ""), 30, "the rescan to be recorded")
    assert issues(stack, s) == []


def test_an_image_ecr_no_longer_scans_is_reported_as_unknown(stack: Stack) -> None:
    s, digest = merged(stack)
    rescan_answers(stack, s, {"status": "SCAN_ELIGIBILITY_EXPIRED", "description": "scan eligibility expired"})
    rescan_now(stack)
    issue = wait_issue(stack, s, "Not scanned any more", "**unknown** (not clean)", "SCAN_ELIGIBILITY_EXPIRED")
    assert "no longer scanned" in issue["title"]


def test_the_24h_scan_quota_is_no_error_and_throttling_is_retried(stack: Stack) -> None:
    s, digest = merged(stack)
    stack.ecr.script(
        "app",
        digest=digest,
        op="StartImageScan",
        steps=[{"error": "ThrottlingException"}, {"error": "LimitExceededException"}],
    )
    rescan_answers(stack, s, {"status": "COMPLETE", "findings": [CVE_1]})
    rescan_now(stack)
    wait_issue(stack, s, "CVE-2026-1001")
    starts = [c for c in stack.ecr.calls("StartImageScan", "app") if c.image == digest]
    assert [c.error for c in starts] == ["ThrottlingException", "LimitExceededException"]
    assert any(c.image == digest for c in stack.ecr.calls(SCAN_OP, "app"))


def test_the_old_scan_still_answered_after_startimagescan_is_not_the_rescans_result(stack: Stack) -> None:
    # Right after StartImageScan, ECR can still answer yesterday's COMPLETE (clean here) until the new scan
    # starts. Taken for the rescan, it would hide the CVE the new scan finds.
    s, digest = merged(stack)
    stack.ecr.script("app", digest=digest, op="StartImageScan", steps=[{"status": "IN_PROGRESS"}])
    yesterday = {"status": "COMPLETE", "findings": [], "completed_ago_s": 86_400}
    stack.ecr.script(
        "app",
        tag=s.tag("app"),
        steps=[yesterday, yesterday, {"status": "IN_PROGRESS"}, {"status": "COMPLETE", "findings": [CVE_1]}],
    )
    rescan_now(stack)
    wait_issue(stack, s, "CVE-2026-1001", digest)
    reads = [c for c in stack.ecr.calls(SCAN_OP, "app") if c.image in (digest, s.tag("app"))]
    assert len(reads) >= 4  # both old answers were read and asked again, not believed


def test_never_two_issues_across_a_worker_kill_a_redis_restart_and_a_lost_redis(stack: Stack) -> None:
    shipped = [merged(stack) for _ in range(4)]
    for s, _ in shipped:
        rescan_answers(stack, s, {"status": "COMPLETE", "findings": [CVE_1]})
        # GitLab slow to create issues: the kill below lands while POSTs are in flight.
        stack.gitlab.inject_fault("POST", rf"/projects/{s.project_id}/issues$", delay_s=1.5)
    rescan_now(stack)
    wait_for(lambda: any(issues(stack, s) for s, _ in shipped), 30, "the first issue")
    stack.workers[0].kill()  # SIGKILL, children included: the tasks in hand are lost
    stack.start_worker(0)
    stack.redis.restart(down_s=1.0)  # AOF: queued tasks and records survive
    wait_for(stack.redis.ping, 30, "Redis back")
    rescan_now(stack)
    for s, _ in shipped:
        wait_issue(stack, s, "CVE-2026-1001")
    # A Redis that lost everything the bot remembers about issues: the marker in GitLab still finds each one.
    redis = stack.store()
    for key in redis.scan_iter(f"{stack.prefix}:monitor:issue:*"):
        redis.delete(key)
    for s, _ in shipped:
        rescan_answers(stack, s, {"status": "COMPLETE", "findings": [CVE_1, CVE_2]})
    rescan_now(stack)
    for s, _ in shipped:
        # The killed worker's issue locks lapse after their 60 s: until then updates wait (and lose nothing).
        wait_issue(stack, s, "CVE-2026-1002", timeout=120)
    time.sleep(2.0)  # any late duplicate would have landed by now
    assert [len(issues(stack, s)) for s, _ in shipped] == [1, 1, 1, 1]
