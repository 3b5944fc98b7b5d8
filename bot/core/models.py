"""Pure value types shared by the core: severities, scan results, verdict reasons and verdicts."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any

from pydantic import TypeAdapter

# An image digest as ECR names it; anything else ECR sends in that field is never trusted as one.
DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")


class Severity(StrEnum):
    """ECR severities, basic and enhanced (UNTRIAGED is Inspector-only)."""

    CRITICAL = "CRITICAL"
    HIGH = "HIGH"
    MEDIUM = "MEDIUM"
    LOW = "LOW"
    INFORMATIONAL = "INFORMATIONAL"
    UNTRIAGED = "UNTRIAGED"
    UNDEFINED = "UNDEFINED"

    @property
    def rank(self) -> int:
        """Lower is more severe; used to sort findings most severe first."""
        return list(Severity).index(self)

    @classmethod
    def parse(cls, value: object) -> Severity:
        """Unknown or missing severities become UNDEFINED rather than being dropped."""
        try:
            return cls(str(value).upper())
        except ValueError:
            return cls.UNDEFINED


class Reason(StrEnum):
    """Every gate ends in exactly one reason; only PASSED yields a success status."""

    PASSED = "passed"
    BLOCKED = "blocked"
    SCAN_NOT_FOUND = "scan_not_found"
    ACCESS_DENIED = "access_denied"
    IMAGE_NOT_FOUND = "image_not_found"
    REPOSITORY_NOT_FOUND = "repository_not_found"
    SCAN_FAILED = "scan_failed"
    UNSUPPORTED_IMAGE = "unsupported_image"
    FINDINGS_UNAVAILABLE = "findings_unavailable"
    TIMEOUT = "timeout"
    ERROR = "error"
    # Not a scan verdict: the pipeline failed or was canceled before the image was pushed.
    CANCELED = "canceled"
    # Not a scan verdict: the pipeline finished (not failed) without running the push job; nothing was built.
    SKIPPED = "skipped"
    # The project's gate config (central entry or .gitlab/ecr-scan-gate.toml) is invalid or not allowed.
    CONFIG_ERROR = "config_error"
    # An image marked `required` whose push job is not in this pipeline at all.
    PUSH_JOB_MISSING = "push_job_missing"

    @property
    def exit_code(self) -> int:
        """The CLI gate's exit code for this reason (README: "Exit codes")."""
        return _EXIT_CODES[self]

    @property
    def commit_state(self) -> str:
        """GitLab commit status state for this reason."""
        if self is Reason.PASSED:
            return "success"
        if self is Reason.CANCELED:
            return "canceled"
        if self is Reason.SKIPPED:
            return "skipped"  # GitLab counts a skipped status as passing: nothing was built to block
        return "failed"


_EXIT_CODES: dict[Reason, int] = {
    Reason.PASSED: 0,
    Reason.BLOCKED: 1,
    Reason.SCAN_FAILED: 2,
    Reason.UNSUPPORTED_IMAGE: 2,
    Reason.FINDINGS_UNAVAILABLE: 2,
    Reason.SCAN_NOT_FOUND: 3,
    Reason.ACCESS_DENIED: 3,
    Reason.IMAGE_NOT_FOUND: 3,
    Reason.REPOSITORY_NOT_FOUND: 3,
    Reason.TIMEOUT: 4,
    Reason.ERROR: 5,
    Reason.CANCELED: 5,
    Reason.SKIPPED: 5,
    Reason.CONFIG_ERROR: 3,
    Reason.PUSH_JOB_MISSING: 3,
}

# Exit code for bad arguments or configuration (same family as setup mistakes).
CONFIG_ERROR_EXIT = 3


class Phase(StrEnum):
    """Where a scan stands after one ECR answer."""

    IN_PROGRESS = "in_progress"  # ask again later
    COMPLETE = "complete"  # findings read; policy decides
    FINAL = "final"  # a terminal failure: `reason` says which


@dataclass(frozen=True)
class Image:
    """Where an image lives in ECR: the one image type of routing, the ECR adapter, policy and reports.

    Built from config only, never from a webhook payload. `digest` is empty until ECR names one.
    """

    repository: str
    tag: str = ""
    digest: str = ""
    region: str = "us-east-1"
    registry_id: str = ""  # "" = the caller's own account
    role_arn: str = ""  # "" = the default credential chain

    @property
    def reference(self) -> str:
        """The tag the pipeline pushed, or the digest when the image was named by digest only."""
        return self.tag or self.digest

    @property
    def registry_host(self) -> str:
        return f"{self.registry_id}.dkr.ecr.{self.region}.amazonaws.com" if self.registry_id else ""

    @property
    def registry_flag(self) -> str:
        """The `--registry-id` flag for the aws commands in remediation texts."""
        return f" --registry-id {self.registry_id}" if self.registry_id else ""

    def pinned(self, digest: str) -> Image:
        """Pinned to the first well-formed digest ECR names: a mutable tag can be re-pointed mid-pipeline."""
        if self.digest or not DIGEST_RE.fullmatch(digest):
            return self
        return replace(self, digest=digest)


