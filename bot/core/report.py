"""Pure: verdicts to commit-status payloads and the one merge request note, with untrusted text escaped."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import quote

from bot.core.commands import AuditEntry
from bot.core.gate import Gate, GateState
from bot.core.markdown import (
    advisory_url,
    clean,
    md_code,
    md_fence,
    md_inline,
    safe_link,
    table_cell,
    table_row,
)
from bot.core.models import Finding, Reason, Severity, Verdict
from bot.core.note_parts import audit_block, not_gated_block, problems_block, risk_blocks, unused_block
from bot.core.plan import NotGated

MARKER = "<!-- ecr-scan-gate -->"
DESCRIPTION_LIMIT = 255  # GitLab's limit for a commit status description
NOTE_LIMIT = 1_000_000  # GitLab's limit for a note body, in characters
# Read at call time (tests lower it). The margin covers the header, footer and omission line, which
# are budgeted separately, and any off-by-a-few in the per-section estimates.
BODY_BUDGET = 990_000

_COUNT_ORDER = (
    Severity.CRITICAL,
    Severity.HIGH,
    Severity.MEDIUM,
    Severity.LOW,
    Severity.INFORMATIONAL,
    Severity.UNDEFINED,
)
_COMPLETE = frozenset({Reason.PASSED, Reason.BLOCKED})  # the scan finished: counts mean something
_FINDINGS_HEADER = (
    table_row(["Vulnerability", "Severity", "Package", "Installed", "Fixed in"]) + "\n|---|---|---|---|---|"
)
# Room for the findings table header and the "and N more" line on top of a section's row budget.
_TABLE_SLACK = 300
_FOOTER = "---\n_This note is maintained by ecr-scan-gate and updated in place as scan results arrive._"


@dataclass(frozen=True)
class StatusPayload:
    """What to post as a commit status: state is pending, running, success, failed or canceled."""

    state: str
    description: str


def status_for(verdict: Verdict) -> StatusPayload:
    """The final status for a verdict; the description is the summary on one clean line."""
    description = clean(verdict.summary, DESCRIPTION_LIMIT) or verdict.reason.value.replace("_", " ")
    return StatusPayload(verdict.reason.commit_state, description)


def status_waiting(repository: str) -> StatusPayload:
    repo = clean(repository, 150) or "the image"
    return StatusPayload("pending", clean(f"Waiting for {repo} to be pushed and scanned", DESCRIPTION_LIMIT))


def status_polling(repository: str, ecr_status: str) -> StatusPayload:
    repo = clean(repository, 150) or "the image"
    status = clean(ecr_status, 40) or "IN_PROGRESS"
    return StatusPayload("running", clean(f"ECR scan {status} for {repo}", DESCRIPTION_LIMIT))


def gate_status(gate: Gate) -> StatusPayload:
    """The status a gate's commit status should show now."""
    if gate.state is GateState.DONE and gate.verdict is not None:
        return status_for(gate.verdict)
    if gate.state is GateState.POLLING and gate.progress.ecr_status:
        return status_polling(gate.repository, gate.progress.ecr_status)
    return status_waiting(gate.repository)


def project_url(gitlab_url: str, project_path: str) -> str:
    # Links are built from the configured GitLab URL only, never from URLs in a payload.
    return f"{gitlab_url}/{quote(project_path, safe='/')}"


def mr_url(gitlab_url: str, project_path: str, iid: int) -> str:
    return f"{project_url(gitlab_url, project_path)}/-/merge_requests/{iid}"


def pipeline_url(gitlab_url: str, project_path: str, pipeline_id: int) -> str:
    return f"{project_url(gitlab_url, project_path)}/-/pipelines/{pipeline_id}"


def target_url(gitlab_url: str, gate: Gate) -> str:
    """Where a commit status links to: the MR when there is one, else the pipeline."""
    if gate.mr_iid:
        return mr_url(gitlab_url, gate.project_path, gate.mr_iid)
    return pipeline_url(gitlab_url, gate.project_path, gate.status_pipeline_id)


def note_has_marker(body: str) -> bool:
    """True for a note this bot wrote: the marker opens the body (elsewhere it is someone quoting it).

    The caller must still check the note's author: anyone can start a note with the marker.
    """
    return body.lstrip("\ufeff \t\r\n").startswith(MARKER)


