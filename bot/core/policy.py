"""Pure: apply the severity policy to a ScanResult and explain every failed reason."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from datetime import date

from bot.core.coverage import Coverage, Covered
from bot.core.models import Acceptance, Finding, Image, Phase, Reason, ScanResult, Severity, Verdict, Waived
from bot.core.risk import BlockMode, finding_key, fixable


@dataclass(frozen=True)
class Baseline:
    """The target branch's newest completed scan of the same repository (block = "new" compares with it)."""

    branch: str
    keys: frozenset[str]  # risk.finding_key of each of its findings
    pipeline_id: int = 0


@dataclass(frozen=True)
class Policy:
    """What blocks: severities, fix state, CVSS, new-only; and the risks accepted until a date."""

    fail_on: tuple[Severity, ...] = (Severity.CRITICAL, Severity.HIGH)
    block_only_fixable: bool = False
    min_cvss: float = 0.0
    block: BlockMode = BlockMode.ALL
    exceptions: tuple[Acceptance, ...] = ()
    target_branch: str = ""  # block = "new": the branch whose last scan is the baseline
    baseline: Baseline | None = None  # filled in by the caller when it has one


def remediation(reason: Reason, t: Image, detail: str = "") -> str:
    """What the user should do next; commands use the configured names only."""
    repo, region, reg = t.repository, t.region, t.registry_flag
    texts = {
        Reason.PASSED: "",
        Reason.BLOCKED: "Fix or upgrade the listed packages (see fixed versions), rebuild and push the image. "
        "To accept a finding for a while, add a [[policy.exceptions]] entry with a reason and an expiry, or "
        "comment `ecr-scan-gate accept <id> until <date> because <reason>` (Maintainer).",
        Reason.SCAN_NOT_FOUND: "No scan ran for this image: scan on push is off. Turn it on with "
        f"`aws ecr put-image-scanning-configuration --repository-name {repo}{reg} --region {region} "
        "--image-scanning-configuration scanOnPush=true` (or a registry scanning rule), then re-run the pipeline.",
        Reason.ACCESS_DENIED: _access_denied_text(_missing_action(detail)),
        Reason.IMAGE_NOT_FOUND: f"No image {repo}:{t.reference} exists in ECR. Check that the push job pushed this "
        "tag and that the image's `tag` template in the gate config matches it.",
        Reason.REPOSITORY_NOT_FOUND: f"ECR repository {repo} does not exist in {region}{reg}. "
        "Check the repository, region and registry_id in the gate config.",
        Reason.SCAN_FAILED: "ECR could not scan this image (its description is quoted). Push the image again "
        "or start a scan with `aws ecr start-image-scan`; if it keeps failing, contact AWS support.",
        Reason.UNSUPPORTED_IMAGE: "Basic scanning cannot read this image's OS (distroless or scratch base). "
        "Turn on enhanced scanning (Amazon Inspector) for this repository or use a supported base image.",
        Reason.FINDINGS_UNAVAILABLE: "ECR has no findings for this image (scan eligibility expired, the "
        "scan quota was exceeded or the image is archived). Re-push the image to get a fresh scan.",
        Reason.TIMEOUT: "The scan did not finish in time. Re-run the pipeline; for very large images raise "
        "[scan] timeout_s. Check the ECR console for a stuck scan.",
        Reason.ERROR: "The gate could not read a trustworthy answer (the details say why). Re-run the pipeline; "
        "if it persists, run `ecr-scan-gate doctor` and read the gate's log (this job's, or the bot's workers').",
        Reason.CANCELED: "The pipeline ended before the image was pushed; nothing was scanned.",
        Reason.SKIPPED: "Nothing to do: the pipeline finished without running the push job, so no image was "
        "built. Run the push job (it may be manual) to gate the image.",
        Reason.CONFIG_ERROR: "Fix each problem listed for the gate config (the key names the setting), commit, "
        "and re-run the pipeline. What a repo file may ask for is set by the central config.",
        Reason.PUSH_JOB_MISSING: f"{repo} is `required`, but its push job is not in this pipeline. Make the push "
        "job run in every pipeline (check its `rules:`), or drop `required` for this image.",
    }
    return texts[reason]


def _access_denied_text(action: str) -> str:
    if action.startswith("`sts:"):
        return (
            f"The bot could not assume the image's role_arn ({action} refused). Allow the bot's identity "
            "sts:AssumeRole on that role and let the role's trust policy name it."
        )
    return (
        f"The gate's AWS identity is not allowed to read the scan. Grant {action} on the repository ARN "
        "(see docs/iam-policy.json); do not use ecr:*."
    )