@dataclass(frozen=True)
class Finding:
    """One vulnerability, normalised from a basic or an enhanced ECR finding."""

    id: str
    severity: Severity
    package: str = ""
    installed_version: str = ""
    fixed_version: str = ""
    url: str = ""
    description: str = ""
    # Enhanced findings only: ACTIVE blocks; SUPPRESSED and CLOSED never do.
    status: str = "ACTIVE"
    fix_available: str = ""  # enhanced fixAvailable: YES, NO, PARTIAL ("" for basic findings)
    cvss: float | None = None  # the highest CVSS base score ECR gave (basic CVSS*_SCORE, enhanced score)
    platform: str = ""  # enhanced only: the image's OS as Inspector names it (e.g. DEBIAN_12); "" = not named

    @property
    def active(self) -> bool:
        return self.status.upper() == "ACTIVE"


@dataclass(frozen=True)
class Acceptance:
    """An accepted risk (a policy exception): findings with this id, in scope, do not block until it ends."""

    id: str  # CVE id or finding name
    reason: str
    expires: date  # the last UTC day it applies (inclusive)
    package: str = ""  # "": any package
    repository: str = ""  # "": any repository
    by: str = ""  # who accepted it, as written ("@alice")
    source: str = ""  # where it is recorded: "central config", the repo file, "MR !12 comment"

    def matches(self, finding: Finding, repository: str) -> bool:
        if finding.id.lower() != self.id.lower():
            return False
        if self.package and finding.package != self.package:
            return False
        return self.in_scope(repository)

    def in_scope(self, repository: str) -> bool:
        return not self.repository or self.repository == repository

    def active(self, today: date) -> bool:
        return today <= self.expires


@dataclass(frozen=True)
class Waived:
    """A fail_on finding that does not block, and why (accepted, no fix, CVSS below the bar, already there)."""

    finding: Finding
    why: str
    acceptance: Acceptance | None = None


@dataclass(frozen=True)
class ScanResult:
    """What one ECR answer (or error) means, before policy is applied."""

    phase: Phase
    ecr_status: str = ""  # imageScanStatus.status as ECR said it, or the error code
    reason: Reason | None = None  # set when phase is FINAL
    detail: str = ""  # ECR's own description or error message (untrusted text)
    digest: str = ""
    counts: dict[Severity, int] = field(default_factory=dict)
    findings: tuple[Finding, ...] = ()
    enhanced: bool = False
    completed_at: str = ""

    @property
    def is_final(self) -> bool:
        return self.phase is not Phase.IN_PROGRESS


def epoch_of(stamp: str) -> float | None:
    """ECR's imageScanCompletedAt as the adapter keeps it (ISO 8601) in epoch seconds; None when absent or
    unreadable."""
    if not stamp:
        return None
    try:
        parsed = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


@dataclass(frozen=True)
class Verdict:
    """The gate's decision for one image: a reason, the numbers behind it and what to do."""

    reason: Reason
    summary: str  # one line, used for the commit status description
    remediation: str = ""  # what to do next (empty for passed)
    detail: str = ""  # ECR's description or error text, untrusted
    digest: str = ""
    counts: dict[Severity, int] = field(default_factory=dict)
    blocking: tuple[Finding, ...] = ()
    blocking_total: int = 0
    enhanced: bool = False
    waived: tuple[Waived, ...] = ()  # would block under fail_on alone; listed with why they do not
    expired: tuple[Waived, ...] = ()  # blocking again: their exception has ended (also in `blocking`)
    unused: tuple[Acceptance, ...] = ()  # exceptions in scope that matched no finding of this scan
    decided_on: date | None = None  # the UTC day the policy was applied (exception dates are UTC days)
    baseline: str = ""  # block = "new": what the findings were compared with, or why they were not

    @property
    def passed(self) -> bool:
        return self.reason is Reason.PASSED


_VERDICT = TypeAdapter(Verdict)


def dump_verdict(verdict: Verdict) -> dict[str, Any]:
    """JSON-safe form of a verdict (for Redis and the CLI's --json); load_verdict reverses it."""
    data: dict[str, Any] = _VERDICT.dump_python(verdict, mode="json")
    return data


def load_verdict(data: object) -> Verdict:
    return _VERDICT.validate_python(data)
