"""Pure: the config schema (pydantic models): every key, its default and why, validated up front."""

from __future__ import annotations

import fnmatch
import re
from datetime import date
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    StrictBool,
    field_validator,
    model_validator,
)

from bot.core.models import Acceptance, Image, Severity
from bot.core.ops_settings import DashboardSettings, LoggingSettings, MetricsSettings
from bot.core.policy import Policy
from bot.core.risk import BlockMode, valid_finding_id

TAG_FIELDS = ("sha", "short_sha", "ref_slug", "pipeline_id")
# Placeholders of a central image's `repository`, so one [[projects]] glob serves a standard group.
REPOSITORY_FIELDS = ("project_name", "project_path", "group")
_TAG_FIELD_RE = re.compile(r"\{([^{}]*)\}")
_ECR_REPOSITORY_RE = re.compile(r"(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*")
_REGION_RE = re.compile(r"[a-z]{2}(?:-[a-z]+)+-\d{1,2}")
_ACCOUNT_RE = re.compile(r"\d{12}")
# Below this ECR starts throttling sustained pollers (ThrottlingException); 15 s is the usual safe floor.
MIN_SAFE_INTERVAL_S = 10.0


def too_fast(interval_s: float) -> bool:
    """True for a poll interval that invites ECR throttling (warned about by config, check and doctor)."""
    return interval_s < MIN_SAFE_INTERVAL_S


def check_placeholders(v: str, allowed: tuple[str, ...]) -> str:
    unknown = [f for f in _TAG_FIELD_RE.findall(v) if f not in allowed]
    if unknown:
        raise ValueError(f"unknown placeholders {unknown}; use {{{'}, {'.join(allowed)}}}")
    return v


def check_repository(v: str, placeholders: tuple[str, ...] = ()) -> str:
    """An ECR repository name, with these placeholders allowed in it."""
    if placeholders:
        check_placeholders(v, placeholders)
    elif "{" in v:
        raise ValueError("placeholders are not allowed here")
    if not _ECR_REPOSITORY_RE.fullmatch(_TAG_FIELD_RE.sub("x", v)):
        raise ValueError("not a valid ECR repository name (lowercase letters, digits, . _ - and /)")
    return v


def check_region(v: str) -> str:
    if not _REGION_RE.fullmatch(v):
        raise ValueError("not an AWS region name such as us-east-1")
    return v


def check_account(v: str | None) -> str | None:
    if v is not None and not _ACCOUNT_RE.fullmatch(v):
        raise ValueError("must be a 12-digit AWS account id")
    return v


def parse_severities(v: object) -> object:
    """Severities from a list or a "CRITICAL,HIGH" string; None stays None (optional fields)."""
    if isinstance(v, str):
        v = [s for s in re.split(r"[,\s]+", v) if s]
    if isinstance(v, list | tuple):
        bad = [s for s in v if str(s).upper() not in Severity.__members__]
        if bad:
            raise ValueError(f"unknown severities {bad}; use {[s.value for s in Severity]}")
        return tuple(Severity(str(s).upper()) for s in v)
    return v


# Field types shared by the central config and the repo file (bot/core/repo_config.py): one rule each.
Severities = Annotated[tuple[Severity, ...], BeforeValidator(parse_severities)]
OptionalSeverities = Annotated[tuple[Severity, ...] | None, BeforeValidator(parse_severities)]
Repository = Annotated[str, AfterValidator(check_repository)]
TemplatedRepository = Annotated[str, AfterValidator(lambda v: check_repository(v, REPOSITORY_FIELDS))]
Tag = Annotated[str, AfterValidator(lambda v: check_placeholders(v, TAG_FIELDS))]
Region = Annotated[str, AfterValidator(check_region)]
OptionalRegion = Annotated[str | None, AfterValidator(lambda v: None if v is None else check_region(v))]
Account = Annotated[str | None, AfterValidator(check_account)]


class _Model(BaseModel):
    # extra="forbid": a misspelt key is an error, not a silently ignored setting.
    model_config = ConfigDict(extra="forbid", frozen=True)


