"""`doctor`: check the GitLab and ECR setup behind most silent passes; one line per check, with its fix."""

from __future__ import annotations

import argparse
import re
import sys
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import boto3
import gitlab
import requests
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError
from gitlab.exceptions import GitlabAuthenticationError, GitlabError

from bot.config import Settings, load_settings
from bot.ecr_api import (
    DESCRIBE_FINDINGS,
    DESCRIBE_IMAGES,
    START_SCAN,
    EcrApi,
    EcrCallError,
    ImageRef,
    RegistryScanning,
    RepositoryInfo,
)
from bot.errors import TransientError
from bot.logs import redact
from bot.markdown import clean
from bot.models import Reason

# A tag no pipeline pushes: DescribeImages / DescribeImageScanFindings / StartImageScan on it test the
# permission without touching a real image (ImageNotFound means "allowed").
PROBE_TAG = "ecr-scan-gate-doctor-probe"
DEVELOPER = 30  # GitLab access level needed to post commit statuses (notes need less)
_ROLES = {10: "Guest", 15: "Planner", 20: "Reporter", 30: "Developer", 40: "Maintainer", 50: "Owner"}
_PERMITTED = frozenset({Reason.IMAGE_NOT_FOUND, Reason.SCAN_NOT_FOUND, Reason.REPOSITORY_NOT_FOUND})


class Level(StrEnum):
    PASS = "PASS"  # noqa: S105 - a check result, not a password
    WARN = "WARN"  # works, but a known way to get wrong or slow results
    FAIL = "FAIL"  # the gate cannot work (or passes silently) until fixed
    INFO = "INFO"  # what the API cannot tell us; checked by hand


@dataclass(frozen=True)
class Line:
    level: Level
    subject: str
    message: str
    fix: str = ""

    def render(self, secrets: list[str]) -> str:
        text = f"{self.level.value}  {self.subject}: {clean(self.message, 600)}"
        if self.fix:
            text += f"\n      fix: {clean(self.fix, 1200)}"
        return redact(text, secrets)


# ---------------------------------------------------------------------------------------------- ECR


def _aws(image: ImageRef, command: str) -> str:
    registry = f" --registry-id {image.registry_id}" if image.registry_id else ""
    return f"aws ecr {command}{registry} --region {image.region}"


def filter_matches(pattern: str, repository: str) -> bool:
    """ECR registry filters: `*` matches any run of characters; a filter without `*` matches as a substring."""
    if "*" not in pattern:
        return pattern in repository
    return re.fullmatch(".*".join(re.escape(part) for part in pattern.split("*")), repository) is not None


def scan_coverage(image: ImageRef, repo: RepositoryInfo, registry: RegistryScanning | None, why: str) -> Line:
    """Will a scan actually run when an image is pushed? Repository scanOnPush or a registry rule."""
    subject = f"ecr {image.repository}"
    turn_on = _aws(image, f"put-image-scanning-configuration --repository-name {image.repository} "
                          "--image-scanning-configuration scanOnPush=true")
    if registry is None:
        if repo.scan_on_push:
            return Line(Level.WARN, subject, f"repository scanOnPush=true (BASIC), but the registry scanning rules "
                        f"could not be read ({why}): under ENHANCED scanning the repository setting is ignored",
                        "grant ecr:GetRegistryScanningConfiguration to this identity and re-run the doctor")
        return Line(Level.WARN, subject, f"repository scanOnPush=false and the registry scanning rules could not be "
                    f"read ({why}): no scan may run, and the gate would end in scan_not_found", turn_on)
    wanted = ("SCAN_ON_PUSH", "CONTINUOUS_SCAN") if registry.scan_type == "ENHANCED" else ("SCAN_ON_PUSH",)
    for rule in registry.rules:
        hit = next((f for f in rule.filters if filter_matches(f, image.repository)), None)
        if rule.frequency in wanted and hit is not None:
            kind = "ENHANCED (Amazon Inspector)" if registry.scan_type == "ENHANCED" else "BASIC"
            return Line(Level.PASS, subject, f"scans run: {kind} scanning, registry rule {rule.frequency} "
                        f"filter {hit!r}")
    if registry.scan_type == "ENHANCED":
        rules = ('[{"scanFrequency":"SCAN_ON_PUSH","repositoryFilters":[{"filter":"' + image.repository
                 + '","filterType":"WILDCARD"}]}]')
        return Line(Level.FAIL, subject, "the registry uses ENHANCED scanning and no rule matches this repository "
                    "(its own scanOnPush is ignored): no scan will run",
                    f"aws ecr put-registry-scanning-configuration --scan-type ENHANCED --region {image.region} "
                    f"--rules '{rules}' (keep your existing rules in the list: this call replaces them)")
    if repo.scan_on_push:
        return Line(Level.PASS, subject, "scans run: BASIC scanning on push (repository scanOnPush=true)")
    return Line(Level.FAIL, subject, "scan on push is off (repository scanOnPush=false, no BASIC registry rule "
                "matches): no scan will run and every gate ends in scan_not_found", turn_on)


