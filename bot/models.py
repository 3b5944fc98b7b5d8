"""Pure value types shared by the core: severities, scan results, verdict reasons and verdicts."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


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

    @property
    def exit_code(self) -> int:
        """CLI exit code (DESIGN §3)."""
        return _EXIT_CODES[self]

    @property
    def commit_state(self) -> str:
        """GitLab commit status state for this reason."""
        if self is Reason.PASSED:
            return "success"
        if self is Reason.CANCELED:
            return "canceled"
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
}

# Exit code for bad arguments or configuration (same family as setup mistakes).
CONFIG_ERROR_EXIT = 3


class Phase(StrEnum):
    """Where a scan stands after one ECR answer."""

    IN_PROGRESS = "in_progress"  # ask again later
    COMPLETE = "complete"  # findings read; policy decides
    FINAL = "final"  # a terminal failure: `reason` says which


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

    @property
    def active(self) -> bool:
        return self.status.upper() == "ACTIVE"

    def to_dict(self) -> dict[str, str]:
        return {
            "id": self.id,
            "severity": self.severity.value,
            "package": self.package,
            "installed_version": self.installed_version,
            "fixed_version": self.fixed_version,
            "url": self.url,
            "description": self.description,
            "status": self.status,
        }

    @classmethod
    def from_dict(cls, data: dict[str, str]) -> Finding:
        return cls(
            id=data.get("id", ""),
            severity=Severity.parse(data.get("severity")),
            package=data.get("package", ""),
            installed_version=data.get("installed_version", ""),
            fixed_version=data.get("fixed_version", ""),
            url=data.get("url", ""),
            description=data.get("description", ""),
            status=data.get("status", "ACTIVE"),
        )


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

    @property
    def passed(self) -> bool:
        return self.reason is Reason.PASSED

    def to_dict(self) -> dict[str, object]:
        return {
            "reason": self.reason.value,
            "summary": self.summary,
            "remediation": self.remediation,
            "detail": self.detail,
            "digest": self.digest,
            "counts": {k.value: v for k, v in self.counts.items()},
            "blocking": [f.to_dict() for f in self.blocking],
            "blocking_total": self.blocking_total,
            "enhanced": self.enhanced,
        }

    @classmethod
    def from_dict(cls, data: dict) -> Verdict:
        return cls(
            reason=Reason(data["reason"]),
            summary=data.get("summary", ""),
            remediation=data.get("remediation", ""),
            detail=data.get("detail", ""),
            digest=data.get("digest", ""),
            counts={Severity.parse(k): int(v) for k, v in (data.get("counts") or {}).items()},
            blocking=tuple(Finding.from_dict(f) for f in data.get("blocking") or ()),
            blocking_total=int(data.get("blocking_total", 0)),
            enhanced=bool(data.get("enhanced", False)),
        )


class GateState(StrEnum):
    """Lifecycle of one gate (image × commit × pipeline)."""

    WAITING = "waiting"  # pending status posted; the push job has not succeeded yet
    POLLING = "polling"  # the image was pushed; asking ECR for its scan
    DONE = "done"  # a verdict (or cancellation) is recorded; never changes again


@dataclass(frozen=True)
class ImageReport:
    """One image's section of the MR note, as the report renderer needs it."""

    repository: str
    tag: str
    state: GateState
    status_name: str
    verdict: Verdict | None = None  # set when state is DONE
    pipeline_url: str = ""
    registry: str = ""  # e.g. 123456789012.dkr.ecr.us-east-1.amazonaws.com
