"""Pure: what the CLI gate's two security reports share: the run they describe and each finding's standing."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum

from bot.core.markdown import clean
from bot.core.models import Finding, Image, Phase, Reason, ScanResult, Verdict
from bot.core.policy import Policy, decide
from bot.core.risk import fixable

# Bounds on ECR's text in a report (it is untrusted, and a report is read by other tools and humans).
ID_LIMIT = 200
PACKAGE_LIMIT = 200
VERSION_LIMIT = 120
DESCRIPTION_LIMIT = 4000
MESSAGE_LIMIT = 2000
UNNAMED = "unnamed-finding"  # a finding ECR sent without a name or vulnerability id
# Inspector's fixedInVersion when there is no fix (tests/fixtures/ecr/SOURCES.md): not a version to upgrade to.
_NO_FIX = frozenset({"", "notavailable"})
_SCANNED = frozenset({Reason.PASSED, Reason.BLOCKED})


@dataclass(frozen=True)
class GateRun:
    """One `check` run as its reports tell it: the image asked about, the verdict, and the scan it read."""

    image: Image  # as the pipeline named it (tag, or digest only)
    verdict: Verdict
    policy: Policy
    started: datetime  # wall clock, timezone-aware
    ended: datetime
    tool_version: str
    scan: ScanResult | None = None  # the COMPLETE answer the verdict was decided on; None when none was read

    @property
    def scanned(self) -> bool:
        """A completed scan was read and decided: only then may a report say "success"."""
        return self.scan is not None and self.scan.phase is Phase.COMPLETE and self.verdict.reason in _SCANNED


class Standing(StrEnum):
    """Where one finding stands under the policy."""

    BLOCKING = "blocking"  # fails the gate
    WAIVED = "waived"  # at a fail_on severity, but the policy lets it through (`why` says how)
    BELOW = "below"  # below the fail_on bar, or not ACTIVE in Inspector: never blocks


@dataclass(frozen=True)
class Judged:
    finding: Finding
    standing: Standing
    why: str = ""


def judged(run: GateRun) -> tuple[Judged, ...]:
    """Every finding of the scan with its standing, in ECR's order.

    The verdict keeps only (at most 500, slimmed) blocking findings, so each finding is put through the
    policy's own `decide` alone, on the verdict's day: the same rule, not a second copy of it.
    """
    if not run.scanned or run.scan is None:
        return ()
    out: list[Judged] = []
    for finding in run.scan.findings:
        # counts={}: the verdict's "counted but not listed" findings are the report's warning, not this one's.
        alone = decide(replace(run.scan, findings=(finding,), counts={}), run.policy, run.image, run.verdict.decided_on)
        if alone.blocking_total:
            out.append(Judged(finding, Standing.BLOCKING))
        elif alone.waived:
            out.append(Judged(finding, Standing.WAIVED, alone.waived[0].why))
        else:
            out.append(Judged(finding, Standing.BELOW))
    return tuple(out)


def standing_text(j: Judged) -> str:
    """What the gate made of a finding, as a sentence."""
    if j.standing is Standing.BLOCKING:
        return "It blocks the gate."
    if j.standing is Standing.WAIVED:
        return f"It does not block the gate: {clean(j.why, 300)}."
    if j.finding.active:
        return "It is below the gate's fail_on severities."
    return f"Amazon Inspector marks it {clean(j.finding.status, 20)}: it never blocks."


def unlisted(run: GateRun) -> int:
    """Findings ECR counted but did not list (a trimmed answer): the reports cannot show them, so they say so."""
    if not run.scanned or run.scan is None:
        return 0
    return max(0, sum(run.scan.counts.values()) - len(run.scan.findings))


def finding_id(finding: Finding) -> str:
    return clean(finding.id, ID_LIMIT) or UNNAMED


def fix_version(finding: Finding) -> str:
    """The version to upgrade to, when a fix exists and ECR names it ("" otherwise)."""
    version = clean(finding.fixed_version, VERSION_LIMIT)
    return version if fixable(finding) and version.lower() not in _NO_FIX else ""


def image_reference(image: Image) -> str:
    """registry/repository:tag, or registry/repository@digest for an image named by digest only."""
    name = f"{image.registry_host}/{image.repository}" if image.registry_host else image.repository
    return clean(f"{name}:{image.tag}" if image.tag else f"{name}@{image.digest}", 600)


def gate_message(verdict: Verdict) -> str:
    """The verdict in one bounded line: reason, summary, ECR's or the gate's detail, and what to do."""
    parts = [f"{verdict.reason.value}: {verdict.summary}"]
    if verdict.detail:
        parts.append(f"detail: {verdict.detail}")
    if verdict.remediation:
        parts.append(f"what to do: {verdict.remediation}")
    return clean(" · ".join(parts), MESSAGE_LIMIT)


def utc(moment: datetime, pattern: str) -> str:
    return moment.astimezone(UTC).strftime(pattern)