def _probe(image: ImageRef, action: str, call: Callable[[], object], account: str) -> Line:
    """Call an action on the probe tag: anything but AccessDenied shows the permission is there."""
    subject = f"ecr {image.repository}"
    try:
        outcome = call()
        reason = getattr(outcome, "reason", None)
        detail = getattr(outcome, "detail", "")
    except EcrCallError as exc:
        reason, detail = exc.reason, exc.result.detail
    except TransientError as exc:
        return Line(Level.WARN, subject, f"could not check {action}: {exc}", "re-run the doctor")
    if reason is Reason.ACCESS_DENIED:
        arn = f"arn:aws:ecr:{image.region}:{image.registry_id or account or '<account>'}:repository/{image.repository}"
        return Line(Level.FAIL, subject, f"the credentials cannot call {action} (AccessDenied)",
                    f"allow {action} on {arn} for this identity (see docs/iam-policy.json); never ecr:*")
    if reason is None or reason in _PERMITTED:
        return Line(Level.PASS, subject, f"the credentials can call {action}")
    return Line(Level.WARN, subject, f"{action} answered {reason.value}: {detail}", "check the detail above")


def _identity(image: ImageRef) -> tuple[Line, bool]:
    """Who the ECR calls run as; False when there are no usable credentials at all."""
    subject = f"aws {image.region}"
    if image.role_arn:
        return Line(Level.INFO, subject, f"ECR calls for {image.repository} assume {image.role_arn}"), True
    try:
        arn = boto3.client("sts", region_name=image.region).get_caller_identity()["Arn"]
    except NoCredentialsError:
        return Line(Level.FAIL, subject, "no AWS credentials found", "in CI assume a role with the job's OIDC "
                    "token (docs/gitlab-ci.md); elsewhere set AWS_PROFILE or an instance role"), False
    except (ClientError, BotoCoreError) as exc:
        return Line(Level.INFO, subject, f"could not read the caller identity ({type(exc).__name__})"), True
    return Line(Level.PASS, subject, f"credentials found: {arn}"), True


def ecr_lines(settings: Settings, api: EcrApi, start_scan: bool = False) -> Iterator[Line]:
    images = {ImageRef(repository=i.repository, tag=PROBE_TAG, region=i.region, registry_id=i.registry_id,
                       role_arn=i.role_arn) for p in settings.projects for i in p.images}
    identities: dict[tuple[str, str | None], bool] = {}
    for image in sorted(images, key=lambda i: (i.region, i.registry_id or "", i.repository)):
        key = (image.region, image.role_arn)
        if key not in identities:
            line, identities[key] = _identity(image)
            yield line
        if not identities[key]:
            continue
        yield from _image_lines(image, api, start_scan)


