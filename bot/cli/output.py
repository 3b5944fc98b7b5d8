"""`check`'s output: the text summary, the failure lines with what to do, --json, and the dotenv file."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from bot.cli.options import CheckOptions
from bot.core import dotenv
from bot.core.markdown import clean
from bot.core.models import Reason, ScanResult, Severity, Verdict, dump_verdict
from bot.core.report import status_for

MAX_LISTED = 20  # blocking findings printed; --json lists up to 500 (the verdict's bound), with exact totals
_ECR_TEXT = frozenset(
    {
        Reason.SCAN_NOT_FOUND,
        Reason.IMAGE_NOT_FOUND,
        Reason.REPOSITORY_NOT_FOUND,
        Reason.ACCESS_DENIED,
        Reason.SCAN_FAILED,
        Reason.UNSUPPORTED_IMAGE,
        Reason.FINDINGS_UNAVAILABLE,
    }
)
_SHOWN = (Severity.CRITICAL, Severity.HIGH, Severity.MEDIUM, Severity.LOW, Severity.INFORMATIONAL)


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    attempts: int
    elapsed_s: float
    scan: ScanResult | None = None  # the COMPLETE answer the verdict was decided on (the reports list all of it)


def write_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Replace the file whole: a reader (a later job, GitLab's artifact upload) never sees half of it."""
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, target)


def write_dotenv(path: str | os.PathLike[str], verdict: Verdict | None, reason: str = "") -> None:
    """Replace the file (not append: a retried job must not leave two values per key)."""
    write_atomic(path, dotenv.render(verdict, reason))


def summary_lines(opts: CheckOptions, outcome: Outcome) -> list[str]:
    verdict, image = outcome.verdict, opts.image
    name = f"{image.repository}:{image.tag}" if image.tag else image.repository
    lines = [
        f"{verdict.reason.value.upper()}: {clean(name, 200)}"
        + (f" ({clean(verdict.digest, 80)})" if verdict.digest else "")
        + f" after {outcome.attempts} attempt{'s' if outcome.attempts != 1 else ''}",
        f"  {status_for(verdict).description}",
    ]
    if verdict.reason in (Reason.PASSED, Reason.BLOCKED):
        lines.append(
            "  counts: "
            + " ".join(f"{s.value}={verdict.counts.get(s, 0)}" for s in _SHOWN)
            + f" · blocking ({'/'.join(opts.policy.fail_on)})={verdict.blocking_total}"
            + (" · enhanced scanning" if verdict.enhanced else " · basic scanning")
        )
    for f in verdict.blocking[:MAX_LISTED]:
        fix = f" -> {clean(f.fixed_version, 60)}" if f.fixed_version else " (no fix listed)"
        lines.append(
            f"    {f.severity.value:<8} {clean(f.id, 80)}  {clean(f.package, 80)} {clean(f.installed_version, 60)}{fix}"
        )
    if verdict.blocking_total > min(len(verdict.blocking), MAX_LISTED):
        lines.append(f"    …and {verdict.blocking_total - min(len(verdict.blocking), MAX_LISTED)} more")
    return lines + risk_lines(verdict)


def risk_lines(verdict: Verdict) -> list[str]:
    """Accepted, expired and unused exceptions, and what else did not block: the note's sections, as text."""
    lines: list[str] = []
    for w in verdict.expired:
        lines.append(f"  exception expired: {clean(w.finding.id, 80)} ({w.why}): blocking again")
    for w in verdict.waived:
        a = w.acceptance
        if a is None:
            lines.append(f"  not blocking: {clean(w.finding.id, 80)} {clean(w.finding.package, 80)}: {w.why}")
            continue
        by = f" by {clean(a.by, 80)}" if a.by else ""
        lines.append(
            f"  accepted: {clean(w.finding.id, 80)} {clean(w.finding.package, 80)} until {a.expires.isoformat()}"
            f"{by} ({clean(a.source, 80)}): {clean(a.reason, 300)}"
        )
    for a in verdict.unused:
        lines.append(f"  unused exception: {clean(a.id, 80)} until {a.expires.isoformat()} ({clean(a.source, 80)})")
    if verdict.baseline:
        lines.append(f"  new-only: {clean(verdict.baseline, 200)}")
    return lines


def failure_lines(verdict: Verdict) -> list[str]:
    lines = [
        f"ecr-scan-gate: {verdict.reason.value} (exit {verdict.reason.exit_code}): {status_for(verdict).description}"
    ]
    if verdict.detail and verdict.reason not in (Reason.PASSED, Reason.BLOCKED):
        # Texts the gate wrote itself are "detail"; ECR's own descriptions and error messages are quoted as such.
        label = "ECR said" if verdict.reason in _ECR_TEXT else "detail"
        lines.append(f"  {label}: {clean(verdict.detail, 500)}")
    if verdict.remediation:
        lines.append(f"  what to do: {clean(verdict.remediation, 1000)}")
    if verdict.reason is Reason.TIMEOUT:
        lines.append("  (for this command: raise --timeout; keep --interval at 15 s or more)")
    return lines


def as_json(opts: CheckOptions, outcome: Outcome) -> str:
    data = dump_verdict(outcome.verdict)
    if outcome.verdict.reason in (Reason.PASSED, Reason.BLOCKED):  # ECR omits zero counts; JSON readers want them
        data["counts"] = {**{s.value: 0 for s in _SHOWN}, **data["counts"]}
    data.update(
        exit_code=outcome.verdict.reason.exit_code,
        repository=opts.image.repository,
        tag=opts.image.tag,
        registry_id=opts.image.registry_id,
        region=opts.image.region,
        attempts=outcome.attempts,
        elapsed_s=round(outcome.elapsed_s, 1),
        fail_on=[s.value for s in opts.policy.fail_on],
    )
    return json.dumps(data, sort_keys=True)
