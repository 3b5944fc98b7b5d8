"""State and rules of the fake GitLab: projects, members, pipelines, commit statuses, merge requests, notes and
their award emoji."""

from __future__ import annotations

import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import wraps
from typing import Any, TypeVar

BOT_USERNAME = "ecr-scan-gate-bot"

# doc/api/commits.md "Set the pipeline status of a commit": the accepted states, and
# "name, target_url, description, ref: must be 255 characters or fewer".
STATUS_STATES = ("pending", "running", "success", "failed", "canceled", "skipped")
STATUS_FIELD_LIMIT = 255
# doc/api/notes.md: "body ... Limited to 1,000,000 characters."
NOTE_BODY_LIMIT = 1_000_000
# GitLab.com limits note creation per user to 60 a minute (doc/user/gitlab_com/index.md).
NOTE_RATE_LIMIT = 60
NOTE_RATE_WINDOW_S = 60.0

# doc/api/members.md "Roles" (Gitlab::Access). Minimal access (5) and Admin (60) are not modelled.
ACCESS_LEVELS = {10: "Guest", 15: "Planner", 20: "Reporter", 30: "Developer", 40: "Maintainer", 50: "Owner"}
# The author of merge requests added without author_id: a user made on demand, with an id far from the small
# ids tests give their own users (a later add_user with this id simply takes its place).
MR_AUTHOR_ID = 900
MR_AUTHOR_USERNAME = "mr-author"
# Emoji names are checked against GitLab's emoji list (Gitlab::EmojiNameValidator); the fake only checks the
# shape of a name, and normalizes the two aliases the API spec exercises (Gitlab::Emoji.normalize_emoji_name).
_EMOJI_NAME = re.compile(r"^[a-z0-9_+-]+$")
_EMOJI_ALIASES = {"+1": "thumbsup", "-1": "thumbsdown"}

ACTIVE = ("created", "waiting_for_resource", "preparing", "pending", "running")
FINISHED = ("success", "failed", "canceled", "skipped")
JOB_STATES = (*ACTIVE, "success", "failed", "canceled", "skipped", "manual", "scheduled")

# app/models/commit_status.rb state machine: event fired for each requested state, and the states it
# may leave from. app/services/ci/create_commit_status_service.rb#apply_job_state! maps states to events.
EVENTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "pending": ("enqueue", ("created", "waiting_for_resource", "preparing", "skipped")),
    "running": ("run", ("pending",)),
    "success": ("success", ("created", "waiting_for_resource", "preparing", "pending", "running")),
    "failed": ("drop", ("created", "waiting_for_resource", "preparing", "pending", "running")),
    "canceled": ("cancel", ("created", "waiting_for_resource", "preparing", "pending", "running")),
    "skipped": ("skip", ("created", "waiting_for_resource", "preparing", "pending")),
}


def transition_error(event: str, current: str) -> str:
    """The state_machines gem's message as GitLab returns it.

    spec/requests/api/commit_statuses_spec.rb (current gitlabhq) expects the "(Reason(s): ...)" suffix;
    older GitLab sent the message without it, so clients must match on the prefix.
    """
    return f'Cannot transition status via :{event} from :{current} (Reason(s): Status cannot transition via "{event}")'


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ApiError(Exception):
    """An HTTP error answer: raised by the rules, rendered by the server."""

    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status} {body}")
        self.status = status
        self.body = body
        self.headers = headers or {}


def not_found(what: str | None = None) -> ApiError:
    # lib/api/helpers.rb not_found!: "404 <What> Not Found"; RecordNotFound gives "404 Not found".
    return ApiError(404, {"message": f"404 {what} Not Found" if what else "404 Not found"})


def bad_request(message: Any) -> ApiError:
    return ApiError(400, {"message": message})


def param_error(message: str) -> ApiError:
    # Grape parameter validation errors use the "error" key, not "message".
    return ApiError(400, {"error": message})


def forbidden() -> ApiError:
    return ApiError(403, {"message": "403 Forbidden"})


def insufficient_scope(scopes: list[str]) -> ApiError:
    # lib/api/api_guard.rb: Gitlab::Auth::InsufficientScopeError becomes rack-oauth2's Bearer::Forbidden, whose
    # body names the scopes registered for the endpoint (its own first, then API::API's), space-separated.
    return ApiError(
        403,
        {
            "error": "insufficient_scope",
            "error_description": "The request requires higher privileges than provided by the access token.",
            "scope": " ".join(scopes),
        },
    )


@dataclass
class User:
    id: int
    username: str
    token: str | None
    scopes: list[str] = field(default_factory=lambda: ["api"])
    bot: bool = False
    placeholder: bool = False  # made on demand (the default MR author): add_user may replace it

    def api(self, base: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "username": self.username,
            "name": self.username,
            "state": "active",
            "avatar_url": None,
            "web_url": f"{base}/{self.username}",
            "bot": self.bot,
        }


@dataclass
class Group:
    id: int
    full_path: str

    def api(self, base: str) -> dict[str, Any]:
        path = self.full_path.rsplit("/", 1)[-1]
        return {
            "id": self.id,
            "name": path,
            "path": path,
            "full_path": self.full_path,
            "web_url": f"{base}/groups/{self.full_path}",
            "parent_id": None,
        }


@dataclass
class Member:
    """A direct membership of a user in a project or a group (ProjectMember / GroupMember)."""

    source_type: str  # "project" or "group"
    source_id: int
    user_id: int
    access_level: int
    expires_at: str | None = None
    created_at: str = field(default_factory=now_iso)


@dataclass
class Project:
    id: int
    path_with_namespace: str
    namespace_id: int | None
    default_branch: str = "main"
    # sha -> branches containing it; "404 Commit Not Found" for any other sha, like a real repository.
    commits: dict[str, list[str]] = field(default_factory=dict)
    # branch -> its head commit, set by set_branch_head, add_commit and add_pipeline (the latest call wins).
    branch_heads: dict[str, str] = field(default_factory=dict)

    def api(self, base: str, group: Group | None) -> dict[str, Any]:
        namespace, _, path = self.path_with_namespace.rpartition("/")
        return {
            "id": self.id,
            "name": path,
            "path": path,
            "path_with_namespace": self.path_with_namespace,
            "name_with_namespace": self.path_with_namespace.replace("/", " / "),
            "namespace": {
                "id": self.namespace_id,
                "full_path": namespace,
                "path": namespace.rsplit("/", 1)[-1],
                "name": namespace.rsplit("/", 1)[-1],
                "kind": "group" if group else "user",
            },
            "default_branch": self.default_branch,
            "web_url": f"{base}/{self.path_with_namespace}",
            "permissions": {"project_access": {"access_level": 40, "notification_level": 3}, "group_access": None},
        }


@dataclass
class Pipeline:
    id: int
    iid: int
    project_id: int
    sha: str
    ref: str
    source: str
    status: str
    created_at: str = field(default_factory=now_iso)
    updated_at: str = field(default_factory=now_iso)

    def api(self, base: str, project: Project) -> dict[str, Any]:
        return {
            "id": self.id,
            "iid": self.iid,
            "project_id": self.project_id,
            "sha": self.sha,
            "ref": self.ref,
            "status": self.status,
            "source": self.source,
            "tag": False,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "web_url": f"{base}/{project.path_with_namespace}/-/pipelines/{self.id}",
        }


