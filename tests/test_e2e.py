"""End to end, one test per verdict reason: webhook in → real worker → commit status and MR note out."""

from __future__ import annotations

import time

import pytest

from bot.core.report import MARKER
from tests.fakes.ecr import basic_finding, enhanced_finding
from tests.fakes.payloads import pipeline_payload
from tests.harness import PUSH_APP, Scenario

HIGH = basic_finding("CVE-2023-44487", "HIGH", "nghttp2", "1.43.0-1", "1.43.0-1+deb11u1")
LOW = basic_finding("CVE-2022-0001", "LOW", "zlib", "1.2.11", "1.2.12")


def run_gate(s: Scenario, steps: list[dict] | None, push: bool = True) -> dict:
    """Pipeline starts (pending), the push job succeeds, the worker polls; returns the final status."""
    if push:
        s.push("app")
    if steps is not None:
        s.script("app", steps)
    assert s.pipeline_event("running").status_code == 202
    pending = s.wait_status("app", {"pending"}, timeout=20)
    assert pending["pipeline_id"] == s.pipeline_id
    assert s.job_event(PUSH_APP, "success").status_code == 202
    return s.wait_status("app")


def assert_no_stray_pipelines(s: Scenario) -> None:
    # Statuses went to the MR pipeline by pipeline_id: none created an "external" pipeline.
    assert s.gitlab.pipelines(s.project_id, source="external") == []


def test_passed_after_in_progress(scenario: Scenario):
    final = run_gate(
        scenario, [{"status": "IN_PROGRESS"}, {"status": "IN_PROGRESS"}, {"status": "COMPLETE", "findings": [LOW]}]
    )
    assert final["status"] == "success"
    note = scenario.wait_note("PASSED")
    assert note.startswith(MARKER)
    digest = scenario.ecr.digest_of("app", scenario.tag("app"))
    calls = scenario.ecr.calls("DescribeImageScanFindings", "app")
    mine = [c for c in calls if c.image in (scenario.tag("app"), digest)]
    assert len(mine) == 3  # one call per poll, no more
    # The tag is resolved to its digest at the first answer and the digest is used from then on.
    assert [c.image for c in mine] == [scenario.tag("app"), digest, digest]
    assert_no_stray_pipelines(scenario)


def test_blocked_lists_the_finding(scenario: Scenario):
    final = run_gate(scenario, [{"status": "COMPLETE", "findings": [HIGH, LOW]}])
    assert final["status"] == "failed"
    assert "blocking" in final["description"]
    note = scenario.wait_note("BLOCKED", "CVE-2023-44487")
    assert "nghttp2" in note and "1.43.0-1+deb11u1" in note


def test_scan_not_found_when_scan_on_push_never_ran(scenario: Scenario):
    final = run_gate(scenario, None)  # pushed to moto, no scan started: ScanNotFoundException
    assert final["status"] == "failed"
    assert "scan on push" in final["description"]
    note = scenario.wait_note("put-image-scanning-configuration")
    assert "scanOnPush=true" in note


def test_image_not_found_when_tag_never_pushed(scenario: Scenario):
    final = run_gate(scenario, None, push=False)
    assert final["status"] == "failed"
    assert "not found" in final["description"]
    scenario.wait_note("tag")


def test_access_denied_names_the_action(scenario: Scenario):
    final = run_gate(scenario, [{"error": "AccessDeniedException"}])
    assert final["status"] == "failed"
    assert "access denied" in final["description"]
    scenario.wait_note("ecr:DescribeImageScanFindings")


@pytest.mark.parametrize(
    ("steps", "words"),
    [
        ([{"error": "RepositoryNotFoundException"}], "repository"),
        ([{"status": "FAILED", "description": "scan engine crashed"}], "FAILED"),
        ([{"status": "UNSUPPORTED_IMAGE", "description": "UnsupportedImageError: distroless"}], "UNSUPPORTED_IMAGE"),
        ([{"status": "FINDINGS_UNAVAILABLE"}], "unavailable"),
        ([{"status": "COMPLETE", "no_findings_object": True}], "error"),
    ],
    ids=["repository_not_found", "scan_failed", "unsupported_image", "findings_unavailable", "error"],
)
def test_failed_reasons(scenario: Scenario, steps, words):
    final = run_gate(scenario, steps)
    assert final["status"] == "failed"
    assert words.lower() in final["description"].lower()
    scenario.wait_note("What to do")


def test_throttling_is_retried_not_a_verdict(scenario: Scenario):
    final = run_gate(
        scenario,
        [{"error": "ThrottlingException"}, {"error": "ThrottlingException"}, {"status": "COMPLETE", "findings": []}],
    )
    assert final["status"] == "success"


def test_timeout_when_scan_never_completes(scenario: Scenario):
    final = run_gate(scenario, [{"status": "IN_PROGRESS"}])
    assert final["status"] == "failed"
    assert "not complete" in final["description"]
    scenario.wait_note("IN_PROGRESS")


def test_enhanced_suppressed_findings_pass(scenario: Scenario):
    findings = [enhanced_finding("CVE-2024-1111", "CRITICAL", "glibc", "2.31", "2.32", status="SUPPRESSED")]
    final = run_gate(scenario, [{"status": "ACTIVE"}, {"status": "COMPLETE", "enhanced_findings": findings}])
    assert final["status"] == "success"


