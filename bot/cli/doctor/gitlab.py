"""The doctor's GitLab checks: the token, the bot user's role in each project, the webhooks, the repo files."""

from __future__ import annotations

import fnmatch
import re
import urllib.parse
from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import SecretStr

from bot.adapters.gitlab import GitLabApi
from bot.cli.doctor.lines import Level, Line
from bot.cli.doctor.repo import repo_lines
from bot.core.errors import PermanentError, TransientError
from bot.core.settings import ProjectSettings, Settings

DEVELOPER = 30  # GitLab access level needed to post commit statuses (notes need less)
# A doctor run checks this many projects of a glob: enough for a group, bounded for an instance-wide "*".
GLOB_PROJECTS_CHECKED = 200
_ROLES = {10: "Guest", 15: "Planner", 20: "Reporter", 30: "Developer", 40: "Maintainer", 50: "Owner"}


def _safe_url(url: str) -> str:
    """A hook URL without user info or query: either may carry a credential."""
    parts = urllib.parse.urlsplit(str(url))
    return urllib.parse.urlunsplit((parts.scheme, parts.hostname or "", parts.path, "", ""))


def _hook_fix(settings: Settings, owner: str, kind: str) -> str:
    api = f"{settings.gitlab.url}/api/v4/{kind}/{urllib.parse.quote(owner, safe='')}/hooks"
    return (
        f"in {owner}: Settings > Webhooks > Add new webhook with URL https://<bot-host>/webhook, Secret token = "
        "the value of GITLAB_WEBHOOK_SECRET, triggers Pipeline events and Job events; or: curl --request POST "
        '--header "Authorization: Bearer $GITLAB_TOKEN" --data "url=https://<bot-host>/webhook&pipeline_events=true'
        f'&job_events=true&push_events=false&token=$GITLAB_WEBHOOK_SECRET" "{api}"'
    )