@dataclass
class Job:
    """A CI job (Ci::Build) defined by .gitlab-ci.yml, as opposed to an external commit status."""

    id: int
    project_id: int
    pipeline_id: int
    name: str
    stage: str
    status: str
    allow_failure: bool = False
    retried: bool = False
    created_at: str = field(default_factory=now_iso)


@dataclass
class CommitStatus:
    """An external status (GenericCommitStatus) posted through POST /projects/:id/statuses/:sha."""

    id: int
    project_id: int
    pipeline_id: int
    sha: str
    ref: str
    name: str
    status: str
    author_id: int
    description: str | None = None
    target_url: str | None = None
    coverage: float | None = None
    retried: bool = False
    created_at: str = field(default_factory=now_iso)
    started_at: str | None = None
    finished_at: str | None = None


@dataclass
class MergeRequest:
    id: int
    iid: int
    project_id: int
    title: str
    source_branch: str
    target_branch: str
    sha: str
    state: str
    commits: list[str] = field(default_factory=list)
    author_id: int = MR_AUTHOR_ID
    created_at: str = field(default_factory=now_iso)
    updated_at: str = field(default_factory=now_iso)


@dataclass
class Note:
    id: int
    project_id: int
    mr_iid: int
    mr_id: int
    author_id: int
    body: str
    quick_actions: list[str]
    mentions: list[str]
    system: bool = False
    created_at: str = field(default_factory=now_iso)
    updated_at: str = field(default_factory=now_iso)


@dataclass
class AwardEmoji:
    """An emoji reaction on a merge request note (awardable_type "Note")."""

    id: int
    note_id: int
    user_id: int
    name: str
    created_at: str = field(default_factory=now_iso)
    updated_at: str = field(default_factory=now_iso)


@dataclass
class Hook:
    id: int
    url: str
    project_id: int | None
    group_id: int | None
    push_events: bool
    pipeline_events: bool
    job_events: bool
    merge_requests_events: bool
    note_events: bool
    token: str | None
    enable_ssl_verification: bool = True
    created_at: str = field(default_factory=now_iso)

    def api(self) -> dict[str, Any]:
        # GitLab never returns the secret token of a hook, only whether events are on.
        owner = {"project_id": self.project_id} if self.project_id is not None else {"group_id": self.group_id}
        return {
            "id": self.id,
            "url": self.url,
            **owner,
            "created_at": self.created_at,
            "push_events": self.push_events,
            "pipeline_events": self.pipeline_events,
            "job_events": self.job_events,
            "merge_requests_events": self.merge_requests_events,
            "note_events": self.note_events,
            "enable_ssl_verification": self.enable_ssl_verification,
            "alert_status": "executable",
            "disabled_until": None,
        }


@dataclass
class Fault:
    method: str
    path_regex: str
    status: int | None
    times: int
    retry_after: int | None = None
    body: Any = None
    delay_s: float = 0.0

    def matches(self, method: str, path: str) -> bool:
        return self.times > 0 and self.method in ("*", method) and re.search(self.path_regex, path) is not None


# --- Markdown scanning (record only; the fake never acts on a quick action or a mention) ----------------

# lib/gitlab/quick_actions/extractor.rb: commands are not read inside ``` code blocks, inline code
# (even spanning lines), <tag>...</tag> HTML blocks and >>> quote blocks.
_QA_EXCLUDED = re.compile(
    r"^```.+?\n```$|`\n*.+?\n*`|^<[^>]+?>\n.+?\n</[^>]+?>$|^>>>.+?\n>>>$", re.MULTILINE | re.DOTALL
)
# ...and a command is "/name" at the very start of a line, then a space or the end of the line. GitLab
# only matches known command names; recording every such word is stricter, which suits security tests.
_QA_COMMAND = re.compile(r"^/([A-Za-z_][\w-]*)(?: [^\n]*)?[ \t]*$", re.MULTILINE)
# Mentions are expanded on the rendered text, never inside code spans or fenced blocks.
_MD_CODE = re.compile(r"^(```|~~~).*?^\1[^\n]*$|(`+)(?!`).+?(?<!`)\2(?!`)", re.MULTILINE | re.DOTALL)
# app/models/user.rb reference_pattern: "@" not preceded by a word character (so e-mail addresses are not
# mentions); a backslash does not escape it here, which is again the stricter reading.
_MENTION = re.compile(r"(?<![\w])@([A-Za-z0-9_][A-Za-z0-9_.-]*[A-Za-z0-9_-]|[A-Za-z0-9_])")


def quick_actions(body: str) -> list[str]:
    text = _QA_EXCLUDED.sub("", body.replace("\r", ""))
    return [m.group(1).lower() for m in _QA_COMMAND.finditer(text)]


def mentions(body: str) -> list[str]:
    return _MENTION.findall(_MD_CODE.sub("", body))


F = TypeVar("F", bound=Callable[..., Any])