def _image_lines(image: ImageRef, api: EcrApi, start_scan: bool) -> Iterator[Line]:
    subject = f"ecr {image.repository}"
    where = f"{image.region}" + (f", registry {image.registry_id}" if image.registry_id else "")
    try:
        repo = api.describe_repository(image)
    except (EcrCallError, TransientError) as exc:
        reason = exc.reason if isinstance(exc, EcrCallError) else Reason.ERROR
        if reason is Reason.REPOSITORY_NOT_FOUND:
            yield Line(Level.FAIL, subject, f"repository not found in {where}", _aws(
                image, f"create-repository --repository-name {image.repository} --image-tag-mutability IMMUTABLE "
                       "--image-scanning-configuration scanOnPush=true") + " (or fix repository/region/registry_id "
                       "in the config)")
        elif reason is Reason.ACCESS_DENIED:
            yield Line(Level.FAIL, subject, "the credentials cannot call ecr:DescribeRepositories (AccessDenied): "
                       "scan settings not checked", "allow ecr:DescribeRepositories on the repository ARN for the "
                       "identity running the doctor (docs/iam-policy.json)")
        else:
            yield Line(Level.FAIL, subject, f"could not read the repository: {exc}", "re-run the doctor")
        repo = None
    if repo is not None:
        yield Line(Level.PASS, subject, f"repository exists ({repo.arn or where})")
        registry, why = None, ""
        try:
            registry = api.registry_scanning(image)
            if image.registry_id and registry.registry_id and registry.registry_id != image.registry_id:
                registry, why = None, f"the rules of registry {image.registry_id} belong to another account"
        except (EcrCallError, TransientError) as exc:
            denied = isinstance(exc, EcrCallError) and exc.reason is Reason.ACCESS_DENIED
            why = "ecr:GetRegistryScanningConfiguration denied" if denied else clean(str(exc), 200)
        yield scan_coverage(image, repo, registry, why)
        if repo.tag_mutability.startswith("IMMUTABLE"):
            yield Line(Level.PASS, subject, f"tags are {repo.tag_mutability}")
        else:
            yield Line(Level.WARN, subject, f"tags are {repo.tag_mutability}: a re-push can replace the scanned image "
                       "under the same tag (the gate pins the digest it saw; a deploy by tag does not)",
                       _aws(image, f"put-image-tag-mutability --repository-name {image.repository} "
                                   "--image-tag-mutability IMMUTABLE"))
    account = repo.registry_id if repo else ""
    yield _probe(image, DESCRIBE_FINDINGS, lambda: api.scan_findings(image, 1), account)
    yield _probe(image, DESCRIBE_IMAGES, lambda: api.describe_image(image), account)
    if start_scan:
        yield _probe(image, START_SCAN, lambda: api.start_scan(image), account)


# ------------------------------------------------------------------------------------------- GitLab


def _safe_url(url: str) -> str:
    """A hook URL without user info or query: either may carry a credential."""
    parts = urllib.parse.urlsplit(str(url))
    return urllib.parse.urlunsplit((parts.scheme, parts.hostname or "", parts.path, "", ""))


def _hook_fix(settings: Settings, owner: str, kind: str) -> str:
    api = f"{settings.gitlab.url}/api/v4/{kind}/{urllib.parse.quote(owner, safe='')}/hooks"
    return (f"in {owner}: Settings > Webhooks > Add new webhook with URL https://<bot-host>/webhook, Secret token = "
            "the value of GITLAB_WEBHOOK_SECRET, triggers Pipeline events and Job events; or: curl --request POST "
            '--header "Authorization: Bearer $GITLAB_TOKEN" --data "url=https://<bot-host>/webhook&pipeline_events=true'
            f'&job_events=true&push_events=false&token=$GITLAB_WEBHOOK_SECRET" "{api}"')