def _missing_action(detail: str) -> str:
    """The action named at the start of an access_denied detail ("ecr:X: …" or "sts:AssumeRole: …")."""
    head = detail.split(":", 2)
    if len(head) >= 2 and head[0] in ("ecr", "sts") and head[1].isalpha():
        return f"`{head[0]}:{head[1]}`"
    return "`ecr:DescribeImageScanFindings`"


_SUMMARIES = {
    Reason.SCAN_NOT_FOUND: "no scan found: scan on push is off for {repo}",
    Reason.ACCESS_DENIED: "access denied reading the scan of {repo}",
    Reason.IMAGE_NOT_FOUND: "image {repo}:{tag} not found in ECR",
    Reason.REPOSITORY_NOT_FOUND: "ECR repository {repo} not found",
    Reason.SCAN_FAILED: "ECR scan FAILED for {repo}",
    Reason.UNSUPPORTED_IMAGE: "ECR cannot scan {repo} (UNSUPPORTED_IMAGE): enhanced scanning needed",
    Reason.FINDINGS_UNAVAILABLE: "scan findings unavailable for {repo} ({status})",
    Reason.TIMEOUT: "scan of {repo} not complete after {waited}s (last status {status})",
    Reason.ERROR: "gate error for {repo}: no trustworthy scan answer",
    Reason.CANCELED: "canceled: pipeline ended before {repo} was pushed",
    Reason.SKIPPED: "skipped: the pipeline finished without pushing {repo}",
    Reason.CONFIG_ERROR: "config error: {status}",
    Reason.PUSH_JOB_MISSING: "{repo} is required but its push job is not in this pipeline",
}


def failed_verdict(
    reason: Reason, target: Image, *, detail: str = "", status: str = "", digest: str = "", waited_s: float = 0.0
) -> Verdict:
    """A verdict for every reason other than passed/blocked."""
    summary = _SUMMARIES[reason].format(
        repo=target.repository, tag=target.reference, status=status or "none", waited=int(waited_s)
    )
    return Verdict(
        reason=reason,
        summary=summary,
        remediation=remediation(reason, target, detail),
        detail=detail,
        digest=digest,
    )


def _waiver(finding: Finding, policy: Policy, repository: str, today: date) -> tuple[str, Acceptance | None]:
    """Why a fail_on finding does not block ("" if it blocks), and the exception that covers it, if any."""
    for acceptance in policy.exceptions:
        if acceptance.matches(finding, repository) and acceptance.active(today):
            return "accepted", acceptance
    if policy.block_only_fixable and not fixable(finding):
        return "no fix available", None
    if policy.min_cvss > 0 and finding.cvss is not None and finding.cvss < policy.min_cvss:
        return f"CVSS {finding.cvss:g} is below {policy.min_cvss:g}", None
    if policy.block is BlockMode.NEW and policy.baseline and finding_key(finding) in policy.baseline.keys:
        return f"already on {policy.baseline.branch}", None
    return "", None


@dataclass(frozen=True)
class _Sorted:
    blocking: tuple[Finding, ...]
    total: int
    waived: tuple[Waived, ...]
    expired: tuple[Waived, ...]
    unused: tuple[Acceptance, ...]


# A verdict is stored with its gate and rebuilt into every note: it keeps at most this many findings per list
# (the note shows at most [policy] max_listed, <= 500) and their fields bounded; the totals stay exact.
KEPT_FINDINGS = 500
_FIELD_LIMITS = {"id": 200, "package": 200, "installed_version": 120, "fixed_version": 120, "url": 500}


def _slim(finding: Finding) -> Finding:
    """What a stored verdict needs of a finding: no description (never shown), each field bounded."""
    fields = {name: getattr(finding, name)[:limit] for name, limit in _FIELD_LIMITS.items()}
    return replace(finding, description="", **fields)


def _sort(result: ScanResult, policy: Policy, repository: str, today: date) -> _Sorted:
    """Listed blocking findings (plus ones ECR counted but did not list: fail closed), waived, expired, unused."""
    blocking: list[Finding] = []
    waived: list[Waived] = []
    expired: list[Waived] = []
    used: set[Acceptance] = set()
    for finding in result.findings:
        if finding.severity not in policy.fail_on or not finding.active:
            continue
        why, acceptance = _waiver(finding, policy, repository, today)
        if why:
            waived.append(Waived(finding, why, acceptance))
            used |= {acceptance} if acceptance else set()
            continue
        blocking.append(finding)
        lapsed = next((a for a in policy.exceptions if a.matches(finding, repository) and not a.active(today)), None)
        if lapsed is not None:
            expired.append(Waived(finding, f"exception expired on {lapsed.expires.isoformat()}", lapsed))
            used.add(lapsed)
    blocking.sort(key=lambda f: (f.severity.rank, f.id))
    seen = Counter(f.severity for f in result.findings)
    unseen = sum(max(0, result.counts.get(sev, 0) - seen.get(sev, 0)) for sev in policy.fail_on)
    unused = tuple(a for a in policy.exceptions if a.in_scope(repository) and a not in used and a.active(today))
    return _Sorted(
        tuple(_slim(f) for f in blocking[:KEPT_FINDINGS]),
        len(blocking) + unseen,
        tuple(replace(w, finding=_slim(w.finding)) for w in waived[:KEPT_FINDINGS]),
        tuple(replace(w, finding=_slim(w.finding)) for w in expired[:KEPT_FINDINGS]),
        unused[:KEPT_FINDINGS],
    )