def locked(fn: F) -> F:
    """Every public method runs under the one lock: HTTP threads and the test thread share this state."""

    @wraps(fn)
    def wrapper(self: GitLabState, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return fn(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


class GitLabState:
    """All objects of the fake, the GitLab rules that change them, and a control API for tests."""

    def __init__(
        self,
        token: str = "fake-gitlab-token",
        bot_user_id: int = 1,
        bot_username: str = BOT_USERNAME,
        note_rate_limit: int = NOTE_RATE_LIMIT,
        note_rate_window_s: float = NOTE_RATE_WINDOW_S,
    ) -> None:
        self._lock = threading.RLock()
        self._bot = (bot_user_id, bot_username, token)
        self._rate = (note_rate_limit, note_rate_window_s)
        self.base_url = "http://gitlab.invalid"  # the server sets its real URL at start()
        self.reset()

    # --- control API (also served as POST/GET /_fake/<method>) ----------------------------------------

    @locked
    def reset(self) -> None:
        """Forget everything except the bot user and the configured limits."""
        self.users: dict[int, User] = {}
        self.groups: dict[int, Group] = {}
        self.projects: dict[int, Project] = {}
        self.pipelines_by_id: dict[int, Pipeline] = {}
        self.jobs: dict[int, Job] = {}
        self.commit_statuses: list[CommitStatus] = []
        self.merge_requests: dict[tuple[int, int], MergeRequest] = {}
        self.notes_by_id: dict[int, Note] = {}
        self.award_emoji: list[AwardEmoji] = []
        self.members: dict[tuple[str, int, int], Member] = {}
        self.hooks: list[Hook] = []
        self.faults: list[Fault] = []
        self.request_log: list[dict[str, Any]] = []
        self.triggered: list[dict[str, Any]] = []
        self.note_rate_limit, self.note_rate_window_s = self._rate
        self._note_times: dict[int, deque[float]] = {}
        self._counters: dict[str, int] = {}
        bot_id, bot_name, token = self._bot
        self.bot_user_id = bot_id
        self.users[bot_id] = User(bot_id, bot_name, token, bot=True)

    @locked
    def configure(self, note_rate_limit: int | None = None, note_rate_window_s: float | None = None) -> None:
        if note_rate_limit is not None:
            self.note_rate_limit = note_rate_limit
        if note_rate_window_s is not None:
            self.note_rate_window_s = note_rate_window_s

    @locked
    def add_user(
        self, user_id: int, username: str, token: str | None = None, scopes: list[str] | None = None
    ) -> dict[str, Any]:
        existing = self.users.get(user_id)
        self._require_new(existing is not None and not existing.placeholder, "user", user_id)
        user = User(user_id, username, token, scopes if scopes is not None else ["api"])
        self.users[user_id] = user
        return user.api(self.base_url)

    @locked
    def set_token_scopes(self, scopes: list[str], user_id: int | None = None) -> None:
        """E.g. ["read_api"] so a doctor command can be tested against a token that cannot write."""
        self.users[user_id or self.bot_user_id].scopes = list(scopes)

    @locked
    def add_group(self, group_id: int, full_path: str) -> dict[str, Any]:
        self._require_new(group_id in self.groups, "group", group_id)
        self.groups[group_id] = Group(group_id, full_path)
        return self.groups[group_id].api(self.base_url)

    @locked
    def add_project(
        self, project_id: int, path_with_namespace: str, namespace_id: int | None = None, default_branch: str = "main"
    ) -> dict[str, Any]:
        self._require_new(project_id in self.projects, "project", project_id)
        project = Project(project_id, path_with_namespace, namespace_id, default_branch)
        self.projects[project_id] = project
        return project.api(self.base_url, self.groups.get(namespace_id or -1))

    @locked
    def add_member(
        self, project_id: int, user_id: int, access_level: int, expires_at: str | None = None
    ) -> dict[str, Any]:
        """A direct project membership of an existing user (10 Guest, 15 Planner, 20 Reporter, 30 Developer,
        40 Maintainer, 50 Owner). Calling it again for the same user changes the level, like
        PUT /projects/:id/members/:user_id. Nobody, not even the bot, is a member of anything until a test says so."""
        return self._add_member("project", self._project(project_id).id, user_id, access_level, expires_at)

    @locked
    def add_group_member(
        self, group_id: int, user_id: int, access_level: int, expires_at: str | None = None
    ) -> dict[str, Any]:
        """A group membership, inherited by every project of the group and of its subgroups (by path prefix)."""
        if group_id not in self.groups:
            raise not_found("Group")
        return self._add_member("group", group_id, user_id, access_level, expires_at)

    @locked
    def add_commit(self, project_id: int, sha: str, branches: list[str] | None = None) -> None:
        """Make a sha known without a pipeline (a status posted then has to create one); it becomes the head of
        each of `branches`."""
        project = self._project(project_id)
        self._remember_commit(project, sha, *(branches or []))
        for branch in branches or []:
            project.branch_heads[branch] = sha

    @locked
    def set_branch_head(self, project_id: int, branch: str, sha: str) -> None:
        """A push: `branch` now points at `sha` (which becomes a known commit of the branch)."""
        project = self._project(project_id)
        self._remember_commit(project, sha, branch)
        project.branch_heads[branch] = sha

    @locked
    def add_pipeline(
        self,
        project_id: int,
        pipeline_id: int,
        sha: str,
        ref: str | None = None,
        source: str = "push",
        jobs: list[dict[str, Any]] | None = None,
        status: str | None = None,
        merge_request_iid: int | None = None,
    ) -> dict[str, Any]:
        """A CI pipeline. For source "merge_request_event" the ref is refs/merge-requests/<iid>/head
        (doc/ci/pipelines/merge_request_pipelines.md); pass merge_request_iid to have it built."""
        project = self._project(project_id)
        self._require_new(pipeline_id in self.pipelines_by_id, "pipeline", pipeline_id)
        if source == "merge_request_event":
            if ref is None and merge_request_iid is not None:
                ref = f"refs/merge-requests/{merge_request_iid}/head"
            if not (ref or "").startswith("refs/merge-requests/"):
                raise ValueError("a merge request pipeline's ref is refs/merge-requests/<iid>/head (or /merge)")
        if not ref:
            raise ValueError("ref is required (or merge_request_iid for a merge request pipeline)")
        pipeline = Pipeline(
            pipeline_id, self._next("pipeline_iid", project_id), project_id, sha, ref, source, status or "created"
        )
        self.pipelines_by_id[pipeline_id] = pipeline
        self._remember_commit(project, sha, *([] if ref.startswith("refs/") else [ref]))
        if not ref.startswith("refs/"):
            project.branch_heads[ref] = sha  # a branch pipeline runs for the branch's head
        for spec in jobs or []:
            self._add_job(pipeline, spec)
        if status is None:
            self._recompute(pipeline)
        return self._pipeline_api(pipeline)

    @locked
    def add_job(
        self,
        pipeline_id: int,
        job_id: int,
        name: str,
        stage: str = "test",
        status: str = "created",
        allow_failure: bool = False,
    ) -> dict[str, Any]:
        """A job added later, e.g. a retry: older jobs of the same name become retried (hidden)."""
        pipeline = self._pipeline(pipeline_id)
        job = self._add_job(
            pipeline, {"id": job_id, "name": name, "stage": stage, "status": status, "allow_failure": allow_failure}
        )
        self._recompute(pipeline)
        return self._job_api(job)

    @locked
    def set_job_status(self, job_id: int, status: str) -> dict[str, Any]:
        if status not in JOB_STATES:
            raise ValueError(f"unknown job status {status!r}")
        job = self.jobs.get(job_id)
        if job is None:
            raise not_found("Job")
        job.status = status
        self._recompute(self.pipelines_by_id[job.pipeline_id])
        return self._job_api(job)

    @locked
    def set_pipeline_status(self, pipeline_id: int, status: str) -> dict[str, Any]:
        """Force a pipeline's status (it is recomputed again at the next job or status change)."""
        pipeline = self._pipeline(pipeline_id)
        pipeline.status = status
        pipeline.updated_at = now_iso()
        return self._pipeline_api(pipeline)

    @locked
    def add_merge_request(
        self,
        project_id: int,
        iid: int,
        source_branch: str,
        target_branch: str,
        sha: str,
        state: str = "opened",
        title: str | None = None,
        author_id: int | None = None,
    ) -> dict[str, Any]:
        """An MR by author_id (an existing user), by default user 900 "mr-author", made on demand."""
        project = self._project(project_id)
        self._require_new((project_id, iid) in self.merge_requests, "merge request", iid)
        author = self._user(author_id) if author_id is not None else self._default_mr_author()
        mr = MergeRequest(
            self._next("mr_id"),
            iid,
            project_id,
            title or f"MR !{iid}",
            source_branch,
            target_branch,
            sha,
            state,
            [sha],
            author_id=author.id,
        )
        self.merge_requests[(project_id, iid)] = mr
        self._remember_commit(project, sha, source_branch)
        return self._mr_api(mr, detailed=True)

    @locked
    def set_mr_head(self, project_id: int, iid: int, sha: str) -> dict[str, Any]:
        """A push to the source branch: the MR's head moves, its older commits stay part of it."""
        mr = self._mr(self._project(project_id), iid)
        mr.sha = sha
        mr.commits.append(sha)
        mr.updated_at = now_iso()
        self._remember_commit(self.projects[project_id], sha, mr.source_branch)
        return self._mr_api(mr, detailed=True)

    @locked
    def set_mr_state(self, project_id: int, iid: int, state: str) -> dict[str, Any]:
        mr = self._mr(self._project(project_id), iid)
        mr.state = state
        return self._mr_api(mr, detailed=True)

    @locked
    def add_note(
        self, project_id: int, iid: int, body: str, user_id: int | None = None, system: bool = False
    ) -> dict[str, Any]:
        """A note by any existing user (default the bot), bypassing validation and the rate limit. system=True
        makes a system note ("changed the description", "added 1 commit"...): GitLab writes those itself, runs no
        quick action from them, lets nobody edit them or award emoji on them, and sends no Note Hook for them."""
        mr = self._mr(self._project(project_id), iid)
        return self._note_api(self._store_note(mr, self._user(user_id or self.bot_user_id), body, system=system))

    @locked
    def add_hook(
        self,
        url: str,
        project_id: int | None = None,
        group_id: int | None = None,
        push_events: bool = False,
        pipeline_events: bool = True,
        job_events: bool = True,
        merge_requests_events: bool = False,
        note_events: bool = False,
        token: str | None = None,
        enable_ssl_verification: bool = True,
    ) -> dict[str, Any]:
        if (project_id is None) == (group_id is None):
            raise ValueError("give exactly one of project_id, group_id")
        if project_id is not None:
            self._project(project_id)
        elif group_id not in self.groups:
            raise not_found("Group")
        hook = Hook(
            self._next("hook"),
            url,
            project_id,
            group_id,
            push_events,
            pipeline_events,
            job_events,
            merge_requests_events,
            note_events,
            token,
            enable_ssl_verification,
        )
        self.hooks.append(hook)
        return hook.api()

    @locked
    def inject_fault(
        self,
        method: str,
        path_regex: str,
        status: int | None = None,
        times: int = 1,
        retry_after: int | None = None,
        body: Any = None,
        delay_s: float = 0.0,
    ) -> dict[str, Any]:
        """The next `times` requests matching method ("*" for any) and path_regex (re.search on the path
        without query, e.g. "/statuses/") wait delay_s, then get `status` (None: handled normally)."""
        re.compile(path_regex)  # fail here, not in a server thread
        fault = Fault(method.upper() if method != "*" else "*", path_regex, status, times, retry_after, body, delay_s)
        self.faults.append(fault)
        return vars(fault).copy()

    @locked
    def clear_faults(self) -> None:
        self.faults.clear()

    # --- snapshots ------------------------------------------------------------------------------------

    @locked
    def statuses(self, project_id: int, sha: str) -> list[dict[str, Any]]:
        """Every external status on the sha, hidden (retried) ones included, in creation order."""
        return [
            self._status_api(s) | {"retried": s.retried}
            for s in self.commit_statuses
            if s.project_id == project_id and s.sha == sha
        ]

    @locked
    def latest_statuses(self, project_id: int, sha: str, pipeline_id: int | None = None) -> dict[str, dict[str, Any]]:
        """name -> the newest visible external status of that name."""
        latest: dict[str, dict[str, Any]] = {}
        for s in self.commit_statuses:
            if s.project_id == project_id and s.sha == sha and not s.retried and pipeline_id in (None, s.pipeline_id):
                latest[s.name] = self._status_api(s)
        return latest

    @locked
    def notes(self, project_id: int, iid: int) -> list[dict[str, Any]]:
        """Notes of the MR in creation order, with what GitLab would have acted on."""
        return [
            self._note_api(n) | {"quick_actions": n.quick_actions, "mentions": n.mentions}
            for n in sorted(self.notes_by_id.values(), key=lambda n: n.id)
            if n.project_id == project_id and n.mr_iid == iid
        ]

    @locked
    def awards(self, project_id: int, iid: int, note_id: int) -> list[dict[str, Any]]:
        """Award emoji on a note of the MR, in creation order."""
        note = self._award_note(self._project(project_id), iid, note_id)
        return [self._award_api(a) for a in self.award_emoji if a.note_id == note.id]

    @locked
    def pipelines(self, project_id: int | None = None, source: str | None = None) -> list[dict[str, Any]]:
        """All pipelines, including "external" ones that a status post created."""
        return [
            self._pipeline_api(p)
            for p in sorted(self.pipelines_by_id.values(), key=lambda p: p.id)
            if project_id in (None, p.project_id) and source in (None, p.source)
        ]

    @locked
    def merge_request(self, project_id: int, iid: int) -> dict[str, Any]:
        return self._mr_api(self._mr(self._project(project_id), iid), detailed=True)

    @locked
    def quick_actions_triggered(self) -> list[dict[str, Any]]:
        """Every quick action GitLab would have run from an API-written note, in order."""
        return list(self.triggered)

    @locked
    def requests(self, method: str | None = None, path_regex: str | None = None) -> list[dict[str, Any]]:
        """The request log: method, path, query, json body, status, user, in arrival order."""
        return [
            dict(r)
            for r in self.request_log
            if method in (None, r["method"]) and (path_regex is None or re.search(path_regex, r["path"]))
        ]

    @locked
    def request_count(self, method: str | None = None, path_regex: str | None = None, status: int | None = None) -> int:
        return sum(1 for r in self.requests(method, path_regex) if status in (None, r["status"]))

    @locked
    def request_counts(self) -> dict[str, int]:
        """Counts keyed "METHOD /path STATUS"."""
        counts: dict[str, int] = {}
        for r in self.request_log:
            key = f"{r['method']} {r['path']} {r['status']}"
            counts[key] = counts.get(key, 0) + 1
        return counts

    # --- rules behind the REST endpoints -------------------------------------------------------------

    @locked
    def authenticate(self, token: str | None) -> User | None:
        return next((u for u in self.users.values() if token and u.token == token), None)

    @locked
    def take_fault(self, method: str, path: str) -> Fault | None:
        for fault in self.faults:
            if fault.matches(method, path):
                fault.times -= 1
                return Fault(**vars(fault))
        return None

    @locked
    def log_request(self, entry: dict[str, Any]) -> None:
        self.request_log.append(entry)

    @locked
    def find_project(self, ident: str) -> Project:
        """:id is a numeric id or the URL-encoded path (doc/api/rest/index.md "Namespaced paths")."""
        if ident.isdigit() and int(ident) in self.projects:
            return self.projects[int(ident)]
        for project in self.projects.values():
            if project.path_with_namespace == ident:
                return project
        raise not_found("Project")

    @locked
    def find_group(self, ident: str) -> Group:
        if ident.isdigit() and int(ident) in self.groups:
            return self.groups[int(ident)]
        for group in self.groups.values():
            if group.full_path == ident:
                return group
        raise not_found("Group")

    @locked
    def create_status(self, user: User, project: Project, sha: str, params: dict[str, Any]) -> dict[str, Any]:
        """POST /projects/:id/statuses/:sha, after lib/api/commit_statuses.rb and
        app/services/ci/create_commit_status_service.rb."""
        state = params.get("state")
        if state in (None, ""):
            raise param_error("state is missing")
        if state not in STATUS_STATES:
            raise param_error("state does not have a valid value")
        for key in ("name", "context", "target_url", "description", "ref"):
            value = params.get(key)
            if value is not None and len(str(value)) > STATUS_FIELD_LIMIT:
                # lib/api/validations/validators/limit.rb words it "less than" though 255 itself passes.
                raise param_error(f"{key} must be less than {STATUS_FIELD_LIMIT} characters")
        pipeline_id = self._int_param(params, "pipeline_id")
        if sha not in project.commits:
            raise not_found("Commit")
        ref_param = params.get("ref") or None
        # first_matching_pipeline: newest pipeline of the sha, narrowed by ref and pipeline_id when given.
        matching = [
            p
            for p in self.pipelines_by_id.values()
            if p.project_id == project.id
            and p.sha == sha
            and ref_param in (None, p.ref)
            and pipeline_id in (None, p.id)
        ]
        first = max(matching, key=lambda p: p.id, default=None)
        if pipeline_id is not None and first is None:
            raise not_found("Pipeline for pipeline_id, sha and ref")
        branches = project.commits[sha]
        ref = ref_param or (first.ref if first else None) or (branches[0] if branches else None)
        if ref is None:
            raise not_found("References for commit")
        name = params.get("name") or params.get("context") or "default"
        # No matching pipeline: GitLab creates one with source "external". This is how a status posted with
        # the branch name as ref, for a detached MR pipeline (ref refs/merge-requests/<iid>/head), ends up
        # in a stray pipeline that the MR does not wait for.
        pipeline = first or self._new_pipeline(project, sha, ref, "external")
        # CommitStatus#name_uniqueness_across_types: a CI job of that name in the pipeline blocks it.
        if any(j.pipeline_id == pipeline.id and j.name == name for j in self.jobs.values()):
            raise bad_request({"name": ["has already been taken"]})
        # external_commit_status_scope: only a pending/running status of this name, ref and user is
        # updated in place; after success/failed/canceled/skipped a new status job is created.
        existing = next(
            (
                s
                for s in reversed(self.commit_statuses)
                if s.pipeline_id == pipeline.id
                and s.name == name
                and s.ref == ref
                and s.author_id == user.id
                and s.status in ("pending", "running")
                and not s.retried
            ),
            None,
        )
        current = existing.status if existing else "created"
        if state == "running" and current == "created":
            current = "pending"  # apply_job_state!: `job.enqueue` (no bang) before `job.run!`
        event, sources = EVENTS[state]
        if current not in sources:
            raise bad_request(transition_error(event, current))
        status = existing or CommitStatus(
            self._next_build_id(), project.id, pipeline.id, sha, ref, name, "created", user.id
        )
        for key in ("description", "target_url"):
            if params.get(key) is not None:
                setattr(status, key, str(params[key]))
        if params.get("coverage") is not None:
            status.coverage = float(params["coverage"])
        status.status = state
        if state == "running":
            status.started_at = now_iso()
        if state in FINISHED:
            status.finished_at = now_iso()
        if existing is None:
            # The new job hides older ones of the same name in the pipeline (they become "retried").
            for older in self.commit_statuses:
                if older.pipeline_id == pipeline.id and older.name == name:
                    older.retried = True
            self.commit_statuses.append(status)
        self._recompute(pipeline)
        return self._status_api(status)

    @locked
    def list_statuses(self, project: Project, sha: str, query: dict[str, str]) -> list[dict[str, Any]]:
        """GET /projects/:id/repository/commits/:sha/statuses: CI jobs and external statuses alike, latest
        per name and pipeline unless all=true; filters ref, stage, name, pipeline_id; order_by id|pipeline_id."""
        if sha not in project.commits:
            raise not_found("Commit")
        pipeline_id = self._int_param(query, "pipeline_id")
        show_all = query.get("all", "").lower() in ("1", "true", "yes")
        rows: list[tuple[int, int, str, str, str, bool, dict[str, Any]]] = []
        for s in self.commit_statuses:
            if s.project_id == project.id and s.sha == sha:
                rows.append((s.id, s.pipeline_id, s.ref, s.name, "external", s.retried, self._status_api(s)))
        for j in self.jobs.values():
            p = self.pipelines_by_id[j.pipeline_id]
            if p.project_id == project.id and p.sha == sha:
                rows.append((j.id, p.id, p.ref, j.name, j.stage, j.retried, self._job_status_api(j)))
        rows = [
            r
            for r in rows
            if (show_all or not r[5])
            and query.get("ref", r[2]) == r[2]
            and query.get("stage", r[4]) == r[4]
            and query.get("name", r[3]) == r[3]
            and pipeline_id in (None, r[1])
        ]
        order_by = query.get("order_by", "id")
        if order_by not in ("id", "pipeline_id"):
            raise param_error("order_by does not have a valid value")
        rows.sort(
            key=lambda r: (r[1], r[0]) if order_by == "pipeline_id" else r[0], reverse=query.get("sort") == "desc"
        )
        return [r[6] for r in rows]

    @locked
    def commit_merge_requests(self, project: Project, sha: str, query: dict[str, str]) -> list[dict[str, Any]]:
        """MRs of this project only whose commits (head or earlier) or MR pipelines include the sha."""
        if sha not in project.commits:
            raise not_found("Commit")
        found = []
        for mr in self.merge_requests.values():
            if mr.project_id != project.id or query.get("state", mr.state) not in (mr.state, "all"):
                continue
            mr_refs = (f"refs/merge-requests/{mr.iid}/head", f"refs/merge-requests/{mr.iid}/merge")
            in_pipeline = any(
                p.project_id == project.id and p.sha == sha and p.ref in mr_refs for p in self.pipelines_by_id.values()
            )
            if sha in mr.commits or in_pipeline:
                found.append(self._mr_api(mr, detailed=False))
        return sorted(found, key=lambda m: m["id"], reverse=True)

    @locked
    def get_merge_request(self, project: Project, iid: int) -> dict[str, Any]:
        return self._mr_api(self._mr(project, iid), detailed=True)

    @locked
    def list_notes(self, project: Project, iid: int, query: dict[str, str]) -> list[dict[str, Any]]:
        # doc/api/notes.md: order_by created_at (default) or updated_at, sort desc by default.
        mr = self._mr(project, iid)
        order_by = query.get("order_by", "created_at")
        if order_by not in ("created_at", "updated_at"):
            raise param_error("order_by does not have a valid value")
        notes = [n for n in self.notes_by_id.values() if n.project_id == project.id and n.mr_iid == mr.iid]
        notes.sort(key=lambda n: (getattr(n, order_by), n.id), reverse=query.get("sort", "desc") != "asc")
        return [self._note_api(n) for n in notes]

    @locked
    def get_note(self, project: Project, iid: int, note_id: int) -> dict[str, Any]:
        return self._note_api(self._note(self._mr(project, iid), note_id))

    @locked
    def create_note(self, user: User, project: Project, iid: int, body: Any) -> dict[str, Any]:
        mr = self._mr(project, iid)
        if body is None:
            raise param_error("body is missing")
        self._check_note_rate(user)
        self._validate_note_body(body)
        return self._note_api(self._store_note(mr, user, str(body)))

    @locked
    def update_note(self, user: User, project: Project, iid: int, note_id: int, body: Any) -> dict[str, Any]:
        note = self._note(self._mr(project, iid), note_id)
        if body is None:
            raise param_error("body, confidential are missing, at least one parameter must be provided")
        if note.author_id != user.id or note.system:
            # lib/api/helpers/notes_helpers.rb update_note: authorize! :admin_note, which NotePolicy gives the
            # author only, and never for a system note (`rule { ~editable }.prevent :admin_note`).
            raise forbidden()
        self._validate_note_body(body)
        note.body = str(body)
        note.updated_at = now_iso()
        self._scan_note(note)
        return self._note_api(note)

    @locked
    def list_members(self, project: Project, query: dict[str, str], inherited: bool) -> list[dict[str, Any]]:
        """GET /projects/:id/members(/all): direct members, or with inherited=True the effective membership of
        every user (the highest level of the project's and its ancestor groups'); filters `query` (a substring of
        the username, which is also the fake's name) and `user_ids` (comma-separated)."""
        user_ids = {int(u) for u in re.split(r"[,\s]+", query.get("user_ids", "")) if u.isdigit()}
        text = query.get("query", "").lower()
        found = []
        for user_id in sorted({m.user_id for m in self._memberships(project, inherited)}):
            member = self._membership(project, user_id, inherited)
            user = self.users.get(user_id)
            if member is None or user is None:
                continue
            if (not user_ids or user_id in user_ids) and (text in user.username.lower()):
                found.append(self._member_api(member))
        return found

    @locked
    def get_member(self, project: Project, user_id: int, inherited: bool) -> dict[str, Any]:
        """GET /projects/:id/members/:user_id (direct only) and /members/all/:user_id (inherited too).

        lib/api/members.rb: `members.find_by!(user_id: ...)`; its ActiveRecord::RecordNotFound is rendered
        "404 Not found" (lib/api/api.rb), for a non-member and an unknown user alike."""
        member = self._membership(project, user_id, inherited)
        if member is None or member.user_id not in self.users:
            raise not_found()
        return self._member_api(member)

    @locked
    def list_awards(self, project: Project, iid: int, note_id: int) -> list[dict[str, Any]]:
        note = self._award_note(project, iid, note_id)
        return [self._award_api(a) for a in self.award_emoji if a.note_id == note.id]

    @locked
    def get_award(self, project: Project, iid: int, note_id: int, award_id: int) -> dict[str, Any]:
        note = self._award_note(project, iid, note_id)
        award = next((a for a in self.award_emoji if a.note_id == note.id and a.id == award_id), None)
        if award is None:
            raise not_found()  # awardable.award_emoji.find(params[:award_id])
        return self._award_api(award)

    @locked
    def create_award(self, user: User, project: Project, iid: int, note_id: int, name: str) -> dict[str, Any]:
        """POST .../notes/:note_id/award_emoji, after lib/api/award_emoji.rb and AwardEmojis::AddService: every
        failure of the service is answered not_found!("Award Emoji #{message}"), i.e. a 404."""
        note = self._award_note(project, iid, note_id)
        if note.system:
            # AddService: `unless awardable.emoji_awardable?` (false for a system note).
            raise not_found("Award Emoji Awardable cannot be awarded emoji")
        name = _EMOJI_ALIASES.get(str(name), str(name))
        # AwardEmoji validations, joined by AwardEmojis::BaseService#error with to_sentence.
        errors = []
        if not name.strip():
            errors.append("Name can't be blank")
        if not _EMOJI_NAME.match(name):
            errors.append("Name is not a valid emoji name")
        elif any(a.note_id == note.id and a.user_id == user.id and a.name == name for a in self.award_emoji):
            errors.append("Name has already been taken")  # uniqueness scoped to user and awardable
        if errors:
            raise not_found("Award Emoji " + " and ".join(errors))
        award = AwardEmoji(self._next("award"), note.id, user.id, name)
        self.award_emoji.append(award)
        return self._award_api(award)

    @locked
    def get_pipeline(self, project: Project, pipeline_id: int) -> dict[str, Any]:
        pipeline = self.pipelines_by_id.get(pipeline_id)
        if pipeline is None or pipeline.project_id != project.id:
            raise not_found()
        return self._pipeline_api(pipeline)

    @locked
    def pipeline_jobs(self, project: Project, pipeline_id: int, query: dict[str, str]) -> list[dict[str, Any]]:
        """Only CI jobs: external statuses are not jobs. Retried jobs only with include_retried=true."""
        self.get_pipeline(project, pipeline_id)
        include_retried = query.get("include_retried", "").lower() in ("1", "true")
        scopes = [s for s in (query.get("scope"), query.get("scope[]")) if s]
        jobs = [
            j
            for j in self.jobs.values()
            if j.pipeline_id == pipeline_id
            and (include_retried or not j.retried)
            and (not scopes or j.status in scopes)
        ]
        return [self._job_api(j) for j in sorted(jobs, key=lambda j: j.id, reverse=True)]

    @locked
    def get_job(self, project: Project, job_id: int) -> dict[str, Any]:
        job = self.jobs.get(job_id)
        if job is None or job.project_id != project.id:
            raise not_found()
        return self._job_api(job)

    @locked
    def group_projects(self, group: Group, query: dict[str, str]) -> list[dict[str, Any]]:
        """GET /groups/:id/projects (doc/api/groups.md): the group's own projects, its subgroups' too with
        include_subgroups=true; ordered by created_at desc (GitLab's default), here by id desc."""
        subgroups = query.get("include_subgroups", "").lower() in ("true", "1")
        mine = [
            p
            for p in self.projects.values()
            if p.path_with_namespace.rpartition("/")[0] == group.full_path
            or (subgroups and p.path_with_namespace.startswith(group.full_path + "/"))
        ]
        # Lists carry no `permissions` (API::Entities::ProjectWithAccess is for GET /projects/:id only).
        listed = [self.project_api(p) for p in sorted(mine, key=lambda p: -p.id)]
        return [{k: v for k, v in p.items() if k != "permissions"} for p in listed]

    @locked
    def list_hooks(self, project: Project | None = None, group: Group | None = None) -> list[dict[str, Any]]:
        return [
            h.api()
            for h in self.hooks
            if (project and h.project_id == project.id) or (group and h.group_id == group.id)
        ]

    @locked
    def token_info(self, user: User) -> dict[str, Any]:
        return {
            "id": user.id,
            "name": f"{user.username}-token",
            "revoked": False,
            "created_at": now_iso(),
            "scopes": list(user.scopes),
            "user_id": user.id,
            "last_used_at": now_iso(),
            "active": True,
            "expires_at": None,
        }

    @locked
    def user_api(self, user: User) -> dict[str, Any]:
        return user.api(self.base_url)

    @locked
    def project_api(self, project: Project) -> dict[str, Any]:
        return project.api(self.base_url, self.groups.get(project.namespace_id or -1))

    @locked
    def group_api(self, group: Group) -> dict[str, Any]:
        return group.api(self.base_url)

    # --- helpers -------------------------------------------------------------------------------------

    def _require_new(self, exists: bool, what: str, ident: Any) -> None:
        if exists:
            raise ValueError(f"{what} {ident} already exists")

    def _next(self, counter: str, scope: Any = None) -> int:
        key = f"{counter}:{scope}"
        self._counters[key] = self._counters.get(key, 0) + 1
        return self._counters[key]

    def _next_build_id(self) -> int:
        # CI jobs and commit statuses share one id space in GitLab (the ci_builds table).
        return max([1000, *self.jobs, *(s.id for s in self.commit_statuses)]) + 1

    @staticmethod
    def _int_param(params: dict[str, Any], key: str) -> int | None:
        value = params.get(key)
        if value in (None, ""):
            return None
        try:
            return int(value)
        except (TypeError, ValueError):
            raise param_error(f"{key} is invalid") from None

    def _project(self, project_id: int) -> Project:
        if project_id not in self.projects:
            raise not_found("Project")
        return self.projects[project_id]

    def _pipeline(self, pipeline_id: int) -> Pipeline:
        if pipeline_id not in self.pipelines_by_id:
            raise not_found()
        return self.pipelines_by_id[pipeline_id]

    def _user(self, user_id: int) -> User:
        if user_id not in self.users:
            raise not_found("User")
        return self.users[user_id]

    def _mr(self, project: Project, iid: int) -> MergeRequest:
        mr = self.merge_requests.get((project.id, int(iid)))
        if mr is None:
            raise not_found("Merge Request")
        return mr

    def _default_mr_author(self) -> User:
        if MR_AUTHOR_ID not in self.users:
            self.users[MR_AUTHOR_ID] = User(MR_AUTHOR_ID, MR_AUTHOR_USERNAME, None, placeholder=True)
        return self.users[MR_AUTHOR_ID]

    def _add_member(
        self, source_type: str, source_id: int, user_id: int, access_level: int, expires_at: str | None
    ) -> dict[str, Any]:
        self._user(user_id)
        if access_level not in ACCESS_LEVELS:
            raise ValueError(f"access_level must be one of {sorted(ACCESS_LEVELS)}, not {access_level!r}")
        key = (source_type, source_id, user_id)
        member = self.members.get(key) or Member(source_type, source_id, user_id, access_level)
        member.access_level, member.expires_at = access_level, expires_at
        self.members[key] = member
        return self._member_api(member)

    def _ancestor_groups(self, project: Project) -> list[Group]:
        """The project's group and every group above it (a nested path "acme/platform/x" has two)."""
        return [
            g
            for g in self.groups.values()
            if g.id == project.namespace_id or project.path_with_namespace.startswith(g.full_path + "/")
        ]

    def _memberships(self, project: Project, inherited: bool) -> list[Member]:
        found = [m for m in self.members.values() if m.source_type == "project" and m.source_id == project.id]
        if inherited:
            group_ids = {g.id for g in self._ancestor_groups(project)}
            found += [m for m in self.members.values() if m.source_type == "group" and m.source_id in group_ids]
        return found

    def _membership(self, project: Project, user_id: int, inherited: bool) -> Member | None:
        # doc/api/members.md: with inherited members "only its membership with the highest access_level is
        # returned"; on a tie the direct (project) membership wins here.
        mine = [m for m in self._memberships(project, inherited) if m.user_id == user_id]
        return max(mine, key=lambda m: (m.access_level, m.source_type == "project"), default=None)

    def _award_note(self, project: Project, iid: int, note_id: int) -> Note:
        # lib/api/helpers/award_emoji.rb: `merge_requests.find_by!(iid: ...)`, then `awardable.notes.find(note_id)`:
        # both raise ActiveRecord::RecordNotFound, so both answer "404 Not found" (unlike the notes API).
        mr = self.merge_requests.get((project.id, int(iid)))
        note = self.notes_by_id.get(int(note_id))
        if mr is None or note is None or note.mr_id != mr.id:
            raise not_found()
        return note

    def _note(self, mr: MergeRequest, note_id: int) -> Note:
        note = self.notes_by_id.get(int(note_id))
        if note is None or note.mr_id != mr.id:
            raise not_found()
        return note

    def _remember_commit(self, project: Project, sha: str, *branches: str) -> None:
        known = project.commits.setdefault(sha, [])
        known.extend(b for b in branches if b not in known)

    def _new_pipeline(self, project: Project, sha: str, ref: str, source: str) -> Pipeline:
        pipeline_id = max([0, *self.pipelines_by_id]) + 1
        pipeline = Pipeline(
            pipeline_id, self._next("pipeline_iid", project.id), project.id, sha, ref, source, "created"
        )
        self.pipelines_by_id[pipeline_id] = pipeline
        return pipeline

    def _add_job(self, pipeline: Pipeline, spec: dict[str, Any]) -> Job:
        job_id = int(spec["id"])
        self._require_new(job_id in self.jobs or any(s.id == job_id for s in self.commit_statuses), "job", job_id)
        status = spec.get("status", "created")
        if status not in JOB_STATES:
            raise ValueError(f"unknown job status {status!r}")
        for older in self.jobs.values():
            if older.pipeline_id == pipeline.id and older.name == spec["name"]:
                older.retried = True
        job = Job(
            job_id,
            pipeline.project_id,
            pipeline.id,
            spec["name"],
            spec.get("stage", "test"),
            status,
            bool(spec.get("allow_failure", False)),
        )
        self.jobs[job_id] = job
        return job

    def _recompute(self, pipeline: Pipeline) -> None:
        """A simplified Gitlab::Ci::Status::Composite over the visible CI jobs and external statuses:
        - any job still active: "running" (or "pending"/"created" when all active ones are);
        - all done: "failed" if any failed (allow_failure jobs excepted) — so a failed external status
          fails the pipeline once the rest is done — else "canceled" if any canceled, else "success";
          all skipped (or manual): "skipped".
        Pipelines with neither jobs nor statuses keep the status they were given."""
        states = [
            ("success" if j.allow_failure and j.status in ("failed", "canceled") else j.status)
            for j in self.jobs.values()
            if j.pipeline_id == pipeline.id and not j.retried
        ]
        states += [s.status for s in self.commit_statuses if s.pipeline_id == pipeline.id and not s.retried]
        states = ["skipped" if s in ("manual", "scheduled") else s for s in states]
        if not states:
            return
        active = [s for s in states if s in ACTIVE]
        if active:
            if "running" in active or len(active) < len(states):
                new = "running"
            else:
                new = "pending" if "pending" in active else "created"
        elif all(s == "skipped" for s in states):
            new = "skipped"
        elif "failed" in states:
            new = "failed"
        elif "canceled" in states:
            new = "canceled"
        else:
            new = "success"
        if new != pipeline.status:
            pipeline.status = new
            pipeline.updated_at = now_iso()

    def _check_note_rate(self, user: User) -> None:
        # Every attempt counts, like Gitlab::ApplicationRateLimiter (it increments before the note is saved).
        now = time.monotonic()
        times = self._note_times.setdefault(user.id, deque())
        while times and now - times[0] >= self.note_rate_window_s:
            times.popleft()
        if len(times) >= self.note_rate_limit:
            oldest = times[0] if times else now  # a limit of 0 refuses everything
            wait = max(1, math.ceil(self.note_rate_window_s - (now - oldest)))
            raise ApiError(
                429,
                {"message": {"error": "This endpoint has been requested too many times. Try again later."}},
                {"Retry-After": str(wait)},
            )
        times.append(now)

    @staticmethod
    def _validate_note_body(body: Any) -> None:
        # lib/api/helpers/notes_helpers.rb: bad_request!("Note #{note.errors.messages}").
        text = str(body)
        if not text.strip():
            raise bad_request('400 Bad request - Note {:note=>["can\'t be blank"]}')
        if len(text) > NOTE_BODY_LIMIT:
            raise bad_request(
                f'400 Bad request - Note {{:note=>["is too long (maximum is {NOTE_BODY_LIMIT} characters)"]}}'
            )

    def _store_note(self, mr: MergeRequest, user: User, body: str, system: bool = False) -> Note:
        note = Note(self._next("note"), mr.project_id, mr.iid, mr.id, user.id, body, [], [], system=system)
        self.notes_by_id[note.id] = note
        self._scan_note(note)
        return note

    def _scan_note(self, note: Note) -> None:
        # Quick actions also run when a note is edited (Notes::UpdateService), so scan every body.
        note.quick_actions = [] if note.system else quick_actions(note.body)
        note.mentions = mentions(note.body)
        for command in note.quick_actions:
            self.triggered.append({"note_id": note.id, "author_id": note.author_id, "command": command})

    # --- API entities --------------------------------------------------------------------------------

    def _author(self, user_id: int) -> dict[str, Any]:
        user = self.users.get(user_id) or User(user_id, f"user{user_id}", None)
        return user.api(self.base_url)

    def _pipeline_api(self, pipeline: Pipeline) -> dict[str, Any]:
        return pipeline.api(self.base_url, self.projects[pipeline.project_id])

    def _status_api(self, s: CommitStatus) -> dict[str, Any]:
        # lib/api/entities/commit_status.rb (+ pipeline_id since GitLab 16.3).
        return {
            "id": s.id,
            "sha": s.sha,
            "ref": s.ref,
            "status": s.status,
            "name": s.name,
            "target_url": s.target_url,
            "description": s.description,
            "created_at": s.created_at,
            "started_at": s.started_at,
            "finished_at": s.finished_at,
            "allow_failure": False,
            "coverage": s.coverage,
            "pipeline_id": s.pipeline_id,
            "author": self._author(s.author_id),
        }

    def _job_status_api(self, j: Job) -> dict[str, Any]:
        p = self.pipelines_by_id[j.pipeline_id]
        return {
            "id": j.id,
            "sha": p.sha,
            "ref": p.ref,
            "status": j.status,
            "name": j.name,
            "stage": j.stage,
            "target_url": self._job_api(j)["web_url"],
            "description": None,
            "created_at": j.created_at,
            "started_at": None,
            "finished_at": None,
            "allow_failure": j.allow_failure,
            "coverage": None,
            "pipeline_id": p.id,
            "author": self._author(self.bot_user_id),
        }

    def _job_api(self, j: Job) -> dict[str, Any]:
        p = self.pipelines_by_id[j.pipeline_id]
        project = self.projects[j.project_id]
        return {
            "id": j.id,
            "name": j.name,
            "stage": j.stage,
            "status": j.status,
            "ref": p.ref,
            "tag": False,
            "allow_failure": j.allow_failure,
            "retried": j.retried,
            "created_at": j.created_at,
            "started_at": None,
            "finished_at": None,
            "web_url": f"{self.base_url}/{project.path_with_namespace}/-/jobs/{j.id}",
            "commit": {"id": p.sha},
            "pipeline": {
                k: v
                for k, v in self._pipeline_api(p).items()
                if k in ("id", "iid", "project_id", "sha", "ref", "status", "source")
            },
            "project": {"id": project.id},
        }

    def _mr_api(self, mr: MergeRequest, detailed: bool) -> dict[str, Any]:
        project = self.projects[mr.project_id]
        data: dict[str, Any] = {
            "id": mr.id,
            "iid": mr.iid,
            "project_id": mr.project_id,
            "title": mr.title,
            "state": mr.state,
            "source_branch": mr.source_branch,
            "target_branch": mr.target_branch,
            "source_project_id": mr.project_id,
            "target_project_id": mr.project_id,
            "sha": mr.sha,
            "draft": False,
            "merge_status": "can_be_merged",
            "detailed_merge_status": "mergeable",
            "author": self._author(mr.author_id),
            "created_at": mr.created_at,
            "updated_at": mr.updated_at,
            "web_url": f"{self.base_url}/{project.path_with_namespace}/-/merge_requests/{mr.iid}",
        }
        if detailed:
            # The head pipeline is the newest pipeline for the head sha on the MR ref or the source branch,
            # so a stray "external" pipeline on the branch takes that place, as it does on GitLab.
            refs = (f"refs/merge-requests/{mr.iid}/head", f"refs/merge-requests/{mr.iid}/merge", mr.source_branch)
            head = max(
                (
                    p
                    for p in self.pipelines_by_id.values()
                    if p.project_id == mr.project_id and p.sha == mr.sha and p.ref in refs
                ),
                key=lambda p: p.id,
                default=None,
            )
            data["head_pipeline"] = self._pipeline_api(head) if head else None
        return data

    def _note_api(self, n: Note) -> dict[str, Any]:
        return {
            "id": n.id,
            "type": None,
            "body": n.body,
            "attachment": None,
            "author": self._author(n.author_id),
            "created_at": n.created_at,
            "updated_at": n.updated_at,
            "system": n.system,
            "noteable_id": n.mr_id,
            "noteable_type": "MergeRequest",
            "noteable_iid": n.mr_iid,
            "project_id": n.project_id,
            "resolvable": False,
            "confidential": False,
            "internal": False,
        }

    def _member_api(self, m: Member) -> dict[str, Any]:
        # lib/api/entities/member.rb: the user (UserBasic, merged), access_level, created_at, expires_at;
        # created_by is left out when there is none (expose_nil: false).
        return {
            **self._author(m.user_id),
            "access_level": m.access_level,
            "created_at": m.created_at,
            "expires_at": m.expires_at,
        }

    def _award_api(self, a: AwardEmoji) -> dict[str, Any]:
        # lib/api/entities/award_emoji.rb; url is only set for a custom emoji.
        return {
            "id": a.id,
            "name": a.name,
            "user": self._author(a.user_id),
            "created_at": a.created_at,
            "updated_at": a.updated_at,
            "awardable_id": a.note_id,
            "awardable_type": "Note",
            "url": None,
        }
