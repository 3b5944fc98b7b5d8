"""`check`'s options: flags, then CI variables, then the optional config file, then defaults."""

from __future__ import annotations

import argparse
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from pydantic import ValidationError

from bot.config import load_settings
from bot.core.errors import ConfigError
from bot.core.markdown import clean
from bot.core.models import DIGEST_RE, Image, Severity
from bot.core.policy import Policy
from bot.core.repo_config import policy_from_file
from bot.core.risk import utc_day
from bot.core.settings import EcrSettings, ImageSettings, PolicySettings, ScanSettings, Settings

_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,299}")
# ECR_REGISTRY as CI variables spell it: 123456789012.dkr.ecr.us-east-1.amazonaws.com
_REGISTRY_HOST_RE = re.compile(r"(\d{12})\.dkr\.ecr(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?")
# --sarif-path: a path relative to the repository root (code-scanning UIs match it against the checkout).
_SARIF_PATH_RE = re.compile(r"[A-Za-z0-9_@+~.-][A-Za-z0-9_@+~./ -]{0,299}")
DEFAULT_SARIF_PATH = "Dockerfile"


@dataclass(frozen=True)
class ReportFiles:
    """Where `check` writes its security reports (None: not asked for), and the file a SARIF result names."""

    gitlab: str | None = None
    sarif: str | None = None
    sarif_path: str = DEFAULT_SARIF_PATH

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ReportFiles:
        return cls(args.gitlab_report, args.sarif, args.sarif_path or DEFAULT_SARIF_PATH)


@dataclass(frozen=True)
class CheckOptions:
    """Everything one `check` run needs, resolved from flags, CI variables and the optional config."""

    image: Image
    policy: Policy
    scan: ScanSettings
    ecr: EcrSettings
    dotenv: str | None = None
    json: bool = False
    reports: ReportFiles = ReportFiles()


def _fail_on(value: object) -> tuple[Severity, ...]:
    try:
        # The config's own parsing: commas or spaces.
        severities = PolicySettings.model_validate({"fail_on": value}).fail_on
    except ValidationError as exc:
        raise ConfigError([f"--fail-on: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors()]) from None
    if not severities:
        raise ConfigError(["--fail-on: give at least one severity, e.g. CRITICAL,HIGH (none would pass everything)"])
    return severities


def _config_image(settings: Settings | None, repository: str, registry_id: str | None) -> ImageSettings | None:
    for project in settings.projects if settings else ():
        for image in project.images:
            if image.repository == repository and (registry_id is None or image.registry_id in (None, registry_id)):
                return image
    return None


def _policy_file(path: str | None, org: PolicySettings, problems: list[str]) -> Policy:
    """The org policy, with `--policy FILE`'s [policy] table over it; its problems are added by key."""
    if not path:
        return org.rules()
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        problems.append(f"--policy: cannot read {path}: {exc.strerror}")
        return org.rules()
    policy = policy_from_file(data, org, utc_day(time.time()))
    if isinstance(policy, tuple):
        problems.extend(f"--policy {path}: {p}" for p in policy)
        return org.rules()
    return policy


def _report_problems(reports: ReportFiles, dotenv: str | None) -> list[str]:
    problems = []
    path = reports.sarif_path
    if not _SARIF_PATH_RE.fullmatch(path) or ".." in path.split("/") or path.endswith("/"):
        problems.append(
            f"--sarif-path {clean(path, 80)!r}: give a file path relative to the repository root, e.g. Dockerfile"
        )
    files = [Path(p) for p in (dotenv, reports.gitlab, reports.sarif) if p]
    if len(set(files)) < len(files):
        problems.append("--dotenv, --gitlab-report and --sarif must name different files")
    return problems


def check_options(args: argparse.Namespace, env: Mapping[str, str]) -> CheckOptions:
    """Flags, then CI variables, then the optional config file, then defaults. Lists every problem at once."""
    path = args.config or env.get("ECR_GATE_CONFIG")
    settings = load_settings(path, env, require_secrets=False) if path else None
    problems: list[str] = []
    repository = args.repository or env.get("ECR_REPO", "")
    tag = args.tag or env.get("IMAGE_TAG", "")
    digest = args.digest or ""
    host = _REGISTRY_HOST_RE.fullmatch(env.get("ECR_REGISTRY", "").strip().rstrip("/"))
    registry_id = args.registry_id or (host.group(1) if host else None)
    conf = _config_image(settings, repository, registry_id)
    region = (
        args.region
        or (host.group(2) if host else None)
        or (conf.region if conf and "region" in conf.model_fields_set else None)
        or env.get("AWS_REGION")
        or env.get("AWS_DEFAULT_REGION")
        or "us-east-1"
    )
    registry_id = registry_id or (conf.registry_id if conf else None)
    if not repository:
        problems.append("--repository (or ECR_REPO) is required")
    if not tag and not digest:
        problems.append("--tag (or IMAGE_TAG) or --digest is required")
    if tag and not _TAG_RE.fullmatch(tag):
        problems.append(f"--tag {clean(tag, 80)!r} is not a valid image tag")
    if digest and not DIGEST_RE.fullmatch(digest):
        problems.append("--digest must look like sha256:<64 hex digits>")
    if repository:
        try:  # the config's own validators for the repository name and registry id
            ImageSettings(repository=repository, push_job="-", registry_id=registry_id, region=region)
        except ValidationError as exc:
            problems += [
                f"--{'-'.join(map(str, e['loc']))}: {e['msg'].removeprefix('Value error, ')}".replace(
                    "--registry_id", "--registry-id"
                )
                for e in exc.errors()
            ]
    if not re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d+", region):
        problems.append(f"--region {clean(region, 40)!r} is not an AWS region name")
    scan = settings.scan if settings else ScanSettings()
    flags = {
        "interval": ("poll_interval_s", args.interval, 0.0),
        "timeout": ("timeout_s", args.timeout, 0.0),
        "not-found-grace": ("not_found_grace_s", args.not_found_grace, -1.0),
    }
    for flag, (_, value, floor) in flags.items():
        if value is not None and not (math.isfinite(value) and value > floor):
            problems.append(f"--{flag} must be a number {'>= 0' if floor < 0 else '> 0'}")
    overrides = {key: value for key, value, _ in flags.values() if value is not None}
    base = _policy_file(args.policy, settings.policy if settings else PolicySettings(), problems)
    fail_on_raw = args.fail_on or env.get("FAIL_ON_SEVERITY")
    try:
        fail_on = (
            _fail_on(fail_on_raw)
            if fail_on_raw
            else ((conf.fail_on if conf and conf.fail_on else None) or base.fail_on or _fail_on("CRITICAL,HIGH"))
        )
    except ConfigError as exc:
        problems += exc.problems
        fail_on = ()
    reports = ReportFiles.from_args(args)
    problems += _report_problems(reports, args.dotenv)
    if problems:
        raise ConfigError(problems)
    scan = scan.model_copy(update=overrides)
    image = Image(
        repository=repository,
        tag=tag,
        digest=digest,
        region=region,
        registry_id=registry_id or "",
        role_arn=(conf.role_arn if conf else None) or "",
    )
    return CheckOptions(
        image,
        replace(base, fail_on=tuple(fail_on)),
        scan,
        settings.ecr if settings else EcrSettings(),
        args.dotenv,
        args.json,
        reports,
    )
