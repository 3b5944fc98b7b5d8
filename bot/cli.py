"""Command line: `check` gates a pipeline job on an image's ECR scan; `doctor` finds setup mistakes."""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from pydantic import ValidationError

from bot import dotenv
from bot.config import EcrSettings, ImageSettings, PolicySettings, ScanSettings, Settings, load_settings
from bot.ecr_api import EcrApi, ImageRef
from bot.errors import ConfigError, TransientError
from bot.logs import redact
from bot.markdown import clean
from bot.models import CONFIG_ERROR_EXIT, Reason, ScanResult, Severity, Verdict
from bot.policy import Policy, Target, decide, failed_verdict
from bot.report import status_for
from bot.scan import within_grace

EXIT_ERROR = Reason.ERROR.exit_code
# Below this ECR starts throttling sustained pollers (runbook: "Fifteen seconds is the safe floor").
MIN_SAFE_INTERVAL_S = 10.0
_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,299}")
# ECR_REGISTRY as CI variables spell it: 123456789012.dkr.ecr.us-east-1.amazonaws.com
_REGISTRY_HOST_RE = re.compile(r"(\d{12})\.dkr\.ecr(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?")
_SECRET_ENV = ("GITLAB_TOKEN", "GITLAB_WEBHOOK_SECRET", "GITLAB_WEBHOOK_SECRET_PREVIOUS", "GITLAB_WEBHOOK_SIGNING_KEY",
               "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_OIDC_TOKEN")
MAX_LISTED = 20  # blocking findings printed; --json lists all
_SHOWN = (Severity.CRITICAL, Severity.HIGH, Severity.MEDIUM, Severity.LOW, Severity.INFORMATIONAL)

Clock = Callable[[], float]
Sleep = Callable[[float], None]