def _baseline_text(policy: Policy) -> str:
    if policy.block is not BlockMode.NEW:
        return ""
    if policy.baseline is None:
        branch = policy.target_branch or "the target branch"
        return f'no completed scan of {branch} to compare with: every finding counts (block = "all")'
    where = f" (pipeline {policy.baseline.pipeline_id})" if policy.baseline.pipeline_id else ""
    return f"only findings new since {policy.baseline.branch}{where} block"


def decide(result: ScanResult, policy: Policy, target: Image, today: date | None = None) -> Verdict:
    """The verdict for a final ScanResult on UTC day `today`. An IN_PROGRESS result is a caller bug: fails closed."""
    if result.phase is Phase.IN_PROGRESS:
        return failed_verdict(
            Reason.ERROR,
            target,
            detail="decided before the scan finished",
            status=result.ecr_status,
            digest=result.digest,
        )
    if result.phase is Phase.FINAL:
        return failed_verdict(
            result.reason or Reason.ERROR, target, detail=result.detail, status=result.ecr_status, digest=result.digest
        )
    counts = dict(result.counts)
    if not counts and result.findings:
        counts = dict(Counter(f.severity for f in result.findings if f.active))
    today = today or date.min  # no day given: every dated exception counts as active (tests, old callers)
    sorted_ = _sort(result, policy, target.repository, today)
    blocking, total = sorted_.blocking, sorted_.total
    if total:
        worst = blocking[0].severity.value if blocking else "/".join(s.value for s in policy.fail_on)
        summary = f"{total} blocking finding{'s' if total != 1 else ''} (worst {worst}) in {target.repository}"
        reason = Reason.BLOCKED
    else:
        summary = f"scan complete: no {'/'.join(s.value for s in policy.fail_on)} findings in {target.repository}"
        reason = Reason.PASSED
    return Verdict(
        reason=reason,
        summary=summary,
        remediation=remediation(reason, target),
        digest=result.digest,
        counts=counts,
        blocking=blocking,
        blocking_total=total,
        enhanced=result.enhanced,
        waived=sorted_.waived,
        expired=sorted_.expired,
        unused=sorted_.unused,
        decided_on=None if today == date.min else today,
        baseline=_baseline_text(policy),
    )


def scan_not_found_explained(verdict: Verdict, image: Image, covered: Covered | None, unknown: str = "") -> Verdict:
    """A scan_not_found verdict that says what is true of scan on push (checked, not assumed)."""
    if verdict.reason is not Reason.SCAN_NOT_FOUND or covered is None and not unknown:
        return verdict
    repo, ref = image.repository, image.reference
    start = (
        f"`aws ecr start-image-scan --repository-name {repo}{image.registry_flag} --region {image.region} "
        f"--image-id {'imageDigest' if ref.startswith('sha256:') else 'imageTag'}={ref}`"
    )
    if covered is None:
        summary = f"no scan found for {repo}:{ref} (whether scan on push is on could not be checked: {unknown})"
        return replace(verdict, summary=summary)
    if covered.coverage is Coverage.UNKNOWN:
        summary = f"no scan found for {repo}:{ref} ({covered.how}; the registry scanning rules could not be read)"
        return replace(verdict, summary=summary)
    if covered.coverage in (Coverage.REPOSITORY, Coverage.RULE):
        return replace(
            verdict,
            summary=f"no scan found for {repo}:{ref}, though scans run on push now ({covered.how})",
            remediation="This image was pushed before scan on push was turned on, or its scan was never started. "
            f"Start one with {start} or push the image again, then re-run the gate.",
        )
    if covered.coverage is Coverage.ENHANCED_NO_RULE:
        return replace(
            verdict,
            summary=f"no scan found: the registry uses ENHANCED scanning and no rule matches {repo}",
            remediation="Add a registry scanning rule (SCAN_ON_PUSH or CONTINUOUS_SCAN) whose filter matches "
            f"{repo} (`aws ecr put-registry-scanning-configuration`), then push the image again.",
        )
    return verdict  # OFF: the verdict's own words are true