class GitLabSettings(_Model):
    url: str
    # python-gitlab's default is no timeout at all; a hung GitLab must not hold a worker.
    timeout_s: float = Field(10.0, gt=0, le=120)
    status_prefix: str = "ecr-scan-gate"
    verify_tls: bool = True
    # Cap of the jittered backoff between retries of a status or note after a 5xx/409/timeout.
    backoff_max_s: float = Field(60.0, ge=1)

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if not re.match(r"^https?://[^/\s]+", v):
            raise ValueError("must be an http(s) URL such as https://gitlab.example.com")
        return v.rstrip("/")


class RedisSettings(_Model):
    url: str = "redis://127.0.0.1:6379/0"
    # Every key (gate state and Celery's queues) starts with this, so deployments can share a Redis.
    key_prefix: str = Field("esg", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    # Webhook deliveries are resent by hand at most days later; a week covers that.
    dedupe_ttl_s: int = Field(7 * 24 * 3600, ge=60)
    # Gate records rebuild the MR note; MRs stay open for weeks.
    gate_ttl_s: int = Field(30 * 24 * 3600, ge=3600)


class WebhookSettings(_Model):
    # Pipeline and job payloads are tens of KB; 5 MB leaves room for huge pipelines and
    # stays far below GitLab's 25 MB cap so a hostile sender cannot exhaust memory.
    max_body_bytes: int = Field(5 * 1024 * 1024, ge=1024)
    max_json_depth: int = Field(32, ge=4, le=512)
    # Standard Webhooks signatures older than this are refused as replays.
    signature_tolerance_s: int = Field(300, ge=1)


def _finding_id(v: str) -> str:
    if not valid_finding_id(v):
        raise ValueError("not a finding id such as CVE-2023-44487 (letters, digits, . _ : / + -)")
    return v


def _text(v: str) -> str:
    if not v.strip():
        raise ValueError("must not be empty: say why the risk is accepted")
    return v.strip()


class ExceptionSettings(_Model):
    """One [[policy.exceptions]] entry: an accepted risk with a reason and a last day (UTC, inclusive)."""

    id: Annotated[str, AfterValidator(_finding_id)]
    reason: Annotated[str, Field(max_length=500), AfterValidator(_text)]
    expires: date
    package: str = Field("", max_length=255)
    repository: str = Field("", max_length=255)
    by: str = Field("", max_length=255)

    def acceptance(self, source: str) -> Acceptance:
        return Acceptance(self.id, self.reason, self.expires, self.package, self.repository, self.by, source)


class PolicySettings(_Model):
    fail_on: Severities = (Severity.CRITICAL, Severity.HIGH)
    # true: a finding with no fixed version does not block (it is still listed).
    block_only_fixable: StrictBool = False
    # > 0: a fail_on finding blocks only at or above this CVSS score; a finding with no score still blocks.
    min_cvss: float = Field(0.0, ge=0, le=10)
    # "new": only findings absent from the target branch's last completed scan block.
    block: BlockMode = BlockMode.ALL
    exceptions: tuple[ExceptionSettings, ...] = ()
    # A repo file's (or an MR command's) exception may end at most this many days ahead.
    max_exception_days: int = Field(90, ge=1, le=3650)
    # How many blocking findings the MR note lists per image before "and N more".
    max_listed: int = Field(20, ge=1, le=500)

    @model_validator(mode="before")
    @classmethod
    def _migrated(cls, data: object) -> object:
        if isinstance(data, dict) and "ignore" in data:
            raise ValueError(
                "[policy] ignore was replaced by [[policy.exceptions]] entries with id, reason and expires "
                "(README: Accepted risk, Migrating from ignore)"
            )
        return data

    def rules(self) -> Policy:
        """The org policy as the core applies it (its exceptions marked as the central config's)."""
        return Policy(
            fail_on=self.fail_on,
            block_only_fixable=self.block_only_fixable,
            min_cvss=self.min_cvss,
            block=self.block,
            exceptions=tuple(e.acceptance("central config") for e in self.exceptions),
        )


class ScanSettings(_Model):
    # ECR throttles sustained callers; 15 s per gate keeps a gate's polling far below its rate limits.
    poll_interval_s: float = Field(15.0, ge=1)
    # The bot's first read after a push: ECR takes at least ~10 s to scan (the runbook: 10-90 s), so a read at
    # once only ever sees IN_PROGRESS. This keeps the bot's reads at or under a shell loop's (bench_gate).
    first_read_after_s: float = Field(10.0, ge=0)
    # Large images take 4-6 min to scan; 10 min is the whole budget from the push job's success.
    timeout_s: float = Field(600.0, ge=1)
    # Right after a push ECR may not yet show the image or the scan record; keep asking this long
    # before calling it image_not_found / scan_not_found.
    not_found_grace_s: float = Field(60.0, ge=0)
    # Cap on the jittered backoff after throttling or a 5xx.
    backoff_max_s: float = Field(60.0, ge=1)
    # Inspector adds findings for a while after its scan is done: a verdict on enhanced findings waits for a
    # second read this long after the first that agrees with it. 10 s: Inspector's findings for one image
    # arrive within seconds of each other; the cost is one more call per enhanced gate.
    enhanced_settle_s: float = Field(10.0, ge=0)
    # DescribeImageScanFindings page size (ECR maximum is 1000).
    page_size: int = Field(1000, ge=1, le=1000)


class EcrSettings(_Model):
    # Shared by all workers per account and region. ECR's documented default for
    # DescribeImageScanFindings is far higher; 5/s leaves room for the team's own tooling.
    rate_per_s: float = Field(5.0, gt=0)
    burst: int = Field(10, ge=1)
    # boto3 call timeouts: a hung connection must not hold a worker past one poll.
    connect_timeout_s: float = Field(5.0, gt=0)
    read_timeout_s: float = Field(20.0, gt=0)


class SweepSettings(_Model):
    # How often beat runs the sweep; also the worst-case delay to notice a lost gate.
    interval_s: float = Field(60.0, ge=1)
    # A polling gate with no progress for this long has lost its task (worker killed, Redis lost).
    stuck_after_s: float = Field(300.0, ge=1)


class CelerySettings(_Model):
    # Redis redelivers an unacked task after this: it is how a task held by a killed worker comes
    # back. Short enough that a lost task returns well inside a scan's timeout; every countdown we
    # schedule is capped at half of it, so a task waiting for its countdown is never delivered twice.
    visibility_timeout_s: int = Field(600, ge=4)


class EventsSettings(_Model):
    """The `events` process: scan and push events from EventBridge through SQS. Off while queue_url is empty."""

    queue_url: str = ""
    # The queue's region; "" = the region in queue_url (sqs.<region>.amazonaws.com) or the default chain's.
    region: str = ""
    # Poison messages (not JSON, not an event we know) are moved here at once; "" = leave them to the
    # queue's redrive policy (maxReceiveCount), which doctor checks for.
    dead_letter_url: str = ""
    # 20 s is SQS's longest long poll: one ReceiveMessage per 20 s per idle process, answered at once
    # when a message arrives.
    wait_s: int = Field(20, ge=0, le=20)
    # SQS's maximum batch: fewer calls per message under load.
    batch: int = Field(10, ge=1, le=10)
    # A received message is hidden this long; the process deletes it once its work is queued (well under
    # a second), so 60 s only matters when the process dies mid-batch: the message comes back then.
    visibility_timeout_s: int = Field(60, ge=5, le=43200)
    # With events on, a polling gate is read when its scan event arrives; this is the poll interval when
    # none has (yet): events are best effort, so polling still finds every verdict, only later. 120 s: longer
    # than most scans take (the runbook: 10-90 s), so a gate whose event comes is read once, not also by the
    # backstop (bench_gate: 1.4 reads per gate at 60 s); a lost event delays a verdict by at most 2 minutes.
    backstop_interval_s: float = Field(120.0, ge=1)
    # A push of a configured repository with no gate after this long is config drift (counted, logged):
    # long enough for the pipeline's own events to arrive after the push.
    drift_after_s: float = Field(300.0, ge=1)

    @property
    def enabled(self) -> bool:
        return bool(self.queue_url)

    @property
    def queue_region(self) -> str:
        """The queue's region: configured, else read from an sqs.<region>.amazonaws.com URL, else ""."""
        if self.region:
            return self.region
        found = re.match(r"^https://sqs\.([a-z0-9-]+)\.amazonaws\.com/", self.queue_url)
        return found.group(1) if found else ""


class MonitorSettings(_Model):
    """Rescans of what the bot let through ([monitor]); off unless enabled."""

    enabled: StrictBool = False
    # Branch globs whose pipelines' images are watched; empty = the project's default branch.
    branches: tuple[str, ...] = ()
    tags: StrictBool = True  # tag pipelines' images too
    # The newest digests kept per project and repository: what may still run (the last few releases).
    keep_digests: int = Field(3, ge=1, le=50)
    # A digest gated longer ago than this leaves the watched set: nothing that old should still run.
    keep_days: int = Field(90, ge=1, le=3650)
    # Once a day: ECR allows one basic scan per image per 24 h, and new CVEs are published daily.
    interval_s: float = Field(86400.0, ge=60)
    label: str = Field("ecr-scan-gate", min_length=1, max_length=255)
    # A CVE in a running image is not for everyone's eyes until fixed.
    confidential: StrictBool = True
    # With the events process on: Inspector sends one "Inspector2 Finding" per finding, dozens at once when it
    # rescans an image after a CVE feed update. The first schedules one read of the watched digest this long
    # after it; the rest of the burst comes within it and is absorbed.
    finding_settle_s: int = Field(120, ge=1, le=3600)

    def watches(self, ref: str, tag: bool, default_branch: str) -> bool:
        """Whether a gate of a pipeline on `ref` (a tag pipeline's ref is its tag) is watched after its verdict."""
        if not self.enabled:
            return False
        if tag:
            return self.tags
        if not self.branches:
            return bool(default_branch) and ref == default_branch
        return any(fnmatch.fnmatchcase(ref, glob) for glob in self.branches)


class ImageSettings(_Model):
    repository: TemplatedRepository  # may hold {project_name}, {project_path}, {group} (central config only)
    tag: Tag = "{short_sha}"
    push_job: str = Field(min_length=1, max_length=255)
    # A pipeline without this image's push job fails the gate instead of leaving the image ungated.
    required: StrictBool = False
    registry_id: Account = None
    region: Region = "us-east-1"
    # Assume this role (STS) for this image's account; empty uses the default credential chain.
    role_arn: str | None = None
    fail_on: OptionalSeverities = None

    def for_project(self, project_path: str) -> ImageSettings:
        """This image with its repository placeholders filled in for one project; ValueError if invalid."""
        if "{" not in self.repository:
            return self
        group, _, name = project_path.rpartition("/")
        values = {"project_name": name, "project_path": project_path, "group": group}
        repository = _TAG_FIELD_RE.sub(lambda m: values[m.group(1)], self.repository)
        if not _ECR_REPOSITORY_RE.fullmatch(repository):
            raise ValueError(f"{self.repository!r} gives {repository[:80]!r} here: not a valid ECR repository name")
        return self.model_copy(update={"repository": repository})

    def matches_repository(self, repository: str, region: str) -> bool:
        """True when this (maybe templated) image names `repository` in `region`: a placeholder matches any text."""
        if region != self.region:
            return False
        pattern = _TAG_FIELD_RE.sub("*", self.repository.replace("[", "[[]"))
        return fnmatch.fnmatchcase(repository, pattern)

    def render_tag(self, sha: str, ref: str, pipeline_id: int) -> str:
        values = {
            "sha": sha,
            "short_sha": sha[:8],
            "ref_slug": ref_slug(ref),
            "pipeline_id": str(pipeline_id),
        }
        return _TAG_FIELD_RE.sub(lambda m: values[m.group(1)], self.tag)

    def image(self, tag: str) -> Image:
        return Image(
            repository=self.repository,
            tag=tag,
            region=self.region,
            registry_id=self.registry_id or "",
            role_arn=self.role_arn or "",
        )


class RegistrySettings(_Model):
    """An AWS registry a project's repo file may name: its account, the regions, the role to assume there."""

    registry_id: Account = None  # None: the bot's own account
    regions: Annotated[tuple[Region, ...], Field(min_length=1)] = ("us-east-1",)
    role_arn: str | None = None


class ProjectSettings(_Model):
    """Which projects are gated (the trust boundary), what their repo files may ask for, default images."""

    path: str | None = None  # path_with_namespace or a glob such as "group/*"
    id: int | None = None
    # Used when the project has no repo file; may be templated ({project_name}) for a whole group.
    images: tuple[ImageSettings, ...] = ()
    # Read .gitlab/ecr-scan-gate.toml at the pipeline's commit; its images replace `images`.
    repo_file: bool = True
    # The only registries and regions a repo file may name; role_arn is set here, never by a repo.
    registries: Annotated[tuple[RegistrySettings, ...], Field(min_length=1)] = (RegistrySettings(),)
    # false: a repo file's [policy] may only be stricter than the org's [policy].
    allow_relax: bool = False

    @model_validator(mode="after")
    def _selector(self) -> ProjectSettings:
        if self.path is None and self.id is None:
            raise ValueError("needs `path` (or a glob) or `id`")
        if not self.images and not self.repo_file:
            raise ValueError("needs `images`, or `repo_file = true` so each project declares its own")
        return self

    def matches(self, project_id: int, path: str) -> bool:
        if self.id is not None and self.id == project_id:
            return True
        return self.path is not None and fnmatch.fnmatchcase(path, self.path)


class Settings(_Model):
    gitlab: GitLabSettings
    redis: RedisSettings = RedisSettings()
    webhook: WebhookSettings = WebhookSettings()
    policy: PolicySettings = PolicySettings()
    scan: ScanSettings = ScanSettings()
    ecr: EcrSettings = EcrSettings()
    sweep: SweepSettings = SweepSettings()
    celery: CelerySettings = CelerySettings()
    events: EventsSettings = EventsSettings()
    monitor: MonitorSettings = MonitorSettings()
    metrics: MetricsSettings = MetricsSettings()
    dashboard: DashboardSettings = DashboardSettings()
    logging: LoggingSettings = LoggingSettings()
    projects: tuple[ProjectSettings, ...] = ()
    # Secrets: from the environment only, never from the file; SecretStr keeps them out of reprs and dumps.
    gitlab_token: SecretStr = SecretStr("")
    webhook_secrets: tuple[SecretStr, ...] = ()
    signing_key: SecretStr = SecretStr("")
    metrics_token: SecretStr = SecretStr("")  # optional bearer token of /metrics and the metrics ports
    dashboard_password: SecretStr = SecretStr("")  # [dashboard]'s Basic auth password

    @model_validator(mode="after")
    def _backstop(self) -> Settings:
        if self.events.enabled and self.events.backstop_interval_s > self.sweep.stuck_after_s:
            # The sweep takes a gate unread for stuck_after_s as lost: the backstop must come sooner.
            raise ValueError(
                f"[events] backstop_interval_s ({self.events.backstop_interval_s:g}) must not exceed "
                f"[sweep] stuck_after_s ({self.sweep.stuck_after_s:g})"
            )
        return self

    def project_for(self, project_id: int, path: str) -> ProjectSettings | None:
        for project in self.projects:
            if project.matches(project_id, path):
                return project
        return None

    def polling(self) -> ScanSettings:
        """The bot's polling rule settings: with events on, a scan's event wakes its gate, so the interval
        between reads without one is the longer backstop."""
        if not self.events.enabled:
            return self.scan
        interval = max(self.scan.poll_interval_s, self.events.backstop_interval_s)
        return self.scan.model_copy(update={"poll_interval_s": interval})

    def all_images(self) -> tuple[ImageSettings, ...]:
        """Every image the central config names (templated ones as written)."""
        return tuple(image for project in self.projects for image in project.images)

    def status_name(self, repository: str) -> str:
        return f"{self.gitlab.status_prefix}/{repository}"

    def secret_values(self) -> list[str]:
        """Every secret in force, for log redaction."""
        values = (
            self.gitlab_token,
            self.signing_key,
            self.metrics_token,
            self.dashboard_password,
            *self.webhook_secrets,
        )
        return [v.get_secret_value() for v in values if v.get_secret_value()]


def ref_slug(ref: str) -> str:
    """GitLab's CI_COMMIT_REF_SLUG: lowercased, non-alphanumerics to '-', 63 chars, trimmed."""
    slug = re.sub(r"[^a-z0-9]", "-", ref.lower())[:63]
    return slug.strip("-")
