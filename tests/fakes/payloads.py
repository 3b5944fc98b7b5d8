"""Builders for GitLab webhook payloads and headers, starting from the recorded fixtures."""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "gitlab"

TOKEN = "test-webhook-secret"  # noqa: S105 - a test value, not a credential
INSTANCE = "https://gitlab.example.com"
SHA = "3f1c2d4e5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d"

# (name, stage, status, job_id)
BuildSpec = tuple[str, str, str, int]


@cache
def _load(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def fixture(name: str) -> dict[str, Any]:
    """A fresh copy of tests/fixtures/gitlab/<name> (callers may mutate it)."""
    return json.loads(_load(name))


def _web_url(project_path: str) -> str:
    return f"{INSTANCE}/{project_path}"


def _set_project(project: dict[str, Any], project_id: int, project_path: str) -> None:
    name = project_path.rsplit("/", 1)[-1]
    project.update(
        id=project_id,
        name=name,
        path_with_namespace=project_path,
        web_url=_web_url(project_path),
        git_ssh_url=f"git@gitlab.example.com:{project_path}.git",
        git_http_url=f"{_web_url(project_path)}.git",
    )


def pipeline_payload(
    project_id: int = 101,
    project_path: str = "acme/platform/payments-api",
    pipeline_id: int = 7001,
    sha: str = SHA,
    ref: str = "feature/scan-gate",
    status: str = "running",
    source: str = "merge_request_event",
    mr_iid: int | None = 17,
    builds: Iterable[BuildSpec] | None = None,
    mr_project_id: int | None = None,
) -> dict[str, Any]:
    """A Pipeline Hook body. mr_iid=None gives a branch pipeline (`merge_request: null`).

    builds defaults to one successful "docker-push" job in stage "push".
    """
    payload = fixture("pipeline_hook_mr.json")
    attrs = payload["object_attributes"]
    attrs.update(
        id=pipeline_id,
        sha=sha,
        ref=ref,
        status=status,
        detailed_status=status,
        source=source,
        url=f"{_web_url(project_path)}/-/pipelines/{pipeline_id}",
    )
    if status not in ("success", "failed", "canceled", "skipped"):
        attrs.update(finished_at=None, duration=None)
    _set_project(payload["project"], project_id, project_path)
    payload["commit"].update(id=sha, url=f"{_web_url(project_path)}/-/commit/{sha}")
    if mr_iid is None:
        payload["merge_request"] = None
    else:
        target = project_id if mr_project_id is None else mr_project_id
        payload["merge_request"].update(
            iid=mr_iid,
            source_branch=ref,
            source_project_id=project_id,
            target_project_id=target,
            url=f"{_web_url(project_path)}/-/merge_requests/{mr_iid}",
        )
    template = next(b for b in payload["builds"] if b["name"] == "docker-push")
    specs = [("docker-push", "push", "success", pipeline_id * 10 + 3)] if builds is None else list(builds)
    payload["builds"] = []
    for name, stage, build_status, job_id in specs:
        build = copy.deepcopy(template)
        failure_reason = "script_failure" if build_status == "failed" else None
        build.update(id=job_id, name=name, stage=stage, status=build_status, failure_reason=failure_reason)
        payload["builds"].append(build)
    return payload


def job_payload(
    project_id: int = 101,
    project_path: str = "acme/platform/payments-api",
    pipeline_id: int = 7001,
    job_id: int = 90013,
    job_name: str = "docker-push",
    status: str = "success",
    sha: str = SHA,
    ref: str = "refs/merge-requests/17/head",
    stage: str = "push",
    retries_count: int = 0,
) -> dict[str, Any]:
    """A Job Hook body. For a merge request pipeline GitLab sends ref refs/merge-requests/<iid>/head."""
    payload = fixture("job_hook.json")
    payload.update(
        project_id=project_id,
        pipeline_id=pipeline_id,
        build_id=job_id,
        build_name=job_name,
        build_stage=stage,
        build_status=status,
        build_failure_reason="script_failure" if status == "failed" else None,
        sha=sha,
        ref=ref,
        retries_count=retries_count,
    )
    # Quirk kept from GitLab: the Job Hook's commit.id is the pipeline id.
    payload["commit"].update(id=pipeline_id, sha=sha)
    _set_project(payload["project"], project_id, project_path)
    payload["repository"].update(name=payload["project"]["name"], homepage=_web_url(project_path))
    return payload


def webhook_headers(
    event: str = "Pipeline Hook",
    token: str | None = TOKEN,
    idempotency_key: str | None = None,
) -> dict[str, str]:
    """Headers GitLab sends with a delivery; token=None leaves X-Gitlab-Token out.

    idempotency_key=None makes a fresh one (a new delivery); pass the same key to simulate a resend.
    """
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "GitLab/17.6.0",
        "X-Gitlab-Event": event,
        "X-Gitlab-Instance": INSTANCE,
        "X-Gitlab-Webhook-UUID": "5b6b6a8e-8d39-4d7a-9a43-0b6c2b1f0e11",
        "X-Gitlab-Event-UUID": str(uuid.uuid4()),
        "Idempotency-Key": idempotency_key or str(uuid.uuid4()),
    }
    if token is not None:
        headers["X-Gitlab-Token"] = token
    return headers
