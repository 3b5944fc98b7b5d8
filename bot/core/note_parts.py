"""Pure: the MR note's parts beyond findings: not gated images, config problems, accepted risks, commands."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from bot.core.commands import AuditEntry
from bot.core.markdown import clean, md_code, md_inline, table_row
from bot.core.models import Acceptance, Verdict
from bot.core.plan import NotGated
from bot.core.risk import expiring_soon

# More "not gated" lines than this is a monorepo listing its whole catalogue: summarise the rest.
_NOT_GATED_LISTED = 50


def not_gated_block(not_gated: Sequence[NotGated]) -> str:
    if not not_gated:
        return ""
    lines = [
        f"- not gated in this pipeline: {md_code(n.repository, 200)} (its push job {md_code(n.push_job, 255)} "
        "is not in this pipeline)"
        for n in not_gated[:_NOT_GATED_LISTED]
    ]
    if len(not_gated) > _NOT_GATED_LISTED:
        lines.append(f"- …and {len(not_gated) - _NOT_GATED_LISTED} more images not gated")
    return "**Not gated** (nothing of theirs was built here, so no commit status):\n\n" + "\n".join(lines)


_PROBLEMS_LISTED = 50


def problems_block(detail: str) -> str:
    """A config error's problems, one "key: message" per line of the detail, as a list."""
    lines = [line for line in clean(detail, 20_000, multiline=True).split("\n") if line.strip()]
    items = []
    for line in lines[:_PROBLEMS_LISTED]:
        key, sep, message = line.partition(": ")
        items.append(f"- {md_code(key, 200)}: {md_inline(message)}" if sep else f"- {md_inline(line)}")
    if len(lines) > _PROBLEMS_LISTED:
        items.append(f"- …and {len(lines) - _PROBLEMS_LISTED} more")
    return "**Problems:**\n\n" + "\n".join(items or ["- (none recorded)"])


def _more(items: int, listed: int) -> list[str]:
    return [f"- …and {items - listed} more"] if items > listed else []


def risk_blocks(verdict: Verdict, listed: int) -> list[str]:
    """Accepted, expired and unused exceptions, other non-blocking fail_on findings, the new-only baseline."""
    today = verdict.decided_on
    blocks: list[str] = []
    if verdict.expired:
        rows = [
            f"- {md_code(w.finding.id, 100)} in {md_code(w.finding.package, 100) or 'any package'}: "
            f"{md_inline(w.why)}, blocking again"
            + (f" (was: {md_inline(w.acceptance.reason, 200)})" if w.acceptance else "")
            for w in verdict.expired[:listed]
        ]
        blocks.append("**Exceptions that ended:**\n\n" + "\n".join(rows + _more(len(verdict.expired), listed)))
    accepted = [w for w in verdict.waived if w.acceptance is not None]
    if accepted:
        rows = []
        for w in accepted[:listed]:
            a = w.acceptance
            assert a is not None
            soon = today is not None and expiring_soon(a, today)
            until = a.expires.isoformat() + (f" ⚠ ends in {(a.expires - today).days} days" if soon and today else "")
            rows.append(
                table_row(
                    [
                        md_code(w.finding.id, 100),
                        md_code(w.finding.package, 100) or "any",
                        md_inline(a.reason, 300),
                        md_code(a.by, 100) or "—",
                        until,
                        md_inline(a.source, 100),
                    ]
                )
            )
        header = table_row(["Accepted", "Package", "Reason", "By", "Until (UTC)", "Recorded in"])
        table = header + "\n|---|---|---|---|---|---|\n" + "\n".join(rows)
        blocks.append(f"**Accepted risks** ({len(accepted)}, not blocking):\n\n{table}")
        blocks += [f"…and {len(accepted) - listed} more accepted."] if len(accepted) > listed else []
    other = [w for w in verdict.waived if w.acceptance is None]
    if other:
        rows = [
            f"- {md_code(w.finding.id, 100)} {md_code(w.finding.package, 100)}: {md_inline(w.why, 200)}"
            for w in other[:listed]
        ]
        blocks.append("**Not blocking by policy:**\n\n" + "\n".join(rows + _more(len(other), listed)))
    if verdict.baseline:
        blocks.append(f"_Block mode `new`: {md_inline(verdict.baseline, 300)}._")
    return blocks


def unused_block(verdicts: Sequence[Verdict], listed: int) -> str:
    """Exceptions in force that no image of the note needed (per image they would repeat for every image)."""
    used = {w.acceptance for v in verdicts for w in (*v.waived, *v.expired) if w.acceptance is not None}
    unused: dict[Acceptance, None] = {}
    for verdict in verdicts:
        unused |= {a: None for a in verdict.unused if a not in used}
    if not unused:
        return ""
    rows = [
        f"- {md_code(a.id, 100)}"
        + (f" in {md_code(a.package, 100)}" if a.package else "")
        + f" until {a.expires.isoformat()} ({md_inline(a.source, 100)})"
        for a in list(unused)[:listed]
    ]
    return "**Unused exceptions** (matched no finding here):\n\n" + "\n".join(rows + _more(len(unused), listed))


_AUDIT_LISTED = 20


def audit_block(entries: Sequence[AuditEntry], mr_url: str) -> str:
    """The MR's commands, newest last: who, when, the command, what the bot did, a link to the comment."""
    if not entries:
        return ""
    newest = {e.note_id: e for e in entries}  # a retried command is one line
    shown = sorted(newest.values(), key=lambda e: e.at)[-_AUDIT_LISTED:]
    rows = []
    for e in shown:
        when = datetime.fromtimestamp(e.at, UTC).strftime("%Y-%m-%d %H:%M UTC")
        link = f" · [comment]({mr_url}#note_{e.note_id})" if mr_url else ""
        rows.append(
            f"- {when} · {md_code('@' + e.by, 120)} · {md_code(e.command, 400)} → {md_inline(e.outcome, 300)}{link}"
        )
    return "**Commands** (audit):\n\n" + "\n".join(rows)
