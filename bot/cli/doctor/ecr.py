"""The doctor's ECR checks: credentials, repository, scan coverage, tag mutability and the IAM actions."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from bot.adapters.ecr import (
    DESCRIBE_FINDINGS,
    DESCRIBE_IMAGES,
    START_SCAN,
    EcrApi,
    EcrCallError,
    RepositoryInfo,
)
from bot.cli.doctor.lines import Level, Line
from bot.core.coverage import Coverage, RegistryScanning, coverage
from bot.core.errors import TransientError
from bot.core.markdown import clean
from bot.core.models import Image, Reason
from bot.core.settings import Settings

# A tag no pipeline pushes: DescribeImages / DescribeImageScanFindings / StartImageScan on it test the
# permission without touching a real image (ImageNotFound means "allowed").
PROBE_TAG = "ecr-scan-gate-doctor-probe"
_PERMITTED = frozenset({Reason.IMAGE_NOT_FOUND, Reason.SCAN_NOT_FOUND, Reason.REPOSITORY_NOT_FOUND})


def _aws(image: Image, command: str) -> str:
    registry = f" --registry-id {image.registry_id}" if image.registry_id else ""
    return f"aws ecr {command}{registry} --region {image.region}"


def scan_coverage(image: Image, repo: RepositoryInfo, registry: RegistryScanning | None, why: str) -> Line:
    """Will a scan actually run when an image is pushed? Repository scanOnPush or a registry rule."""
    subject = f"ecr {image.repository}"
    turn_on = _aws(
        image,
        f"put-image-scanning-configuration --repository-name {image.repository} "
        "--image-scanning-configuration scanOnPush=true",
    )
    covered = coverage(image.repository, repo.scan_on_push, registry)
    if covered.coverage is Coverage.UNKNOWN:
        if repo.scan_on_push:
            return Line(
                Level.WARN,
                subject,
                f"repository scanOnPush=true (BASIC), but the registry scanning rules "
                f"could not be read ({why}): under ENHANCED scanning the repository setting is ignored",
                "grant ecr:GetRegistryScanningConfiguration to this identity and re-run the doctor",
            )
        return Line(
            Level.WARN,
            subject,
            f"repository scanOnPush=false and the registry scanning rules could not be "
            f"read ({why}): no scan may run, and the gate would end in scan_not_found",
            turn_on,
        )
    if covered.coverage in (Coverage.RULE, Coverage.REPOSITORY):
        return Line(Level.PASS, subject, f"scans run: {covered.how}")
    if covered.coverage is Coverage.ENHANCED_NO_RULE:
        rules = (
            '[{"scanFrequency":"SCAN_ON_PUSH","repositoryFilters":[{"filter":"'
            + image.repository
            + '","filterType":"WILDCARD"}]}]'
        )
        return Line(
            Level.FAIL,
            subject,
            "the registry uses ENHANCED scanning and no rule matches this repository "
            "(its own scanOnPush is ignored): no scan will run",
            f"aws ecr put-registry-scanning-configuration --scan-type ENHANCED --region {image.region} "
            f"--rules '{rules}' (keep your existing rules in the list: this call replaces them)",
        )
    return Line(
        Level.FAIL,
        subject,
        "scan on push is off (repository scanOnPush=false, no BASIC registry rule "
        "matches): no scan will run and every gate ends in scan_not_found",
        turn_on,
    )


def _probe(image: Image, action: str, call: Callable[[], object], account: str) -> Line:
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
        return Line(
            Level.FAIL,
            subject,
            f"the credentials cannot call {action} (AccessDenied)",
            f"allow {action} on {arn} for this identity (see docs/iam-policy.json); never ecr:*",
        )
    if reason is None or reason in _PERMITTED:
        return Line(Level.PASS, subject, f"the credentials can call {action}")
    return Line(Level.WARN, subject, f"{action} answered {reason.value}: {detail}", "check the detail above")


def _identity(image: Image, api: EcrApi) -> tuple[Line, bool]:
    """Who the ECR calls run as; False when there are no usable credentials at all."""
    subject = f"aws {image.region}"
    if image.role_arn:
        return Line(Level.INFO, subject, f"ECR calls for {image.repository} assume {image.role_arn}"), True
    try:
        arn = api.caller_arn(image.region)
    except EcrCallError:
        return Line(
            Level.FAIL,
            subject,
            "no AWS credentials found",
            "in CI assume a role with the job's OIDC "
            "token (docs/gitlab-ci.md); elsewhere set AWS_PROFILE or an instance role",
        ), False
    except TransientError as exc:
        return Line(Level.INFO, subject, f"could not read the caller identity ({str(exc).rsplit(' ', 1)[-1]})"), True
    return Line(Level.PASS, subject, f"credentials found: {arn}"), True


def ecr_lines(settings: Settings, api: EcrApi, start_scan: bool = False) -> Iterator[Line]:
    # Templated repositories ({project_name}) name no one repository: checked per project by the bot's gates.
    images = {i.image(PROBE_TAG) for p in settings.projects for i in p.images if "{" not in i.repository}
    identities: dict[tuple[str, str], bool] = {}
    for image in sorted(images, key=lambda i: (i.region, i.registry_id or "", i.repository)):
        key = (image.region, image.role_arn)
        if key not in identities:
            line, identities[key] = _identity(image, api)
            yield line
        if not identities[key]:
            continue
        yield from _image_lines(image, api, start_scan)


def _image_lines(image: Image, api: EcrApi, start_scan: bool) -> Iterator[Line]:
    subject = f"ecr {image.repository}"
    where = f"{image.region}" + (f", registry {image.registry_id}" if image.registry_id else "")
    try:
        repo = api.describe_repository(image)
    except (EcrCallError, TransientError) as exc:
        reason = exc.reason if isinstance(exc, EcrCallError) else Reason.ERROR
        if reason is Reason.REPOSITORY_NOT_FOUND:
            yield Line(
                Level.FAIL,
                subject,
                f"repository not found in {where}",
                _aws(
                    image,
                    f"create-repository --repository-name {image.repository} --image-tag-mutability IMMUTABLE "
                    "--image-scanning-configuration scanOnPush=true",
                )
                + " (or fix repository/region/registry_id "
                "in the config)",
            )
        elif reason is Reason.ACCESS_DENIED:
            yield Line(
                Level.FAIL,
                subject,
                "the credentials cannot call ecr:DescribeRepositories (AccessDenied): scan settings not checked",
                "allow ecr:DescribeRepositories on the repository ARN for the "
                "identity running the doctor (docs/iam-policy.json)",
            )
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
            yield Line(
                Level.WARN,
                subject,
                f"tags are {repo.tag_mutability}: a re-push can replace the scanned image "
                "under the same tag (the gate pins the digest it saw; a deploy by tag does not)",
                _aws(
                    image,
                    f"put-image-tag-mutability --repository-name {image.repository} --image-tag-mutability IMMUTABLE",
                ),
            )
    account = repo.registry_id if repo else ""
    yield _probe(image, DESCRIBE_FINDINGS, lambda: api.scan_findings(image, 1), account)
    yield _probe(image, DESCRIBE_IMAGES, lambda: api.describe_image(image), account)
    if start_scan:
        yield _probe(image, START_SCAN, lambda: api.start_scan(image), account)
