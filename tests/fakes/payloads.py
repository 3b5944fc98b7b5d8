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


NOTE_ACTIONS = ("create", "update")  # lib/gitlab/data_builder/note.rb VALID_ACTIONS


def _set_hook_project(project: dict[str, Any], project_id: int, project_path: str) -> None:
    """Project#hook_attrs with its backward-compatible keys (homepage, url, ssh_url, http_url)."""
    _set_project(project, project_id, project_path)
    project.update(
        homepage=_web_url(project_path),
        url=project["git_ssh_url"],  # url_to_repo
        ssh_url=project["git_ssh_url"],
        http_url=project["git_http_url"],
    )


def note_payload(
    project_id: int = 101,
    project_path: str = "acme/platform/payments-api",
    mr_iid: int = 17,
    note_id: int = 50123,
    body: str = "@ecr-scan-gate-bot recheck",
    author_id: int = 57,
    author_username: str = "sam",
    system: bool = False,
    action: str = "create",
    mr_target_branch: str = "main",
    mr_source_branch: str = "feature/scan-gate",
    sha: str = SHA,
    author_name: str | None = None,
    mr_author_id: int = 42,
    mr_state: str = "opened",
    internal: bool = False,
) -> dict[str, Any]:
    """A Note Hook body for a comment on a merge request (action "create" or "update", GitLab 16.11+).

    The user who wrote the note is both `user` and `object_attributes.author_id`; author_name defaults to the
    fixture's name for the fixture's user, else to the username. internal=True gives an internal note, which
    GitLab sends as event_type "confidential_note" (X-Gitlab-Event "Confidential Note Hook") to the hooks that
    subscribe to confidential notes only. GitLab sends no Note Hook at all for a system note
    (Notes::PostProcessService skips them), so system=True stands for a delivery GitLab would not make.
    """
    if action not in NOTE_ACTIONS:
        raise ValueError(f"action must be one of {NOTE_ACTIONS}, not {action!r}")
    payload = fixture("note_hook_mr.json")
    web_url = _web_url(project_path)
    mr_url = f"{web_url}/-/merge_requests/{mr_iid}"
    user = payload["user"]
    if author_username != user["username"] or author_id != user["id"]:
        name = author_name or author_username
        user.update(
            id=author_id,
            username=author_username,
            name=name,
            avatar_url=f"{INSTANCE}/uploads/-/system/user/avatar/{author_id}/avatar.png",
        )
    elif author_name:
        user["name"] = author_name
    payload["event_type"] = "confidential_note" if internal else "note"
    payload["project_id"] = project_id
    _set_hook_project(payload["project"], project_id, project_path)
    project = payload["project"]
    payload["repository"].update(
        name=project["name"], url=project["url"], description=project["description"], homepage=web_url
    )
    attrs = payload["object_attributes"]
    attrs.update(
        id=note_id,
        note=body,
        description=body,
        author_id=author_id,
        project_id=project_id,
        system=system,
        internal=internal,
        action=action,
        url=f"{mr_url}#note_{note_id}",
    )
    if action == "update":
        attrs.update(updated_at="2025-03-04 09:40:27 UTC", updated_by_id=author_id)
    mr = payload["merge_request"]
    mr.update(
        iid=mr_iid,
        source_branch=mr_source_branch,
        target_branch=mr_target_branch,
        source_project_id=project_id,
        target_project_id=project_id,
        author_id=mr_author_id,
        state=mr_state,
        state_id={"opened": 1, "closed": 2, "merged": 3, "locked": 4}.get(mr_state, 1),
        url=mr_url,
    )
    for side in ("source", "target"):
        _set_hook_project(mr[side], project_id, project_path)
    mr["last_commit"].update(id=sha, url=f"{web_url}/-/commit/{sha}")
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