class _GitLabDoctor:
    def __init__(self, settings: Settings, gl: gitlab.Gitlab) -> None:
        self.settings, self.gl = settings, gl
        self.group_hooks: dict[str, list[dict[str, Any]] | None] = {}

    def _hooks(self, manager: Any) -> list[dict[str, Any]] | None:
        try:
            return [h.attributes for h in manager.hooks.list(get_all=True)]
        except GitlabError:
            return None  # 403 (needs Maintainer / Owner) or 404 (group hooks are Premium)

    def _group(self, path: str) -> list[dict[str, Any]] | None:
        if path not in self.group_hooks:
            self.group_hooks[path] = self._hooks(self.gl.groups.get(path, lazy=True))
        return self.group_hooks[path]

    def hooks(self, subject: str, project_path: str | None, groups: list[str], project: Any) -> Iterator[Line]:
        found: list[tuple[str, dict[str, Any]]] = []
        unreadable: list[str] = []
        for owner, hooks in [(project_path, self._hooks(project) if project else None)] + [
                (g, self._group(g)) for g in groups]:
            if owner is None:
                continue
            if hooks is None:
                unreadable.append(owner)
            found += [(owner, h) for h in hooks or ()]
        owner, kind = (project_path, "projects") if project_path else (groups[-1] if groups else "", "groups")
        fix = _hook_fix(self.settings, owner, kind)
        ours = [(o, h) for o, h in found if _safe_url(h.get("url", "")).rstrip("/").endswith("/webhook")] or found
        best = max(ours, key=lambda oh: (bool(oh[1].get("pipeline_events")), bool(oh[1].get("job_events"))),
                   default=None)
        if best is None or not best[1].get("pipeline_events"):
            if unreadable and not found:
                yield Line(Level.WARN, subject, f"could not list webhooks of {', '.join(unreadable)} (needs the "
                           "Maintainer role on a project, Owner on a group; group hooks need Premium)",
                           "check Settings > Webhooks by hand: pipeline and job events, a secret token")
                return
            yield Line(Level.FAIL, subject, "no webhook sends pipeline events to the bot: no gate will start", fix)
            return
        where, hook = best
        url = _safe_url(hook.get("url", ""))
        if hook.get("alert_status") not in (None, "executable") or hook.get("disabled_until"):
            yield Line(Level.FAIL, subject, f"webhook {url} on {where} is disabled by GitLab after failed deliveries "
                       f"({hook.get('alert_status')})", "fix the receiver, then Settings > Webhooks > Test to "
                       "re-enable it")
        elif hook.get("job_events"):
            yield Line(Level.PASS, subject, f"webhook {url} on {where} sends pipeline and job events")
        else:
            yield Line(Level.WARN, subject, f"webhook {url} on {where} sends pipeline events but not job events: "
                       "gates start only when a pipeline event shows the push job done (later)",
                       f"in {where}: Settings > Webhooks > Edit > tick Job events")
        if url.startswith("http://") or not hook.get("enable_ssl_verification", True):
            yield Line(Level.WARN, subject, f"webhook {url}: the secret token is sent without verified TLS",
                       "use an https URL and turn SSL verification on for the hook")
        yield Line(Level.INFO, subject, "GitLab never returns a hook's secret token: make sure it equals "
                   "GITLAB_WEBHOOK_SECRET (a mismatch shows as 401 under the hook's Recent events)")

    def project(self, ident: str | int, glob: str | None, user: str) -> Iterator[Line]:
        if glob:
            prefix = re.split(r"[*?\[]", glob, maxsplit=1)[0].rsplit("/", 1)[0]
            subject = f"gitlab {glob}"
            yield Line(Level.INFO, subject, "a glob: roles are not checked per project; only group webhooks")
            groups = [prefix.rsplit("/", i)[0] for i in range(prefix.count("/") + 1)] if prefix else []
            yield from self.hooks(subject, None, groups, None)
            return
        subject = f"gitlab {ident}"
        try:
            project = self.gl.projects.get(ident)
        except GitlabError as exc:
            yield Line(Level.FAIL, subject, f"project not visible to @{user} ({exc.response_code})",
                       f"add @{user} to {ident} with the Developer role (Manage > Members), or fix the config path")
            return
        perms = project.attributes.get("permissions") or {}
        level = max((perms.get(k) or {}).get("access_level") or 0 for k in ("project_access", "group_access"))
        role = _ROLES.get(level, f"access level {level}")
        path = project.attributes.get("path_with_namespace", str(ident))
        if level >= DEVELOPER:
            yield Line(Level.PASS, subject, f"@{user} is {role}: can post commit statuses and MR notes")
        else:
            yield Line(Level.FAIL, subject, f"@{user} is {role if level else 'not a member'}: commit statuses need "
                       "Developer", f"in {path}: Manage > Members > invite @{user} as Developer")
        namespace = project.attributes.get("namespace") or {}
        full = str(namespace.get("full_path") or "") if namespace.get("kind") == "group" else ""
        groups = [full.rsplit("/", i)[0] for i in range(full.count("/") + 1)] if full else []
        yield from self.hooks(subject, path, groups, project)