def test_canceled_pipeline_before_push(scenario: Scenario):
    assert scenario.pipeline_event("running").status_code == 202
    scenario.wait_status("app", {"pending"}, timeout=20)
    assert scenario.pipeline_event("canceled", builds={PUSH_APP: "canceled"}).status_code == 202
    assert scenario.wait_status("app")["status"] == "canceled"
    assert scenario.wait_status("api")["status"] == "canceled"


def test_two_images_one_note_both_sections(scenario: Scenario):
    scenario.push("app")
    scenario.push("api")
    scenario.script("app", [{"status": "IN_PROGRESS"}, {"status": "COMPLETE", "findings": []}])
    scenario.script("api", [{"status": "IN_PROGRESS"}, {"status": "COMPLETE", "findings": [HIGH]}])
    # Old GitLab / no job events: the pipeline event's builds[] shows both push jobs succeeded.
    scenario.pipeline_event("running", builds={PUSH_APP: "success", "docker-push-api": "success"})
    assert scenario.wait_status("app")["status"] == "success"
    assert scenario.wait_status("api")["status"] == "failed"
    scenario.wait_note("ecr-scan-gate/app", "ecr-scan-gate/api", "PASSED", "BLOCKED")
    notes = [n for n in scenario.notes() if MARKER in n["body"]]
    assert len(notes) == 1


def test_new_commit_supersedes_old_gate_in_note(scenario: Scenario):
    old_sha, old_pipeline = scenario.sha, scenario.pipeline_id
    scenario.push("app")
    scenario.script("app", [{"status": "IN_PROGRESS"}] * 4 + [{"status": "COMPLETE", "findings": [HIGH]}])
    scenario.pipeline_event("running")
    scenario.job_event(PUSH_APP)
    # A new commit arrives while the old scan is still running.
    scenario.new_commit()
    scenario.push("app")
    scenario.script("app", [{"status": "COMPLETE", "findings": []}])
    scenario.pipeline_event("running")
    scenario.job_event(PUSH_APP)
    assert scenario.wait_status("app")["status"] == "success"
    body = scenario.wait_note("PASSED", scenario.sha[:8])
    # The old pipeline's late verdict lands on its own pipeline's status only.
    old = Scenario.status(scenario, "app", sha=old_sha)
    deadline = time.time() + 20
    while (old is None or old["status"] not in ("failed",)) and time.time() < deadline:
        time.sleep(0.2)
        old = Scenario.status(scenario, "app", sha=old_sha)
    assert old is not None and old["status"] == "failed" and old["pipeline_id"] == old_pipeline
    time.sleep(1.5)
    notes = [n for n in scenario.notes() if MARKER in n["body"]]
    assert len(notes) == 1
    assert "BLOCKED" not in notes[0]["body"] and scenario.sha[:8] in notes[0]["body"]
    assert body


def test_branch_pipeline_finds_the_mr_by_commit(scenario: Scenario):
    """A push pipeline (no merge_request in the payload): the MR is found by commit, else statuses only."""
    s = scenario
    s.push("app")
    s.script("app", [{"status": "COMPLETE", "findings": []}])
    body = s.push_pipeline_body(ref=s.branch)
    assert s.deliver("Pipeline Hook", body, None).status_code == 202
    assert s.wait_status("app")["status"] == "success"
    s.wait_note("PASSED")


def test_no_merge_request_means_statuses_only(scenario: Scenario):
    s = scenario
    s.gitlab.set_mr_state(s.project_id, s.mr_iid, "merged")
    s.new_commit()  # a commit that no open MR has as its head
    s.push("app")
    s.script("app", [{"status": "COMPLETE", "findings": [HIGH]}])
    body = pipeline_payload(
        project_id=s.project_id,
        project_path=s.project_path,
        pipeline_id=s.pipeline_id,
        sha=s.sha,
        ref="main",
        status="running",
        source="push",
        mr_iid=None,
        builds=[(PUSH_APP, "push", "success", s.jobs[PUSH_APP])],
    )
    assert s.deliver("Pipeline Hook", body, None).status_code == 202
    assert s.wait_status("app")["status"] == "failed"
    time.sleep(2)
    assert [n for n in s.notes() if MARKER in n["body"]] == []


def test_forged_path_for_another_projects_id_is_not_acted_on(scenario: Scenario):
    """The path matches the configured glob but the id is another project's: GitLab says so, we stop."""
    s = scenario
    other_id = s.project_id + 1_000_000
    s.gitlab.add_project(other_id, "elsewhere/secret-project")
    s.gitlab.add_pipeline(other_id, s.pipeline_id + 1_000_000, s.sha, ref="main")
    body = pipeline_payload(
        project_id=other_id,
        project_path=s.project_path,
        pipeline_id=s.pipeline_id + 1_000_000,
        sha=s.sha,
        ref="main",
        status="running",
        source="push",
        mr_iid=None,
    )
    assert s.deliver("Pipeline Hook", body, None).status_code == 202
    time.sleep(3)
    assert s.gitlab.latest_statuses(other_id, s.sha) == {}
