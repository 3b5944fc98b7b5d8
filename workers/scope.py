"""Which configured project an event belongs to (confirmed with GitLab), and the config it gates under."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from bot.adapters.records import NO_FILE
from bot.core.errors import PermanentError
from bot.core.repo_config import FILE_KEY, REPO_FILE, Problem, RepoFile, Resolved, parse_repo_file, resolve
from bot.core.risk import utc_day
from bot.core.settings import ProjectSettings
from workers.runtime import Runtime

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Confirmed:
    """A configured project whose id and path GitLab confirmed: `path` is GitLab's, never the payload's."""

    settings: ProjectSettings
    path: str


def confirmed_project(rt: Runtime, project_id: int, path: str) -> Confirmed | None:
    """The project's config once GitLab confirms that id is that path. TransientError propagates.

    A payload matched by a path glob carries an id too, and one matched by id carries a path: without this
    check a forged event (it needs the webhook secret) could pair a configured path with another project's id,
    or put any path into the statuses' links and the note. An event without a path (old Job Hooks) takes
    GitLab's.
    """
    if rt.settings.project_for(project_id, path) is None and path:
        return None
    try:
        actual = rt.gitlab.project_path(project_id)
    except PermanentError as exc:
        log.warning("project %s: cannot confirm its path (%s); not acting on it", project_id, exc)
        return None
    if path and actual != path:
        log.warning("project %s is %r, not %r as the event says; not acting on it", project_id, actual, path[:100])
        return None
    project = rt.settings.project_for(project_id, actual)
    return Confirmed(project, actual) if project is not None else None


def pipeline_confirmed(rt: Runtime, project_id: int, pipeline_id: int, sha: str) -> bool:
    """GitLab has this pipeline, for this commit: a payload's pipeline id orders the MR's pipelines and names
    where statuses go, so a made-up one (2**63 - 1 froze a note) is refused. Cached per pipeline."""
    if rt.store.pipeline_known(project_id, pipeline_id, sha):
        return True
    try:
        real_sha = rt.gitlab.pipeline_sha(project_id, pipeline_id)
    except PermanentError as exc:
        log.warning("pipeline %s of project %s: not confirmed by GitLab (%s)", pipeline_id, project_id, exc)
        return False
    if real_sha != sha:
        log.warning("pipeline %s of project %s is not of commit %s", pipeline_id, project_id, sha[:12])
        return False
    rt.store.know_pipeline(project_id, pipeline_id, sha)
    return True


def repo_file_bytes(rt: Runtime, project_id: int, sha: str) -> bytes | None:
    """The project's repo file at `sha` (None: it has none), cached by commit and by blob id.

    One HEAD per commit names the blob; the text is fetched only for a blob not seen before, so a group
    whose projects share a file, or a pipeline's many events, cost one small request each.
    TransientError propagates; a refusal other than 404 is a PermanentError (the caller fails closed).
    """
    blob_id = rt.store.cached_blob_id(project_id, sha, REPO_FILE)
    if blob_id is None:
        info = rt.gitlab.repo_file(project_id, REPO_FILE, sha)
        blob_id = info.blob_id if info is not None and info.blob_id else (NO_FILE if info is None else "")
        if blob_id:
            rt.store.cache_blob_id(project_id, sha, REPO_FILE, blob_id)
    if blob_id == NO_FILE:
        return None
    text = rt.store.cached_blob(blob_id) if blob_id else None
    if text is not None:
        return text.encode("utf-8")
    info = rt.gitlab.repo_file(project_id, REPO_FILE, sha, content=True)
    if info is None or info.content is None:
        return None  # deleted between the two calls: none at this commit after all
    try:
        rt.store.cache_blob(info.blob_id or blob_id, info.content.decode("utf-8"))
    except UnicodeDecodeError:
        pass  # not cached; parse_repo_file reports it
    return info.content


def resolved_config(rt: Runtime, project: ProjectSettings, project_id: int, path: str, sha: str) -> Resolved:
    """The images and policy the project's pipeline at `sha` gates. TransientError propagates."""
    repo: RepoFile | tuple[Problem, ...] | None = None
    if project.repo_file:
        try:
            data = repo_file_bytes(rt, project_id, sha)
        except PermanentError as exc:
            # e.g. 403: the bot's token cannot read the repository. Unknown config: fail closed.
            repo = (Problem(FILE_KEY, f"cannot be read ({exc})"),)
        else:
            repo = parse_repo_file(data) if data is not None else None
    today = utc_day(time.time())  # bounds the repo file's exception dates ([policy] max_exception_days)
    return resolve(project, rt.settings.policy, path or rt.gitlab.project_path(project_id), repo, today)
