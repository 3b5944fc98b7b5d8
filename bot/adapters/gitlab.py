"""Thin python-gitlab adapter: commit statuses, the one MR note, MR and job lookups; errors become types."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

import gitlab
import requests
from gitlab.exceptions import GitlabError, GitlabHttpError
from pydantic import SecretStr

from bot.adapters import metrics
from bot.adapters.gitlab_issues import IssuesMixin
from bot.core.errors import PermanentError, TransientError
from bot.core.events import Build
from bot.core.report import note_has_marker
from bot.core.settings import GitLabSettings

T = TypeVar("T")
_retry_after = threading.local()


class _NoSleepGitlab(gitlab.Gitlab):
    """python-gitlab sleeps inside the call on 429/5xx; we retry through Celery instead."""

    def http_request(self, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs["obey_rate_limit"] = False
        kwargs["retry_transient_errors"] = False
        return super().http_request(*args, **kwargs)


def _remember_retry_after(response: requests.Response, *args: Any, **kwargs: Any) -> None:
    # GitlabHttpError drops the headers; keep Retry-After for the caller's countdown.
    value = response.headers.get("Retry-After")
    _retry_after.value = float(value) if value and value.replace(".", "", 1).isdigit() else None


def _message(exc: GitlabHttpError) -> str:
    return str(exc.error_message)[:300]


def _count(what: str, code: int | None) -> None:
    metrics.GITLAB_CALLS.labels(operation=what, outcome=metrics.gitlab_outcome(code)).inc()


@contextmanager
def _translated(what: str) -> Iterator[None]:
    """Map python-gitlab and requests failures to TransientError / PermanentError."""
    try:
        yield
    except GitlabHttpError as exc:
        code = exc.response_code or 0
        _count(what, code)
        if code == 429 or code == 409 or code >= 500:
            retry_after = getattr(_retry_after, "value", None)
            raise TransientError(f"GitLab {code} on {what}: {_message(exc)}", retry_after) from None
        raise PermanentError(f"GitLab {code} on {what}: {_message(exc)}", code) from None
    except GitlabError as exc:  # e.g. GitlabAuthenticationError (401), which is no GitlabHttpError
        _count(what, exc.response_code or 400)
        raise PermanentError(f"GitLab error on {what}: {type(exc).__name__}", exc.response_code or 0) from None
    except requests.RequestException as exc:
        _count(what, None)
        raise TransientError(f"GitLab unreachable on {what}: {type(exc).__name__}", uncertain=True) from None
    else:
        _count(what, 200)


@dataclass(frozen=True)
class MergeRequest:
    project_id: int
    iid: int
    sha: str
    state: str
    web_url: str = ""


@dataclass(frozen=True)
class RepoFileInfo:
    """A file at one commit: its blob id (same content, same id) and, when asked for, its bytes."""

    blob_id: str
    content: bytes | None = None


class GitLabApi(IssuesMixin):
    """One instance per worker process; every method makes a bounded number of HTTP calls."""

    def __init__(self, settings: GitLabSettings, token: SecretStr) -> None:
        session = requests.Session()
        session.hooks["response"].append(_remember_retry_after)
        self._gl = _NoSleepGitlab(
            settings.url,
            private_token=token.get_secret_value(),
            timeout=settings.timeout_s,
            ssl_verify=settings.verify_tls,
            retry_transient_errors=False,
            keep_base_url=True,
            session=session,
        )
        self._user_id: int | None = None
        self._paths: dict[int, tuple[str, float]] = {}

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        with _translated(what):
            return fn()

    def _get(self, what: str, path: str) -> dict[str, Any]:
        """GET one object; anything but a JSON object is refused (a proxy's HTML page, say)."""
        data = self._call(what, lambda: self._gl.http_get(path))
        if not isinstance(data, dict):
            raise PermanentError(f"GitLab sent no JSON object on {what}")
        return data

    def bot_user_id(self) -> int:
        if self._user_id is None:
            self._user_id = int(self.current_user()["id"])
        return self._user_id

    def project_path(self, project_id: int) -> str:
        """path_with_namespace of a project id, cached for ten minutes (renames are rare)."""
        cached = self._paths.get(project_id)
        if cached and cached[1] > time.monotonic():
            return cached[0]
        data = self._get("GET project", f"/projects/{project_id}")
        path = str(data.get("path_with_namespace") or "")
        self._paths[project_id] = (path, time.monotonic() + 600)
        return path

    def set_status(self, project_id: int, sha: str, payload: dict[str, Any]) -> bool:
        """Post a commit status; False when GitLab says it is already in that state (done)."""
        path = f"/projects/{project_id}/statuses/{sha}"
        try:
            with _translated("POST statuses"):
                self._gl.http_post(path, post_data=payload)
        except PermanentError as exc:
            if "Cannot transition status" in str(exc):
                return False
            raise
        return True

    def current_status(self, project_id: int, sha: str, name: str, pipeline_id: int) -> str:
        """The state of the newest status of that name on that pipeline ("" when there is none)."""
        items = self._call(
            "GET commit statuses",
            lambda: self._gl.http_list(
                f"/projects/{project_id}/repository/commits/{sha}/statuses",
                get_all=True,
                query_data={"name": name, "pipeline_id": pipeline_id},
            ),
        )
        mine = [s for s in items if s.get("name") == name and s.get("pipeline_id") in (None, pipeline_id)]
        return str(max(mine, key=lambda s: int(s["id"]))["status"]) if mine else ""

    def merge_requests_for_commit(self, project_id: int, sha: str) -> list[MergeRequest]:
        items = self._call(
            "GET commit merge_requests",
            lambda: self._gl.http_list(f"/projects/{project_id}/repository/commits/{sha}/merge_requests", get_all=True),
        )
        return [
            MergeRequest(
                int(m.get("project_id") or project_id),
                int(m["iid"]),
                str(m.get("sha") or ""),
                str(m.get("state") or ""),
                str(m.get("web_url") or ""),
            )
            for m in items
            if int(m.get("project_id") or project_id) == project_id
        ]

    def pipeline_jobs(self, project_id: int, pipeline_id: int) -> list[Build]:
        items = self._call(
            "GET pipeline jobs",
            lambda: self._gl.http_list(
                f"/projects/{project_id}/pipelines/{pipeline_id}/jobs",
                get_all=True,
                query_data={"include_retried": True},
            ),
        )
        return [
            Build(
                id=int(j["id"]),
                name=str(j.get("name") or ""),
                stage=str(j.get("stage") or ""),
                status=str(j.get("status") or ""),
                allow_failure=j.get("allow_failure") is True,
            )
            for j in items
        ]

    def repo_file(self, project_id: int, path: str, ref: str, content: bool = False) -> RepoFileInfo | None:
        """The file at `ref` (HEAD: its blob id only; content=True: also its bytes), None when it is absent."""
        encoded = quote(path, safe="")
        base = f"/projects/{project_id}/repository/files/{encoded}"
        try:
            with _translated("GET repository file"):
                if not content:
                    headers = self._gl.http_head(base, query_data={"ref": ref})
                    return RepoFileInfo(str(headers.get("X-Gitlab-Blob-Id") or ""))
                data = self._gl.http_get(base, query_data={"ref": ref})
        except PermanentError as exc:
            if exc.status == 404:
                return None
            raise
        if not isinstance(data, dict) or data.get("encoding") != "base64":
            raise PermanentError("GitLab sent no base64 file object on GET repository file")
        try:
            raw = base64.b64decode(str(data.get("content") or ""), validate=True)
        except ValueError:
            raise PermanentError("GitLab sent a file whose content is not base64") from None
        return RepoFileInfo(str(data.get("blob_id") or ""), raw)

    def access_level(self, project_id: int, user_id: int) -> int:
        """The user's effective role in the project (inherited from groups too); 0 when not a member."""
        try:
            data = self._get("GET member", f"/projects/{project_id}/members/all/{user_id}")
        except PermanentError as exc:
            if exc.status == 404:
                return 0
            raise
        level = data.get("access_level")
        return level if isinstance(level, int) and not isinstance(level, bool) else 0

    def merge_request_head(self, project_id: int, iid: int) -> tuple[int, str]:
        """The MR's author id and head commit sha."""
        data = self._get("GET merge request", f"/projects/{project_id}/merge_requests/{iid}")
        author = data.get("author") or {}
        return int(author.get("id") or 0), str(data.get("sha") or "")

    def award(self, project_id: int, iid: int, note_id: int, name: str) -> None:
        """Put an emoji on a note (the command's answer). Already there (GitLab says 404 then) counts as done."""
        path = f"/projects/{project_id}/merge_requests/{iid}/notes/{note_id}/award_emoji"
        try:
            self._call("POST award emoji", lambda: self._gl.http_post(path, post_data={"name": name}))
        except PermanentError as exc:
            if exc.status not in (404, 409):
                raise

    def group_projects(self, group: str, limit: int) -> list[dict[str, Any]]:
        """Up to `limit` projects of a group and its subgroups (for the doctor's glob entries)."""
        path = f"/groups/{quote(group, safe='')}/projects"
        query = {"include_subgroups": "true", "archived": "false", "per_page": 100}

        def first() -> list[dict[str, Any]]:
            items = self._gl.http_list(path, iterator=True, query_data=query)
            return [dict(p) for p, _ in zip(items, range(limit), strict=False)]

        return self._call("GET group projects", first)

    def ci_job_names(self, project_id: int, ref: str = "") -> tuple[bool, list[str], list[str]]:
        """GitLab's CI lint of the project's CI config at `ref` (default branch): (valid, job names, errors)."""
        query: dict[str, Any] = {"include_jobs": True}
        if ref:
            query["content_ref"] = ref
        data = self._call("GET ci lint", lambda: self._gl.http_get(f"/projects/{project_id}/ci/lint", query_data=query))
        if not isinstance(data, dict):
            raise PermanentError("GitLab sent no JSON object on GET ci lint")
        jobs = [str(j.get("name")) for j in data.get("jobs") or () if isinstance(j, dict) and j.get("name")]
        return bool(data.get("valid")), jobs, [str(e)[:300] for e in data.get("errors") or ()]

    def pipeline_sha(self, project_id: int, pipeline_id: int) -> str:
        """The commit a pipeline of this project ran for (404: no such pipeline here)."""
        data = self._get("GET pipeline", f"/projects/{project_id}/pipelines/{pipeline_id}")
        return str(data.get("sha") or "")

    def pipeline_status(self, project_id: int, pipeline_id: int) -> str:
        path = f"/projects/{project_id}/pipelines/{pipeline_id}"
        data = self._get("GET pipeline", path)
        return str(data.get("status") or "")

    def upsert_note(self, project_id: int, iid: int, body: str) -> int:
        """Edit the bot's marked note in place, or create it. Safe to retry: it finds before it posts."""
        base = f"/projects/{project_id}/merge_requests/{iid}/notes"
        me = self.bot_user_id()
        notes = self._call("GET notes", lambda: self._gl.http_list(base, get_all=True, query_data={"sort": "asc"}))
        # Ours: by the bot's own user (anyone can write the marker) and starting with the marker.
        mine = [
            n for n in notes if (n.get("author") or {}).get("id") == me and note_has_marker(str(n.get("body") or ""))
        ]
        if mine:
            note = mine[0]
            if note.get("body") != body:
                self._call("PUT note", lambda: self._gl.http_put(f"{base}/{note['id']}", post_data={"body": body}))
            return int(note["id"])
        created = self._call("POST note", lambda: self._gl.http_post(base, post_data={"body": body}))
        if not isinstance(created, dict):
            raise PermanentError("GitLab sent no JSON object on POST note")
        return int(created["id"])

    # --- what the doctor reads -------------------------------------------------------------------
    def current_user(self) -> dict[str, Any]:
        """GET /user: the bot's own account (PermanentError with status 401 for a bad token)."""
        return self._get("GET /user", "/user")

    def token_scopes(self) -> list[str] | None:
        """The token's scopes; None where GitLab cannot say (before 15.5, or not a personal access token)."""
        try:
            data = self._get("GET token", "/personal_access_tokens/self")
        except PermanentError:
            return None
        return [str(s) for s in data.get("scopes") or ()]

    def project(self, ident: int | str) -> dict[str, Any]:
        """GET /projects/:id by id or path, with the caller's permissions."""
        path = f"/projects/{quote(str(ident), safe='')}"
        return self._get("GET project", path)

    def hooks(self, kind: str, ident: int | str) -> list[dict[str, Any]] | None:
        """The webhooks of a project or group (`kind` "projects" or "groups"); None when not readable.

        Listing hooks needs Maintainer on a project and Owner on a group; group hooks need Premium (404).
        """
        path = f"/{kind}/{quote(str(ident), safe='')}/hooks"
        try:
            items = self._call("GET hooks", lambda: self._gl.http_list(path, get_all=True))
        except PermanentError:
            return None
        return [dict(h) for h in items]


__all__ = ["GitLabApi", "MergeRequest", "PermanentError", "RepoFileInfo", "TransientError"]
