"""Pure: the watched digests of a repository, what a rescan's verdict makes of each, and their one GitLab issue."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

from bot.core.markdown import md_code, md_inline
from bot.core.models import Image, Reason, Verdict
from bot.core.policy import Policy
from bot.core.report import findings_block, pipeline_url
from bot.core.risk import finding_key

ISSUE_MARKER_PREFIX = "<!-- ecr-scan-gate:monitor:"
ISSUE_LIMIT = 1_000_000  # GitLab's description limit is 1,048,576 characters: keep well under it
LISTED = 20  # findings listed per digest; the rest are counted
# No scan result can be had any more (ECR's SCAN_ELIGIBILITY_EXPIRED, FINDINGS_UNAVAILABLE, ...): the image
# is not watched by ECR, and unknown is never clean.
UNSCANNED = frozenset({Reason.FINDINGS_UNAVAILABLE})


class DigestState(StrEnum):
    CLEAN = "clean"  # the last rescan read a completed scan the policy lets through
    BLOCKING = "blocking"  # ... and the policy blocks it
    UNSCANNED = "unscanned"  # ECR no longer scans it (eligibility expired, findings unavailable)


@dataclass(frozen=True)
class Watched:
    """One digest the bot let through on a watched branch or tag, and what its scans say now."""

    project_id: int
    project_path: str
    image: Image  # pinned to the digest
    pipeline_id: int
    ref: str
    gated_at: float
    enhanced: bool = False
    known: frozenset[str] = frozenset()  # blocking when it was gated (let through anyway): not news
    state: DigestState = DigestState.CLEAN
    verdict: Verdict | None = None  # the last rescan's (None: not rescanned yet)
    checked_at: float = 0.0
    policy: Policy | None = None  # the gate's rules (block = all): a rescan judges by what let the image through

    @property
    def new_blocking(self) -> tuple[str, ...]:
        """Finding keys blocking now that were not when the digest was gated."""
        if self.state is not DigestState.BLOCKING or self.verdict is None:
            return ()
        return tuple(sorted({finding_key(f) for f in self.verdict.blocking} - self.known))

    @property
    def alerting(self) -> bool:
        return bool(self.new_blocking) or self.state is DigestState.UNSCANNED


@dataclass(frozen=True)
class Rescanned:
    """A rescan's verdict applied: the digest's new record, or why the verdict says nothing new."""

    watched: Watched
    changed: bool
    why: str = ""


def after_rescan(watched: Watched, verdict: Verdict, now: float) -> Rescanned:
    """The digest after a rescan. A verdict that read no scan (timeout, throttled, denied) keeps the last state:
    it neither opens nor closes an issue, and the next rescan asks again."""
    if verdict.reason in (Reason.PASSED, Reason.BLOCKED):
        state = DigestState.BLOCKING if verdict.reason is Reason.BLOCKED else DigestState.CLEAN
    elif verdict.reason in UNSCANNED:
        state = DigestState.UNSCANNED
    else:
        return Rescanned(replace(watched, checked_at=now), False, f"{verdict.reason.value}: {verdict.summary}")
    updated = replace(watched, state=state, verdict=verdict, checked_at=now)
    return Rescanned(updated, updated.alerting != watched.alerting or updated.new_blocking != watched.new_blocking)


def issue_marker(repository: str) -> str:
    return f"{ISSUE_MARKER_PREFIX}{repository} -->"


@dataclass(frozen=True)
class IssueText:
    title: str
    description: str
    open: bool  # False: nothing to report (every digest clean or known): close the issue if one is open
    summary: str = ""  # one line for the closing comment or a log


def render_issue(repository: str, watched: Sequence[Watched], gitlab_url: str = "") -> IssueText:
    """The repository's one issue: every watched digest with new blocking findings or no scan, newest first."""
    alerting = sorted((w for w in watched if w.alerting), key=lambda w: -w.gated_at)
    marker = issue_marker(repository)
    if not alerting:
        return IssueText(
            f"ecr-scan-gate: {repository}: no new vulnerabilities", marker, False, "all watched digests clean"
        )
    cves = sorted({k for w in alerting for k in w.new_blocking})
    unscanned = [w for w in alerting if w.state is DigestState.UNSCANNED]
    parts = [marker, f"## ecr-scan-gate: {md_inline(repository, 200)} in deployed images"]
    summary = []
    if cves:
        summary.append(f"{len(cves)} new blocking finding{'s' if len(cves) != 1 else ''}")
    if unscanned:
        summary.append(f"{len(unscanned)} image{'s' if len(unscanned) != 1 else ''} no longer scanned")
    parts.append(
        "Images this bot let through are scanned again on a schedule. " + ", ".join(summary) + ", as of the "
        "last rescan. This issue is updated in place and closed when they are fixed or no longer deployed."
    )
    for w in alerting:
        parts.append(_digest_section(w, gitlab_url))
    parts.append("---\n_Maintained by ecr-scan-gate ([monitor]); edits to this description are overwritten._")
    description = "\n\n".join(parts)
    if len(description) > ISSUE_LIMIT:
        description = description[: ISSUE_LIMIT - 40] + "\n\n…(cut at GitLab's size limit)"
    title = f"ecr-scan-gate: {repository}: " + ", ".join(summary)
    return IssueText(title[:255], description, True, ", ".join(summary))


def _digest_section(w: Watched, gitlab_url: str) -> str:
    # The link is built from the configured GitLab URL, never from a payload's.
    where = pipeline_url(gitlab_url, w.project_path, w.pipeline_id) if gitlab_url else ""
    pipeline = f"[pipeline {w.pipeline_id}]({where})" if where else f"pipeline {w.pipeline_id}"
    shipped = f"shipped by {pipeline} on {md_code(w.ref, 100)}"
    head = f"### {md_code(w.image.digest, 80)} ({shipped})"
    if w.state is DigestState.UNSCANNED:
        said = md_code(w.verdict.summary, 200) if w.verdict else "`unknown`"
        return (
            f"{head}\n\n**Not scanned any more** ({said}): ECR no longer reports findings for this image, "
            "so whether new vulnerabilities affect it is **unknown** (not clean). Rebuild and push it to "
            "scan it again, or remove it from service."
        )
    assert w.verdict is not None
    ids = {finding_key(f): f.id for f in w.verdict.blocking}
    new = ", ".join(md_code(ids.get(k, k.split("|", 1)[0]), 40) for k in w.new_blocking[:LISTED])
    more = f" and {len(w.new_blocking) - LISTED} more" if len(w.new_blocking) > LISTED else ""
    return f"{head}\n\nNew since it was gated: {new}{more}.\n\n{findings_block(w.verdict, LISTED, 20_000)}"