def gitlab_lines(settings: Settings, env: Mapping[str, str], make: Callable[..., gitlab.Gitlab]) -> Iterator[Line]:
    url = settings.gitlab.url
    if not env.get("GITLAB_WEBHOOK_SECRET"):
        yield Line(Level.FAIL, "gitlab", "GITLAB_WEBHOOK_SECRET is not set: the bot refuses every delivery",
                   "set GITLAB_WEBHOOK_SECRET in the bot's environment to the webhook's Secret token")
    token = env.get("GITLAB_TOKEN", "")
    if not token:
        yield Line(Level.FAIL, "gitlab", "GITLAB_TOKEN is not set: GitLab checks skipped",
                   "export GITLAB_TOKEN=<the bot user's access token, scope api>")
        return
    gl = make(url, private_token=token, timeout=settings.gitlab.timeout_s, ssl_verify=settings.gitlab.verify_tls,
              retry_transient_errors=False, keep_base_url=True)
    try:
        gl.auth()
    except GitlabAuthenticationError:
        yield Line(Level.FAIL, "gitlab", f"{url} refused the token (401): expired, revoked or for another instance",
                   "create a new token for the bot user (scope api) and set GITLAB_TOKEN")
        return
    except (GitlabError, requests.RequestException) as exc:
        ssl = isinstance(exc, requests.exceptions.SSLError)
        tls = " or set [gitlab] verify_tls / REQUESTS_CA_BUNDLE" if ssl else ""
        yield Line(Level.FAIL, "gitlab", f"{url} not reachable: {type(exc).__name__}",
                   f"check [gitlab] url and the network path{tls}")
        return
    user = gl.user.attributes if gl.user else {}
    name = str(user.get("username", "?"))
    state = user.get("state", "active")
    level = Level.PASS if state == "active" else Level.FAIL
    yield Line(level, "gitlab", f"{url} reachable, token valid (user @{name}, {state})",
               "" if level is Level.PASS else f"unblock or reactivate @{name} (Admin > Users)")
    try:
        scopes = list(gl.personal_access_tokens.get("self").attributes.get("scopes") or [])
    except GitlabError:
        scopes = None
    if scopes is None:
        yield Line(Level.INFO, "gitlab", "token scopes not readable (GitLab < 15.5 or not an access token)")
    elif "api" in scopes:
        yield Line(Level.PASS, "gitlab", f"token scopes {scopes} include api")
    else:
        yield Line(Level.FAIL, "gitlab", f"token scopes {scopes} lack api: statuses and notes will be refused",
                   "create a token with scope api for the bot user and set GITLAB_TOKEN")
    doctor = _GitLabDoctor(settings, gl)
    for project in settings.projects:
        glob = project.path if project.id is None and project.path and re.search(r"[*?\[]", project.path) else None
        yield from doctor.project(project.id if project.id is not None else (project.path or ""), glob, name)


# --------------------------------------------------------------------------------------------- main


def config_lines(settings: Settings) -> Iterator[Line]:
    if not settings.projects:
        yield Line(Level.WARN, "config", "no [[projects]] configured: the bot gates nothing",
                   "add a [[projects]] block with [[projects.images]] (config.example.toml)")
    if settings.scan.poll_interval_s < 10:
        yield Line(Level.WARN, "config", f"[scan] poll_interval_s = {settings.scan.poll_interval_s:g} is below 10 s: "
                   "ECR throttles sustained polling", "set [scan] poll_interval_s = 15")


def run(args: argparse.Namespace, env: Mapping[str, str], make: Callable[..., gitlab.Gitlab] = gitlab.Gitlab) -> int:
    settings = load_settings(args.config, env, require_secrets=False)
    secrets = [s for s in (env.get("GITLAB_TOKEN", ""), env.get("GITLAB_WEBHOOK_SECRET", ""),
                           env.get("AWS_SECRET_ACCESS_KEY", ""), env.get("AWS_SESSION_TOKEN", "")) if s]
    counts = dict.fromkeys(Level, 0)
    for source in (config_lines(settings), gitlab_lines(settings, env, make),
                   ecr_lines(settings, EcrApi(settings.ecr), args.start_scan)):
        for line in source:
            counts[line.level] += 1
            print(line.render(secrets), flush=True)
    warnings = f"{counts[Level.WARN]} warning{'' if counts[Level.WARN] == 1 else 's'}"
    print(f"doctor: {counts[Level.PASS]} passed, {warnings}, {counts[Level.FAIL]} failed",
          file=sys.stderr if counts[Level.FAIL] else sys.stdout)
    return 1 if counts[Level.FAIL] else 0
