"""End to end (gunicorn, worker, beat, Redis, fake GitLab, ECR double): gate only what a pipeline pushes, repo files."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import configs
from tests.fakes.payloads import job_payload, pipeline_payload
from tests.harness import PUSH_API, PUSH_APP, Scenario, wait_for
from tests.stack import Stack

REPO_FILE = ".gitlab/ecr-scan-gate.toml"
CONFIG_STATUS = "ecr-scan-gate (config)"
CLEAN = [{"status": "COMPLETE", "findings": []}]

MONOREPO = f"""
[[images]]
repository = "app"
push_job = "{PUSH_APP}"

[[images]]
repository = "api"
tag = "api-{{short_sha}}"
push_job = "{PUSH_API}"

[[images]]
repository = "worker"
push_job = "push-worker"
"""


# A standard group: one templated central entry, no file in any project.
TEMPLATED = {"path": "std/*", "images": [{"repository": "{project_name}", "push_job": PUSH_APP}]}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # Grace longer than the timeout: a not-found answer is still withheld when the deadline comes.
    projects = [*configs.harness_defaults()["projects"], TEMPLATED]
    with Stack(Path(tmp_path_factory.mktemp("onboarding")), timeout_s=10, grace=60, projects=projects) as running:
        yield running


def scenario(stack: Stack, *jobs: str) -> Scenario:
    if jobs:
        return Scenario(stack.gitlab, stack.ecr, stack.deliver, job_names=jobs)
    return Scenario(stack.gitlab, stack.ecr, stack.deliver)


def repo_file(s: Scenario, text: str) -> None:
    s.gitlab.set_file(s.project_id, REPO_FILE, text, sha=s.sha)


def ours(s: Scenario) -> dict[str, dict[str, Any]]:
    return {name: st for name, st in s.statuses().items() if name.startswith("ecr-scan-gate")}


def repo_file_reads(stack: Stack, s: Scenario, method: str) -> int:
    return stack.gitlab.request_count(method, rf"^/api/v4/projects/{s.project_id}/repository/files/")


def test_a_monorepo_pipeline_gates_only_the_image_it_pushes(stack: Stack) -> None:
    s = scenario(stack, PUSH_APP, "unit-tests")
    repo_file(s, MONOREPO)
    s.push("app")
    s.script("app", CLEAN)
    assert s.pipeline_event("running").status_code == 202
    assert s.wait_status("app", {"pending"}, timeout=20)["pipeline_id"] == s.pipeline_id
    assert s.job_event(PUSH_APP).status_code == 202
    assert s.wait_status("app")["status"] == "success"
    note = s.wait_note(
        "PASSED",
        f"not gated in this pipeline: `api` (its push job `{PUSH_API}` is not in this pipeline)",
        "not gated in this pipeline: `worker` (its push job `push-worker` is not in this pipeline)",
    )
    assert "ECR scan gate: the image passed" in note
    assert set(ours(s)) == {"ecr-scan-gate/app"}  # one status: none for the images not built here
    # Read once at the commit (HEAD names the blob, GET fetches it): the job event used the recorded plan.
    assert (repo_file_reads(stack, s, "HEAD"), repo_file_reads(stack, s, "GET")) == (1, 1)
    # The next commit with the same file: a HEAD for the commit, but the text comes from the blob cache.
    s.new_commit()
    repo_file(s, MONOREPO)
    assert s.pipeline_event("running").status_code == 202
    s.wait_status("app", {"pending"}, timeout=20)
    assert (repo_file_reads(stack, s, "HEAD"), repo_file_reads(stack, s, "GET")) == (2, 1)


def test_a_docs_only_merge_request_gets_no_status_and_an_explanatory_note(stack: Stack) -> None:
    s = scenario(stack, "unit-tests", "docs")  # no repo file: the central config's app and api
    assert s.pipeline_event("running").status_code == 202
    note = s.wait_note(
        "ECR scan gate: no image is pushed in this pipeline",
        f"not gated in this pipeline: `api` (its push job `{PUSH_API}`",
        f"not gated in this pipeline: `app` (its push job `{PUSH_APP}`",
    )
    assert "no commit status" in note
    assert s.pipeline_event("success", builds={"unit-tests": "success", "docs": "success"}).status_code == 202
    time.sleep(3)  # a worker that wanted to post would have by now
    assert ours(s) == {}
    assert len(s.notes()) == 1


def test_a_required_image_missing_from_the_pipeline_fails_it(stack: Stack) -> None:
    s = scenario(stack, "unit-tests")
    repo_file(s, f'[[images]]\nrepository = "app"\npush_job = "{PUSH_APP}"\nrequired = true\n')
    assert s.pipeline_event("running").status_code == 202
    final = s.wait_status("app", {"failed"}, timeout=20)
    assert "required but its push job is not in this pipeline" in final["description"]
    s.wait_note("Reason `push_job_missing`", "drop `required`")


def test_a_push_job_nobody_ran_ends_skipped_when_the_pipeline_succeeds(stack: Stack) -> None:
    s = scenario(stack)
    assert s.pipeline_event("running").status_code == 202
    s.wait_status("app", {"pending"}, timeout=20)
    done = {PUSH_APP: "manual", PUSH_API: "manual", "unit-tests": "success"}
    assert s.pipeline_event("success", builds=done).status_code == 202
    for repo in ("app", "api"):
        final = s.wait_status(repo, {"skipped", "canceled", "failed"}, timeout=20)
        assert final["status"] == "skipped", final
        assert "finished without pushing" in final["description"]
    note = s.wait_note("SKIPPED", "nothing was pushed, nothing to check")
    assert "CANCELED" not in note


def test_the_sweep_skips_a_gate_once_only_a_manual_push_job_is_left(stack: Stack) -> None:
    s = scenario(stack)
    assert s.pipeline_event("running").status_code == 202
    s.wait_status("api", {"pending"}, timeout=20)
    # No event tells the bot: our pending status keeps the pipeline running. The sweep reads the jobs.
    s.gitlab.set_job_status(s.jobs["unit-tests"], "success")
    s.gitlab.set_job_status(s.jobs[PUSH_APP], "manual")
    s.gitlab.set_job_status(s.jobs[PUSH_API], "manual")
    assert s.wait_status("api", {"skipped", "canceled", "failed"}, timeout=40)["status"] == "skipped"
    s.wait_note("SKIPPED", "found by sweep")


def test_at_the_deadline_the_real_not_found_cause_is_the_verdict(stack: Stack) -> None:
    s = scenario(stack)
    s.push("app")  # pushed, but no scan ever starts: ScanNotFound; api is never pushed: ImageNotFound
    assert s.pipeline_event("running").status_code == 202
    assert s.job_event(PUSH_APP).status_code == 202
    assert s.job_event(PUSH_API).status_code == 202
    app, api = s.wait_status("app", timeout=40), s.wait_status("api", timeout=40)
    assert (app["status"], api["status"]) == ("failed", "failed")
    assert "no scan found" in app["description"] and "not complete" not in app["description"]
    assert "not found in ECR" in api["description"]
    s.wait_note("Reason `scan_not_found`", "Reason `image_not_found`")


def test_an_invalid_repo_file_fails_the_pipeline_with_a_config_error(stack: Stack) -> None:
    s = scenario(stack)
    repo_file(s, f'[[images]]\nrepository = "app"\npush_job = "{PUSH_APP}"\nregion = "ap-south-1"\ncolour = 1\n')
    assert s.pipeline_event("running").status_code == 202
    final = wait_for(lambda: ours(s).get(CONFIG_STATUS, {}).get("status") == "failed" and ours(s), 30, "config")
    assert set(final) == {CONFIG_STATUS}  # no image is gated under a config the bot cannot trust
    assert final[CONFIG_STATUS]["description"] == f"config error: 1 problem in {REPO_FILE}"
    note = s.wait_note("gate config", "`images[0].colour`: unknown key")
    assert "Reason `config_error`" in note
    # A file that parses but asks for a region the central config does not allow.
    s.new_commit()
    repo_file(s, f'[[images]]\nrepository = "app"\npush_job = "{PUSH_APP}"\nregion = "ap-south-1"\n')
    assert s.pipeline_event("running").status_code == 202
    # The message is escaped Markdown: it quotes the file, which its author (anyone with push) wrote.
    s.wait_note(r"`images[0].region`: ap\-south\-1 is not allowed for this registry \(us\-east\-1\)")


def test_a_child_pipeline_reports_into_its_parent(stack: Stack) -> None:
    s = scenario(stack, "unit-tests")  # the parent: no push job of its own, it triggers a child
    child, push_job = s.pipeline_id + 1, next(s.job_ids)
    ref = f"refs/merge-requests/{s.mr_iid}/head"
    jobs = [{"id": push_job, "name": PUSH_APP, "stage": "push", "status": "created"}]
    s.gitlab.add_pipeline(s.project_id, child, s.sha, ref=ref, source="parent_pipeline", jobs=jobs)
    s.push("app")
    s.script("app", CLEAN)
    assert s.pipeline_event("running").status_code == 202
    s.wait_note("no image is pushed in this pipeline")
    source = {"project": {"id": s.project_id, "path_with_namespace": s.project_path}, "pipeline_id": s.pipeline_id}
    body = pipeline_payload(
        project_id=s.project_id,
        project_path=s.project_path,
        pipeline_id=child,
        sha=s.sha,
        ref=s.branch,
        source="parent_pipeline",
        mr_iid=None,
        builds=[(PUSH_APP, "push", "created", push_job)],
    )
    body["source_pipeline"] = source | {"job_id": 1}
    assert s.deliver("Pipeline Hook", body, None).status_code == 202
    # The status goes to the parent: the MR's pipeline, whose "Pipelines must succeed" must wait for it.
    assert s.wait_status("app", {"pending"}, timeout=20)["pipeline_id"] == s.pipeline_id
    s.gitlab.set_job_status(push_job, "success")
    job = job_payload(
        project_id=s.project_id, project_path=s.project_path, pipeline_id=child, job_id=push_job, sha=s.sha, ref=ref
    )
    job["source_pipeline"] = source | {"job_id": 1}
    assert s.deliver("Job Hook", job, None).status_code == 202
    final = s.wait_status("app")
    assert (final["status"], final["pipeline_id"]) == ("success", s.pipeline_id)
    note = s.wait_note("PASSED", f"not gated in this pipeline: `api` (its push job `{PUSH_API}`")
    assert "not gated in this pipeline: `app`" not in note
    assert s.gitlab.pipelines(s.project_id, source="external") == []


def test_a_pipeline_hook_without_jobs_gates_everything_until_the_jobs_are_known(stack: Stack) -> None:
    s = scenario(stack, "unit-tests")
    body = s.pipeline_body("created")
    body["builds"] = []
    assert s.deliver("Pipeline Hook", body, None).status_code == 202
    s.wait_status("app", {"pending"}, timeout=20)  # unknown jobs: fail closed
    s.wait_status("api", {"pending"}, timeout=20)
    assert s.pipeline_event("running").status_code == 202  # now its jobs are listed: no push job among them
    assert s.wait_status("app", {"skipped"}, timeout=20)["description"].startswith("skipped")
    assert s.wait_status("api", {"skipped"}, timeout=20)


def test_a_templated_central_entry_gates_a_group_with_no_repo_files(stack: Stack) -> None:
    s = Scenario(stack.gitlab, stack.ecr, stack.deliver, group="std", job_names=(PUSH_APP, "unit-tests"))
    repository = s.project_path.rsplit("/", 1)[1]  # {project_name}
    stack.ecr.create_repository(repository, scan_on_push=True)
    s.ecr.push_image(repository, s.sha[:8])
    s.ecr.script(repository, tag=s.sha[:8], steps=CLEAN)
    assert s.pipeline_event("running").status_code == 202
    assert s.job_event(PUSH_APP).status_code == 202
    assert s.wait_status(repository)["status"] == "success"
    assert set(ours(s)) == {f"ecr-scan-gate/{repository}"}