class _GitLabDoctor:
    def __init__(self, settings: Settings, api: GitLabApi) -> None:
        self.settings, self.api = settings, api
        self.group_hooks: dict[str, list[dict[str, Any]] | None] = {}

    def _group(self, path: str) -> list[dict[str, Any]] | None:
        if path not in self.group_hooks:
            self.group_hooks[path] = self.api.hooks("groups", path)
        return self.group_hooks[path]

    def hooks(
        self, subject: str, project_path: str | None, groups: list[str], project_id: int | None
    ) -> Iterator[Line]:
        found: list[tuple[str, dict[str, Any]]] = []
        unreadable: list[str] = []
        own = self.api.hooks("projects", project_id) if project_id is not None else None
        for owner, hooks in [(project_path, own)] + [(g, self._group(g)) for g in groups]:
            if owner is None:
                continue
            if hooks is None:
                unreadable.append(owner)
            found += [(owner, h) for h in hooks or ()]
        owner, kind = (project_path, "projects") if project_path else (groups[-1] if groups else "", "groups")
        fix = _hook_fix(self.settings, owner, kind)
        ours = [(o, h) for o, h in found if _safe_url(h.get("url", "")).rstrip("/").endswith("/webhook")] or found
        best = max(
            ours, key=lambda oh: (bool(oh[1].get("pipeline_events")), bool(oh[1].get("job_events"))), default=None
        )
        if best is None or not best[1].get("pipeline_events"):
            if unreadable and not found:
                yield Line(
                    Level.WARN,
                    subject,
                    f"could not list webhooks of {', '.join(unreadable)} (needs the "
                    "Maintainer role on a project, Owner on a group; group hooks need Premium)",
                    "check Settings > Webhooks by hand: pipeline and job events, a secret token",
                )
                return
            yield Line(Level.FAIL, subject, "no webhook sends pipeline events to the bot: no gate will start", fix)
            return
        where, hook = best
        url = _safe_url(hook.get("url", ""))
        if hook.get("alert_status") not in (None, "executable") or hook.get("disabled_until"):
            yield Line(
                Level.FAIL,
                subject,
                f"webhook {url} on {where} is disabled by GitLab after failed deliveries ({hook.get('alert_status')})",
                "fix the receiver, then Settings > Webhooks > Test to re-enable it",
            )
        elif hook.get("job_events"):
            yield Line(Level.PASS, subject, f"webhook {url} on {where} sends pipeline and job events")
        else:
            late = "gates start only when a pipeline event shows the push job done (later)"
            fix = f"in {where}: Settings > Webhooks > Edit > tick Job events"
            yield Line(
                Level.WARN, subject, f"webhook {url} on {where} sends pipeline events but not job events: {late}", fix
            )
        if not hook.get("note_events"):
            yield Line(
                Level.INFO,
                subject,
                f"webhook {url} on {where} does not send comments: the MR commands (recheck, accept) are off",
            )
        if url.startswith("http://") or not hook.get("enable_ssl_verification", True):
            yield Line(
                Level.WARN,
                subject,
                f"webhook {url}: the secret token is sent without verified TLS",
                "use an https URL and turn SSL verification on for the hook",
            )
        yield Line(
            Level.INFO,
            subject,
            "GitLab never returns a hook's secret token: make sure it equals "
            "GITLAB_WEBHOOK_SECRET (a mismatch shows as 401 under the hook's Recent events)",
        )

    def project(self, entry: ProjectSettings, ident: str | int, glob: str | None, user: str) -> Iterator[Line]:
        if glob:
            yield from self.glob(entry, glob, user)
            return
        subject = f"gitlab {ident}"
        try:
            project = self.api.project(ident)
        except PermanentError as exc:
            yield Line(
                Level.FAIL,
                subject,
                f"project not visible to @{user} ({exc.status})",
                f"add @{user} to {ident} with the Developer role (Manage > Members), or fix the config path",
            )
            return
        yield from self.role(subject, project, user)
        namespace = project.get("namespace") or {}
        full = str(namespace.get("full_path") or "") if namespace.get("kind") == "group" else ""
        groups = [full.rsplit("/", i)[0] for i in range(full.count("/") + 1)] if full else []
        yield from self.hooks(subject, str(project.get("path_with_namespace", ident)), groups, int(project["id"]))
        yield from repo_lines(self.settings, self.api, entry, project)

    def role(self, subject: str, project: dict[str, Any], user: str) -> Iterator[Line]:
        perms = project.get("permissions") or {}
        level = max((perms.get(k) or {}).get("access_level") or 0 for k in ("project_access", "group_access"))
        role = _ROLES.get(level, f"access level {level}")
        path = str(project.get("path_with_namespace", "?"))
        if level >= DEVELOPER:
            yield Line(Level.PASS, subject, f"@{user} is {role}: can post commit statuses and MR notes")
        else:
            yield Line(
                Level.FAIL,
                subject,
                f"@{user} is {role if level else 'not a member'}: commit statuses need Developer",
                f"in {path}: Manage > Members > invite @{user} as Developer",
            )

    def glob(self, entry: ProjectSettings, glob: str, user: str) -> Iterator[Line]:
        """A glob entry: its group's webhooks, then each project of the group the glob matches (up to a cap)."""
        prefix = re.split(r"[*?\[]", glob, maxsplit=1)[0].rsplit("/", 1)[0]
        subject = f"gitlab {glob}"
        groups = [prefix.rsplit("/", i)[0] for i in range(prefix.count("/") + 1)] if prefix else []
        yield from self.hooks(subject, None, groups, None)
        if not prefix:
            yield Line(Level.INFO, subject, "a glob without a group: its projects are not listed, nor checked")
            return
        try:
            listed = self.api.group_projects(prefix, GLOB_PROJECTS_CHECKED + 1)
        except (PermanentError, TransientError) as exc:
            yield Line(Level.WARN, subject, f"cannot list the projects of {prefix} ({exc}): not checked one by one")
            return
        matched = [p for p in listed if fnmatch.fnmatchcase(str(p.get("path_with_namespace", "")), glob)]
        if not matched:
            yield Line(Level.WARN, subject, f"matches no project of {prefix} that @{user} can see", "check the glob")
            return
        more = len(listed) > GLOB_PROJECTS_CHECKED
        count = f"{len(matched)}{'+' if more else ''} project{'s' if len(matched) != 1 else ''}"
        yield Line(
            Level.INFO, subject, f"matches {count}" + (f"; the first {GLOB_PROJECTS_CHECKED} checked" if more else "")
        )
        for listed_project in matched[:GLOB_PROJECTS_CHECKED]:
            # A list entry has no `permissions` (only GET /projects/:id does): read each project for its role.
            try:
                project = self.api.project(int(listed_project["id"]))
            except (PermanentError, TransientError) as exc:
                yield Line(Level.WARN, f"gitlab {listed_project.get('path_with_namespace')}", f"not readable ({exc})")
                continue
            yield from self.role(f"gitlab {project.get('path_with_namespace')}", project, user)
            yield from repo_lines(self.settings, self.api, entry, project)