class UsageError(Exception):
    """Bad command-line arguments: exit 3 like any other configuration mistake, not argparse's 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ecr-scan-gate", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    check = sub.add_parser("check", help="wait for an image's ECR scan and gate on it (exit codes: DESIGN §3)")
    check.add_argument("--repository", help="ECR repository name (env ECR_REPO)")
    check.add_argument("--tag", help="image tag (env IMAGE_TAG)")
    check.add_argument("--digest", help="image digest sha256:…; wins over the tag")
    check.add_argument("--registry-id", help="12-digit account owning the registry (default: from ECR_REGISTRY)")
    check.add_argument("--region", help="AWS region (default: from ECR_REGISTRY, config, AWS_REGION)")
    check.add_argument("--fail-on", help="blocking severities, commas or spaces (env FAIL_ON_SEVERITY)")
    check.add_argument("--interval", type=float, help="seconds between polls (default 15)")
    check.add_argument("--timeout", type=float, help="seconds to wait for a final scan (default 600)")
    check.add_argument("--not-found-grace", type=float, help="seconds to re-ask after ScanNotFound/ImageNotFound")
    check.add_argument("--dotenv", metavar="FILE", help="write VULN_*, SCAN_REASON, IMAGE_DIGEST for later jobs")
    check.add_argument("--json", action="store_true", help="print the verdict as one JSON object on stdout")
    check.add_argument("--config", help="optional TOML config (env ECR_GATE_CONFIG); flags override it")
    doctor = sub.add_parser("doctor", help="check the GitLab and ECR setup; exit 0 only when nothing fails")
    doctor.add_argument("--config", help="TOML config (default $ECR_GATE_CONFIG or config.toml)")
    doctor.add_argument("--start-scan", action="store_true", help="also check ecr:StartImageScan")
    return parser


@dataclass(frozen=True)
class CheckOptions:
    image: ImageRef
    policy: Policy
    scan: ScanSettings
    ecr: EcrSettings
    dotenv: str | None = None
    json: bool = False

    @property
    def target(self) -> Target:
        return Target(self.image.repository, self.image.tag or self.image.digest, self.image.region,
                      self.image.registry_id)


def _fail_on(value: object) -> tuple[Severity, ...]:
    try:
        severities = PolicySettings(fail_on=value).fail_on  # the config's own parsing: commas or spaces
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
    region = (args.region or (host.group(2) if host else None)
              or (conf.region if conf and "region" in conf.model_fields_set else None)
              or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1")
    registry_id = registry_id or (conf.registry_id if conf else None)
    if not repository:
        problems.append("--repository (or ECR_REPO) is required")
    if not tag and not digest:
        problems.append("--tag (or IMAGE_TAG) or --digest is required")
    if tag and not _TAG_RE.fullmatch(tag):
        problems.append(f"--tag {clean(tag, 80)!r} is not a valid image tag")
    if digest and not _DIGEST_RE.fullmatch(digest):
        problems.append("--digest must look like sha256:<64 hex digits>")
    if repository:
        try:  # the config's own validators for the repository name and registry id
            ImageSettings(repository=repository, push_job="-", registry_id=registry_id, region=region)
        except ValidationError as exc:
            problems += [f"--{'-'.join(map(str, e['loc']))}: {e['msg'].removeprefix('Value error, ')}"
                         .replace("--registry_id", "--registry-id") for e in exc.errors()]
    if not re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d+", region):
        problems.append(f"--region {clean(region, 40)!r} is not an AWS region name")
    scan = settings.scan if settings else ScanSettings()
    flags = {"interval": ("poll_interval_s", args.interval, 0.0), "timeout": ("timeout_s", args.timeout, 0.0),
             "not-found-grace": ("not_found_grace_s", args.not_found_grace, -1.0)}
    for flag, (_, value, floor) in flags.items():
        if value is not None and not (math.isfinite(value) and value > floor):
            problems.append(f"--{flag} must be a number {'>= 0' if floor < 0 else '> 0'}")
    overrides = {key: value for key, value, _ in flags.values() if value is not None}
    fail_on_raw = args.fail_on or env.get("FAIL_ON_SEVERITY")
    try:
        fail_on = _fail_on(fail_on_raw) if fail_on_raw else (
            (conf.fail_on if conf and conf.fail_on else None) or (settings.policy.fail_on if settings else None)
            or _fail_on("CRITICAL,HIGH"))
    except ConfigError as exc:
        problems += exc.problems
        fail_on = ()
    if problems:
        raise ConfigError(problems)
    scan = scan.model_copy(update=overrides)
    ignore = frozenset(settings.policy.ignore) if settings else frozenset()
    image = ImageRef(repository=repository, tag=tag, digest=digest, region=region, registry_id=registry_id,
                     role_arn=conf.role_arn if conf else None)
    return CheckOptions(image, Policy(tuple(fail_on), ignore), scan, settings.ecr if settings else EcrSettings(),
                        args.dotenv, args.json)


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    attempts: int
    elapsed_s: float


def _backoff(failures: int, cap: float, rng: random.Random) -> float:
    """Full-jitter exponential backoff, so parallel gate jobs throttled together don't retry together."""
    return rng.uniform(0.5, max(0.5, min(cap, 2.0 * 2 ** min(failures, 16))))