def render_note(
    images: Sequence[Gate],
    *,
    project_path: str,
    sha: str,
    max_listed: int = 20,
    not_gated: Sequence[NotGated] = (),
    audit: Sequence[AuditEntry] = (),
    mr_url: str = "",
) -> str:
    """The whole MR note: marker, overall result, one section per image, what was not gated, commands, footer."""
    ordered = sorted(images, key=lambda r: (r.image.repository, r.image.tag, r.status_name))
    head = _header(ordered, project_path, sha, bool(not_gated))
    verdicts = [v for v in (_shown_verdict(g) for g in ordered) if v is not None]
    parts = (unused_block(verdicts, max(1, max_listed)), not_gated_block(not_gated), audit_block(audit, mr_url))
    tail = "\n\n".join(b for b in parts if b)
    budget = min(BODY_BUDGET, NOTE_LIMIT) - len(head) - len(tail) - len(_FOOTER) - 400
    bare = [_section(r, listed=0, row_budget=0) for r in ordered]
    fixed = sum(len(s) + 2 for s in bare)
    if fixed > budget:
        # Too many images even without findings tables: show what fits, say what was left out.
        sections, used = [], 0
        for s in bare:
            if used + len(s) + 2 > budget:
                break
            sections.append(s)
            used += len(s) + 2
        left = len(bare) - len(sections)
        sections.append(
            f"_{left} more image{'s' if left != 1 else ''} not shown: the note would exceed GitLab's size "
            "limit. Their commit statuses still apply._"
        )
    else:
        # Tables are cut first: each image with findings gets an equal share of what is left.
        listing = sum(1 for r in ordered if _has_findings(r))
        share = (budget - fixed) // max(1, listing) - _TABLE_SLACK
        sections = [_section(r, listed=max(0, max_listed), row_budget=share) for r in ordered]
    body = "\n\n".join([head, *sections, *([tail] if tail else []), _FOOTER]) + "\n"
    if len(body) > min(BODY_BUDGET, NOTE_LIMIT):  # a last guard: the estimates above were wrong
        body = "\n\n".join([head, "_The report is too large for a note; see the commit statuses._", _FOOTER])
    return body + ("" if body.endswith("\n") else "\n")


def _has_findings(report: Gate) -> bool:
    verdict = _shown_verdict(report)
    return bool(verdict and verdict.blocking)


def _shown_verdict(report: Gate) -> Verdict | None:
    """The verdict to show: only a finished gate has one (a stale verdict on a waiting gate is ignored)."""
    return report.verdict if report.state is GateState.DONE else None


def _status_word(report: Gate) -> str:
    if report.state is GateState.WAITING:
        return "WAITING"
    if report.state is GateState.POLLING:
        return "SCANNING"
    if report.verdict is None:
        return "FAILED"  # finished without a verdict: fail closed in the report too
    return {
        Reason.PASSED: "PASSED",
        Reason.BLOCKED: "BLOCKED",
        Reason.CANCELED: "CANCELED",
        Reason.SKIPPED: "SKIPPED",
    }.get(report.verdict.reason, "FAILED")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _title(images: Sequence[Gate], some_not_gated: bool = False) -> str:
    words = [_status_word(r) for r in images]
    n = len(words)
    failed = sum(w in ("FAILED", "BLOCKED") for w in words)
    pending = sum(w in ("WAITING", "SCANNING") for w in words)
    canceled = words.count("CANCELED")
    skipped = words.count("SKIPPED")
    if n == 0:
        return (
            "ECR scan gate: no image is pushed in this pipeline"
            if some_not_gated
            else "ECR scan gate: no images to check"
        )
    if any(r.verdict is not None and r.verdict.reason is Reason.CONFIG_ERROR for r in images):
        return "ECR scan gate: the gate config has errors, nothing was checked"
    if failed:
        still = f", {pending} still pending" if pending else ""
        return f"ECR scan gate: {failed} of {_plural(n, 'image')} failed{still}"
    if pending:
        return f"ECR scan gate: waiting for {pending} of {_plural(n, 'image')}"
    if canceled:
        return f"ECR scan gate: {canceled} of {_plural(n, 'image')} canceled"
    if skipped == n:
        return "ECR scan gate: nothing was pushed, nothing to check"
    if skipped:
        passed = n - skipped
        return f"ECR scan gate: {passed} of {_plural(n, 'image')} passed, {skipped} not pushed"
    return "ECR scan gate: the image passed" if n == 1 else f"ECR scan gate: all {n} images passed"


def _header(images: Sequence[Gate], project_path: str, sha: str, some_not_gated: bool = False) -> str:
    where = f" in {md_code(project_path, 200)}" if clean(project_path, 200) else ""
    commit = md_code(clean(sha, 64)[:8]) or "(unknown)"
    return f"{MARKER}\n### {_title(images, some_not_gated)}\n\nResults for commit {commit}{where}."


def _count(counts: Mapping[Severity, int], severity: Severity) -> int:
    # Absent keys are zero (ECR omits zero counts); junk values count as zero rather than crash.
    try:
        return max(0, int(counts.get(severity, 0) or 0))
    except (TypeError, ValueError):
        return 0


