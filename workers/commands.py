"""Celery task for MR comment commands: check the commenter's role with GitLab, then recheck or accept."""

from __future__ import annotations

import logging
import time

from celery import Task, shared_task

from bot.core import poll as rule
from bot.core.commands import (
    AuditEntry,
    Command,
    CommandError,
    CommandKind,
    NoteEvent,
    note_from_dict,
    parse_command,
    refusal,
)
from bot.core.errors import TransientError
from bot.core.gate import Gate, GateState
from bot.core.markdown import clean
from bot.core.models import Acceptance, Reason
from bot.core.risk import utc_day
from workers.runtime import Runtime, runtime
from workers.scope import confirmed_project
from workers.tasks import GITLAB_MAX_RETRIES, _enqueue_poll, _gitlab_retry, note, sync

log = logging.getLogger(__name__)

ACCEPTED_EMOJI, REFUSED_EMOJI = "white_check_mark", "no_entry_sign"
# What `recheck` polls again: verdicts a changed setting can turn (scan on push turned on, a role fixed, a
# push redone). Not blocked (a rescan finds the same findings), nor config or pipeline-shape verdicts.
RECHECKABLE = tuple(
    r.value
    for r in Reason
    if r.commit_state == "failed" and r not in (Reason.BLOCKED, Reason.CONFIG_ERROR, Reason.PUSH_JOB_MISSING)
)


def _head_gates(rt: Runtime, event: NoteEvent, head_sha: str) -> list[Gate]:
    """The finished gates of the MR's newest pipeline (with its child pipelines).

    MR pipelines are recorded per MR; for branch pipelines the MR's head commit names them (its newest).
    """
    pipeline_id, sha = rt.store.mr_latest(event.project_id, event.mr_iid)
    gates = rt.store.gates_for_commit(event.project_id, sha or head_sha)
    if not pipeline_id:
        pipeline_id = max((g.status_pipeline_id for g in gates), default=0)
    return [g for g in gates if g.status_pipeline_id == pipeline_id and g.state is GateState.DONE]


def _repoll(rt: Runtime, gates: list[Gate], reasons: tuple[str, ...]) -> int:
    """Through the one polling rule again: a fresh deadline, a new generation, the status back to running."""
    now = time.time()
    started = 0
    for gate in gates:
        progress = rule.start(now, rt.settings.scan)
        gen = rt.store.restart(gate.key, progress.polling_since, progress.deadline, reasons)
        if gen:
            _enqueue_poll(gate.key, gen)
            sync.delay(gate.key)
            started += 1
    return started


def _run(rt: Runtime, event: NoteEvent, command: Command, head_sha: str) -> str:
    """Carry out an authorised command; returns the audit line's outcome."""
    if command.kind is CommandKind.RECHECK:
        n = _repoll(rt, _head_gates(rt, event, head_sha), RECHECKABLE)
        return f"rechecking {n} gate{'s' if n != 1 else ''}" if n else "nothing to recheck (no failed, unblocked gate)"
    assert command.until is not None
    acceptance = Acceptance(
        id=command.finding_id,
        reason=command.reason,
        expires=command.until,
        package=command.package,
        by=f"@{clean(event.author_username, 255)}",
        source=f"MR !{event.mr_iid} comment",
    )
    rt.store.add_exception(event.project_id, acceptance)
    # Blocked gates are decided again with the new exception: same scan, same rule, new verdict.
    n = _repoll(rt, _head_gates(rt, event, head_sha), (Reason.BLOCKED.value,))
    return f"accepted until {command.until.isoformat()} (project-wide); re-deciding {n} blocked gate{'s' * (n != 1)}"


def handle(rt: Runtime, event: NoteEvent) -> None:
    if confirmed_project(rt, event.project_id, event.project_path) is None:
        return
    if event.author_id == rt.gitlab.bot_user_id():
        return  # our own note (it quotes commands in its audit lines)
    head_sha = ""
    try:
        command = parse_command(event.first_line)
    except CommandError as exc:
        outcome, emoji, text = f"refused: {exc}", REFUSED_EMOJI, clean(event.first_line, 300)
    else:
        if command is None:
            return
        today = utc_day(time.time())
        level = rt.gitlab.access_level(event.project_id, event.author_id)
        author, head_sha = rt.gitlab.merge_request_head(event.project_id, event.mr_iid)
        why = refusal(command, level, author == event.author_id, today, rt.settings.policy.max_exception_days)
        text = command.text()
        if why:
            outcome, emoji = f"refused: {why}", REFUSED_EMOJI
        else:
            outcome, emoji = _run(rt, event, command, head_sha), ACCEPTED_EMOJI
    log.info("MR !%s of project %s: @%s: %s", event.mr_iid, event.project_id, event.author_username[:60], outcome)
    rt.gitlab.award(event.project_id, event.mr_iid, event.note_id, emoji)
    entry = AuditEntry(time.time(), clean(event.author_username, 255), text, outcome, event.note_id)
    rt.store.add_audit(event.project_id, event.mr_iid, entry)
    pipeline_id, sha = rt.store.mr_latest(event.project_id, event.mr_iid)
    note.delay(event.project_id, sha or head_sha, pipeline_id, event.mr_iid, "")


@shared_task(name="gate.command", bind=True, max_retries=GITLAB_MAX_RETRIES)
def command(self: Task, payload: dict, inbox: str = "") -> None:
    """An MR comment that starts with `ecr-scan-gate`: recheck, or accept a risk (roles from GitLab)."""
    rt = runtime()
    try:
        handle(rt, note_from_dict(payload))
    except TransientError as exc:
        raise _gitlab_retry(self, exc) from None
    rt.store.processed(inbox)
