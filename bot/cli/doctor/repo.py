"""The doctor's repo checks: a project's .gitlab/ecr-scan-gate.toml parses and is allowed; its push jobs exist."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from bot.adapters.gitlab import GitLabApi
from bot.cli.doctor.lines import Level, Line
from bot.core.errors import PermanentError, TransientError
from bot.core.repo_config import REPO_FILE, Problem, RepoFile, parse_repo_file, resolve
from bot.core.settings import ProjectSettings, Settings


def _repo_file(api: GitLabApi, project_id: int, ref: str) -> tuple[RepoFile | tuple[Problem, ...] | None, str]:
    """The parsed file at `ref`, and how it was found (for the line's text)."""
    info = api.repo_file(project_id, REPO_FILE, ref, content=True)
    if info is None or info.content is None:
        return None, f"no {REPO_FILE} on {ref}: the central config's images apply"
    return parse_repo_file(info.content), f"{REPO_FILE} on {ref}"


def repo_lines(settings: Settings, api: GitLabApi, entry: ProjectSettings, project: dict[str, Any]) -> Iterator[Line]:
    """The repo file (on the default branch) against the central trust boundary, then each push job in CI."""
    path = str(project.get("path_with_namespace", ""))
    project_id, branch = int(project["id"]), str(project.get("default_branch") or "main")
    subject = f"repo {path}"
    repo: RepoFile | tuple[Problem, ...] | None = None
    if entry.repo_file:
        try:
            repo, found = _repo_file(api, project_id, branch)
        except (PermanentError, TransientError) as exc:
            yield Line(Level.FAIL, subject, f"cannot read {REPO_FILE} ({exc})", "give the bot user Reporter or more")
            return
        yield Line(Level.INFO, subject, found) if repo is None else Line(Level.INFO, subject, f"read {found}")
    resolved = resolve(entry, settings.policy, path, repo)
    if resolved.problems:
        listed = "; ".join(str(p) for p in resolved.problems[:10])
        fix = f"fix {resolved.source} (what a repo file may ask for is set by the central [[projects]] entry)"
        yield Line(Level.FAIL, subject, f"config error, every pipeline will fail: {listed}", fix)
        return
    if not resolved.images:
        yield Line(Level.WARN, subject, "no images to gate", f"declare [[images]] in {REPO_FILE}")
        return
    names = ", ".join(i.repository for i in resolved.images)
    yield Line(Level.PASS, subject, f"{resolved.source} is valid and allowed: gates {names}")
    yield from _push_jobs(api, subject, project_id, branch, [(i.repository, i.push_job) for i in resolved.images])


def _push_jobs(
    api: GitLabApi, subject: str, project_id: int, branch: str, wanted: list[tuple[str, str]]
) -> Iterator[Line]:
    try:
        valid, jobs, errors = api.ci_job_names(project_id, branch)
    except (PermanentError, TransientError) as exc:
        yield Line(Level.WARN, subject, f"CI lint not available ({exc}): push jobs not checked")
        return
    if not valid:
        detail = "; ".join(errors[:3]) or "no errors given"
        yield Line(Level.WARN, subject, f"CI config on {branch} is not valid ({detail}): push jobs not checked")
        return
    for repository, job in wanted:
        if job in jobs:
            yield Line(Level.PASS, subject, f"push job {job} of {repository} is in the CI config on {branch}")
        else:
            yield Line(
                Level.FAIL,
                subject,
                f"push job {job} of {repository} is not a job of the CI config on {branch}: never gated",
                f"name the job that pushes {repository} in push_job (CI lint lists: {', '.join(jobs[:10])})",
            )