def run_check(opts: CheckOptions, api: EcrApi, progress: Callable[[str], None], *, clock: Clock = time.monotonic,
              sleep: Sleep = time.sleep, rng: random.Random | None = None) -> Outcome:
    """Poll until the scan is final or the timeout passes: one DescribeImageScanFindings call per attempt."""
    rng = rng or random.Random()  # noqa: S311 - jitter, not crypto
    scan = opts.scan
    start = clock()
    deadline = start + scan.timeout_s
    attempt = failures = 0
    digest = opts.image.digest
    last: ScanResult | None = None
    last_error = ""
    while True:
        attempt += 1
        try:
            result = api.scan_findings(replace(opts.image, digest=digest), scan.page_size)
        except TransientError as exc:
            failures += 1
            last_error = clean(str(exc), 200)
            elapsed, remaining = clock() - start, deadline - clock()
            if remaining <= 0:
                break
            wait = min(exc.retry_after or _backoff(failures, scan.backoff_max_s, rng), remaining)
            progress(f"attempt {attempt}: {last_error}; retrying in {wait:.1f}s (elapsed {elapsed:.0f}s)")
            sleep(wait)
            continue
        failures, last, last_error = 0, result, ""
        # Once ECR names the digest, ask by digest: a mutable tag can be re-pointed mid-pipeline.
        digest = digest or (result.digest if _DIGEST_RE.fullmatch(result.digest) else "")
        elapsed = clock() - start
        status = clean(result.ecr_status, 60) or "no status"
        if result.is_final and not within_grace(result, elapsed, scan.not_found_grace_s):
            progress(f"attempt {attempt}: {status} (elapsed {elapsed:.0f}s)")
            return Outcome(_with_digest(decide(result, opts.policy, opts.target), digest), attempt, elapsed)
        note = "; ECR may still be catching up after the push, asking again" if result.is_final else ""
        progress(f"attempt {attempt}: {status} (elapsed {elapsed:.0f}s){note}")
        remaining = deadline - clock()
        if remaining <= 0:
            break
        sleep(min(scan.poll_interval_s, remaining))
    elapsed = clock() - start
    if last is not None and last.is_final:  # still "not found" at the deadline: that is the answer
        return Outcome(_with_digest(decide(last, opts.policy, opts.target), digest), attempt, elapsed)
    status = last.ecr_status if last else ""
    detail = f"last error: {last_error}" if last_error else f"last ECR status: {status or 'no answer'}"
    verdict = failed_verdict(Reason.TIMEOUT, opts.target, detail=detail, status=status or "none", digest=digest,
                             waited_s=elapsed)
    return Outcome(verdict, attempt, elapsed)


def _with_digest(verdict: Verdict, digest: str) -> Verdict:
    return verdict if verdict.digest or not digest else replace(verdict, digest=digest)


def _summary_lines(opts: CheckOptions, outcome: Outcome) -> list[str]:
    verdict, image = outcome.verdict, opts.image
    name = f"{image.repository}:{image.tag}" if image.tag else image.repository
    lines = [f"{verdict.reason.value.upper()}: {clean(name, 200)}"
             + (f" ({clean(verdict.digest, 80)})" if verdict.digest else "")
             + f" after {outcome.attempts} attempt{'s' if outcome.attempts != 1 else ''}",
             f"  {status_for(verdict).description}"]
    if verdict.reason in (Reason.PASSED, Reason.BLOCKED):
        lines.append("  counts: " + " ".join(f"{s.value}={verdict.counts.get(s, 0)}" for s in _SHOWN)
                     + f" · blocking ({'/'.join(opts.policy.fail_on)})={verdict.blocking_total}"
                     + (" · enhanced scanning" if verdict.enhanced else " · basic scanning"))
    for f in verdict.blocking[:MAX_LISTED]:
        fix = f" -> {clean(f.fixed_version, 60)}" if f.fixed_version else " (no fix listed)"
        lines.append(f"    {f.severity.value:<8} {clean(f.id, 80)}  {clean(f.package, 80)} "
                     f"{clean(f.installed_version, 60)}{fix}")
    if verdict.blocking_total > min(len(verdict.blocking), MAX_LISTED):
        lines.append(f"    …and {verdict.blocking_total - min(len(verdict.blocking), MAX_LISTED)} more")
    return lines


def _failure_lines(verdict: Verdict) -> list[str]:
    lines = [f"ecr-scan-gate: {verdict.reason.value} (exit {verdict.reason.exit_code}): "
             f"{status_for(verdict).description}"]
    if verdict.detail and verdict.reason not in (Reason.PASSED, Reason.BLOCKED):
        label = "detail" if verdict.reason is Reason.TIMEOUT else "ECR said"  # a timeout's detail is ours
        lines.append(f"  {label}: {clean(verdict.detail, 500)}")
    if verdict.remediation:
        lines.append(f"  what to do: {clean(verdict.remediation, 1000)}")
    if verdict.reason is Reason.TIMEOUT:
        lines.append("  (for this command: raise --timeout; keep --interval at 15 s or more)")
    return lines