def gitlab_lines(settings: Settings, env: Mapping[str, str]) -> Iterator[Line]:
    url = settings.gitlab.url
    if not env.get("GITLAB_WEBHOOK_SECRET"):
        yield Line(
            Level.FAIL,
            "gitlab",
            "GITLAB_WEBHOOK_SECRET is not set: the bot refuses every delivery",
            "set GITLAB_WEBHOOK_SECRET in the bot's environment to the webhook's Secret token",
        )
    token = env.get("GITLAB_TOKEN", "")
    if not token:
        yield Line(
            Level.FAIL,
            "gitlab",
            "GITLAB_TOKEN is not set: GitLab checks skipped",
            "export GITLAB_TOKEN=<the bot user's access token, scope api>",
        )
        return
    api = GitLabApi(settings.gitlab, SecretStr(token))
    try:
        user = api.current_user()
    except PermanentError as exc:
        if exc.status == 401:
            yield Line(
                Level.FAIL,
                "gitlab",
                f"{url} refused the token (401): expired, revoked or for another instance",
                "create a new token for the bot user (scope api) and set GITLAB_TOKEN",
            )
        else:
            yield Line(
                Level.FAIL, "gitlab", f"{url} answered {exc.status or 'an error'} for GET /user", "check [gitlab] url"
            )
        return
    except TransientError as exc:
        tls = " or set [gitlab] verify_tls / REQUESTS_CA_BUNDLE" if "SSLError" in str(exc) else ""
        yield Line(
            Level.FAIL,
            "gitlab",
            f"{url} not reachable: {str(exc).rsplit(' ', 1)[-1]}",
            f"check [gitlab] url and the network path{tls}",
        )
        return
    name = str(user.get("username", "?"))
    state = user.get("state", "active")
    level = Level.PASS if state == "active" else Level.FAIL
    yield Line(
        level,
        "gitlab",
        f"{url} reachable, token valid (user @{name}, {state})",
        "" if level is Level.PASS else f"unblock or reactivate @{name} (Admin > Users)",
    )
    scopes = api.token_scopes()
    if scopes is None:
        yield Line(Level.INFO, "gitlab", "token scopes not readable (GitLab < 15.5 or not an access token)")
    elif "api" in scopes:
        yield Line(Level.PASS, "gitlab", f"token scopes {scopes} include api")
    else:
        yield Line(
            Level.FAIL,
            "gitlab",
            f"token scopes {scopes} lack api: statuses and notes will be refused",
            "create a token with scope api for the bot user and set GITLAB_TOKEN",
        )
    doctor = _GitLabDoctor(settings, api)
    for project in settings.projects:
        glob = project.path if project.id is None and project.path and re.search(r"[*?\[]", project.path) else None
        ident = project.id if project.id is not None else (project.path or "")
        yield from doctor.project(project, ident, glob, name)