def _counts_table(counts: Mapping[Severity, int]) -> str:
    columns = list(_COUNT_ORDER)
    if _count(counts, Severity.UNTRIAGED):
        columns.append(Severity.UNTRIAGED)
    return "\n".join(
        [
            table_row(c.value for c in columns),
            "|" + "---:|" * len(columns),
            table_row(str(_count(counts, c)) for c in columns),
        ]
    )


def _finding_row(finding: Finding) -> str:
    return table_row(
        [
            safe_link(finding.id, advisory_url(finding.id, finding.url)),
            finding.severity.value,
            table_cell(finding.package),
            table_cell(finding.installed_version),
            table_cell(finding.fixed_version),
        ]
    )


def findings_block(verdict: Verdict, listed: int, row_budget: int) -> str:
    ordered = sorted(verdict.blocking, key=lambda f: (f.severity.rank, f.id))
    total = max(verdict.blocking_total, len(ordered))
    rows: list[str] = []
    used = 0
    for finding in ordered[:listed]:
        row = _finding_row(finding)
        if used + len(row) + 1 > row_budget:
            break
        rows.append(row)
        used += len(row) + 1
    parts = [f"**Blocking findings** ({total}, most severe first):"]
    if rows:
        parts.append(_FINDINGS_HEADER + "\n" + "\n".join(rows))
    if total > len(rows):
        parts.append(f"…and {total - len(rows)} more.")
    return "\n\n".join(parts)


# Details the gate wrote itself (or that mix its words with ECR's): labelled "Details", not "ECR said".
_NOT_FROM_ECR = frozenset(
    {Reason.CANCELED, Reason.SKIPPED, Reason.PUSH_JOB_MISSING, Reason.CONFIG_ERROR, Reason.ERROR, Reason.TIMEOUT}
)


def _section(report: Gate, *, listed: int, row_budget: int) -> str:
    label = report.image.repository + (f":{report.image.tag}" if report.image.tag else "")
    if report.verdict is not None and report.verdict.reason is Reason.CONFIG_ERROR:
        label = "gate config"
    parts = [f"#### {_status_word(report)} · {md_code(label, 400) or '(unnamed image)'}"]
    verdict = _shown_verdict(report)
    if verdict is None:
        parts.append(
            {
                GateState.WAITING: "Waiting for the image to be pushed and scanned.",
                GateState.POLLING: "ECR is scanning the image; this section updates when the scan finishes.",
            }.get(report.state, "Finished without a verdict: treat the image as failed and re-run the pipeline.")
        )
    else:
        parts.append(md_inline(verdict.summary) or md_code(verdict.reason.value))
    meta = [f"Reason {md_code(verdict.reason.value)}"] if verdict else []
    if verdict and verdict.digest:
        meta.append(f"digest {md_code(verdict.digest, 100)}")
    if verdict and verdict.reason in _COMPLETE:
        meta.append("enhanced scanning" if verdict.enhanced else "basic scanning")
    if clean(report.status_name, 300):
        meta.append(f"commit status {md_code(report.status_name, 300)}")
    if clean(report.image.registry_host, 200):
        meta.append(f"registry {md_code(report.image.registry_host, 200)}")
    if meta:
        line = " · ".join(meta)
        parts.append(line[0].upper() + line[1:])
    if verdict is None:
        return "\n\n".join(parts)
    if verdict.reason in _COMPLETE or verdict.counts:
        parts.append(_counts_table(verdict.counts))
    if verdict.remediation and not verdict.passed:
        lines = [md_inline(line) for line in clean(verdict.remediation, 2000, multiline=True).split("\n")]
        # Two trailing spaces: a hard line break, so the remediation keeps its lines in one paragraph.
        parts.append("**What to do:** " + "  \n".join(line for line in lines if line))
    if verdict.reason is Reason.CONFIG_ERROR:
        parts.append(problems_block(verdict.detail))
    # A COMPLETE scan's description is boilerplate ("The scan was completed successfully").
    fence = md_fence(verdict.detail) if verdict.reason not in (*_COMPLETE, Reason.CONFIG_ERROR) else ""
    if fence:
        parts.append(("Details:" if verdict.reason in _NOT_FROM_ECR else "ECR said:") + "\n\n" + fence)
    if verdict.blocking or verdict.blocking_total:
        parts.append(findings_block(verdict, listed, row_budget))
    parts += risk_blocks(verdict, max(1, listed))
    if verdict.reason in _COMPLETE:
        shown = max(verdict.blocking_total, len(verdict.blocking)) + len(verdict.waived)
        others = sum(_count(verdict.counts, s) for s in Severity) - shown
        if others > 0:
            parts.append(f"{_plural(others, 'non-blocking finding')} counted above, not listed.")
    return "\n\n".join(parts)