def _json(opts: CheckOptions, outcome: Outcome) -> str:
    data = outcome.verdict.to_dict()
    if outcome.verdict.reason in (Reason.PASSED, Reason.BLOCKED):  # ECR omits zero counts; JSON readers want them
        data["counts"] = {**{s.value: 0 for s in _SHOWN}, **data["counts"]}
    data.update(exit_code=outcome.verdict.reason.exit_code, repository=opts.image.repository, tag=opts.image.tag,
                registry_id=opts.image.registry_id, region=opts.image.region, attempts=outcome.attempts,
                elapsed_s=round(outcome.elapsed_s, 1), fail_on=[s.value for s in opts.policy.fail_on])
    return json.dumps(data, sort_keys=True)


def _check(args: argparse.Namespace, env: Mapping[str, str], clock: Clock, sleep: Sleep) -> int:
    def err(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        opts = check_options(args, env)
    except ConfigError as exc:
        if args.dotenv:
            dotenv.write(args.dotenv, None, dotenv.CONFIG_ERROR_REASON)
        err("ecr-scan-gate: " + str(exc))
        if args.json:
            print(json.dumps({"reason": dotenv.CONFIG_ERROR_REASON, "exit_code": CONFIG_ERROR_EXIT,
                              "problems": exc.problems}), flush=True)
        return CONFIG_ERROR_EXIT
    out = err if opts.json else (lambda line: print(line, flush=True))
    if opts.scan.poll_interval_s < MIN_SAFE_INTERVAL_S:
        err(f"ecr-scan-gate: warning: --interval {opts.scan.poll_interval_s:g}s is below {MIN_SAFE_INTERVAL_S:g}s; "
            "ECR throttles sustained polling (15 s is the safe floor)")
    image = opts.image
    out(f"checking {image.repository}:{image.tag or image.digest} in {image.region}"
        + (f" (registry {image.registry_id})" if image.registry_id else "")
        + f"; blocking on {'/'.join(opts.policy.fail_on)}; every {opts.scan.poll_interval_s:g}s"
        f" for up to {opts.scan.timeout_s:g}s")
    try:
        outcome = run_check(opts, EcrApi(opts.ecr), out, clock=clock, sleep=sleep)
    except Exception:
        if opts.dotenv:
            dotenv.write(opts.dotenv, None, Reason.ERROR.value)  # crashed: later jobs still learn why
        raise
    if opts.dotenv:
        dotenv.write(opts.dotenv, outcome.verdict)
    for line in _summary_lines(opts, outcome):
        out(line)
    if opts.json:
        print(_json(opts, outcome), flush=True)
    if not outcome.verdict.passed:
        for line in _failure_lines(outcome.verdict):
            err(line)
    return outcome.verdict.reason.exit_code


def main(argv: Sequence[str] | None = None, *, env: Mapping[str, str] | None = None, clock: Clock = time.monotonic,
         sleep: Sleep = time.sleep) -> int:
    """Entry point of `python -m bot` and the `ecr-scan-gate` console script; returns the exit code."""
    env = os.environ if env is None else env
    secrets = [env.get(name, "") for name in _SECRET_ENV]
    try:
        args = build_parser().parse_args(argv)
        if args.command == "check":
            return _check(args, env, clock, sleep)
        from bot.doctor import run  # python-gitlab is only needed here

        return run(args, env)
    except UsageError as exc:
        print(f"{exc}\nusage: ecr-scan-gate {{check,doctor}} --help", file=sys.stderr)
        return CONFIG_ERROR_EXIT
    except ConfigError as exc:
        print("ecr-scan-gate: " + str(exc), file=sys.stderr)
        return CONFIG_ERROR_EXIT
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, never a traceback
        logging.getLogger(__name__).debug("unexpected error", exc_info=True)
        message = clean(redact(f"{type(exc).__name__}: {exc}", secrets), 300)
        print(f"ecr-scan-gate: error (exit {EXIT_ERROR}): {message}", file=sys.stderr)
        return EXIT_ERROR
