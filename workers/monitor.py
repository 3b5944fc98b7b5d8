"""Celery tasks of [monitor]: watch what the bot let through, rescan it on a schedule, keep one issue per repository."""

from __future__ import annotations

import logging
import time
from dataclasses import replace

from celery import Task, shared_task

from bot.adapters.ecr import EcrCallError
from bot.core import poll as rule
from bot.core.errors import PermanentError, TransientError
from bot.core.gate import Gate, GateKind, GateState
from bot.core.models import Reason
from bot.core.monitor import Watched, after_rescan, issue_marker, render_issue
from bot.core.risk import BlockMode, finding_key
from bot.core.routing import policy_for, rate_bucket
from bot.core.scan import TRANSIENT_CODES
from workers import tasks
from workers.runtime import runtime

log = logging.getLogger(__name__)

DAY_S = 86400


@shared_task(name="monitor.watch")
def watch(gate_key: str, enhanced: bool) -> bool:
    """A watched branch's or tag's gate decided on a completed scan: its digest joins the watched set."""
    rt = runtime()
    monitor = rt.settings.monitor
    gate = finished = rt.store.get(gate_key)
    if not monitor.enabled or gate is None or not gate.watched or gate.kind is not GateKind.MERGE:
        return False
    if finished is None or finished.verdict is None or not finished.image.digest:
        return False
    if finished.verdict.reason not in (Reason.PASSED, Reason.BLOCKED):
        return False
    # Rescans judge all findings by the gate's rules: "new only" compares an MR with its target, not a release.
    policy = replace(policy_for(rt.settings, gate), block=BlockMode.ALL, target_branch="")
    watched = Watched(
        project_id=gate.project_id,
        project_path=gate.project_path,
        image=replace(finished.image, tag=""),  # by digest only: a tag can move, the digest is what ships
        pipeline_id=gate.pipeline_id,
        ref=gate.ref,
        gated_at=time.time(),
        enhanced=enhanced,
        known=frozenset(finding_key(f) for f in finished.verdict.blocking),
        policy=policy,
    )
    dropped = rt.store.watch(watched, monitor.keep_digests, time.time() - monitor.keep_days * DAY_S)
    log.info("monitor: watching %s@%s of project %s", gate.repository, finished.image.digest[:19], gate.project_id)
    if dropped:
        issue.delay(gate.project_id, gate.repository)
    return True


@shared_task(name="monitor.rescan_all")
def rescan_all() -> dict[str, int]:
    """Beat: drop digests past keep_days, and rescan every watched digest."""
    rt = runtime()
    counts = {"rescans": 0, "expired": 0}
    oldest = time.time() - rt.settings.monitor.keep_days * DAY_S
    for project_id, repository in rt.store.watched_repositories():
        if rt.store.expire_watched(project_id, repository, oldest):
            counts["expired"] += 1
            issue.delay(project_id, repository)
        for w in rt.store.watched(project_id, repository):
            rescan.delay(project_id, repository, w.image.digest)
            counts["rescans"] += 1
    log.info("monitor: %s", counts)
    return counts


# Bounded by the shared rate limit's waits: a minute of them at most, then tomorrow's rescan.
@shared_task(name="monitor.rescan", bind=True, max_retries=30)
def rescan(self: Task, project_id: int, repository: str, digest: str, unless_within_s: float = 0.0) -> str:
    """Scan one watched digest again (basic: StartImageScan; enhanced: Inspector rescans by itself), then read
    it to completion through the one polling rule, as a gate of kind "rescan". A scan event asks with
    `unless_within_s`: a digest rescanned that recently is not read again."""
    rt = runtime()
    watched = next((w for w in rt.store.watched(project_id, repository) if w.image.digest == digest), None)
    if watched is None:
        return "not watched"
    gate = _rescan_gate(watched)
    if not rt.store.create(gate):
        current = rt.store.get(gate.key)
        # Waiting: this very task's earlier try (throttled before its scan started); polling: yesterday's.
        if current is not None and current.state is GateState.POLLING:
            return "a rescan is still running"
        recent = current is not None and time.time() - current.last_progress < unless_within_s
        if recent and current is not None and current.verdict is not None:
            return "rescanned just now"  # e.g. the scan event of the rescan this bot itself started
    asked_at = 0.0  # when ECR took a new scan: the old scan's COMPLETE answered until it starts is not read
    if not watched.enhanced:
        wait = rt.store.take_token(rate_bucket(gate.image), rt.settings.ecr.rate_per_s, rt.settings.ecr.burst)
        if wait > 0:
            raise self.retry(countdown=wait * 2)  # the shared rate limit: every ECR call counts against it
        asking = time.time()
        started = _start_scan(gate)
        if started == "retry":
            raise self.retry(countdown=rule.backoff(self.request.retries, rt.settings.scan.backoff_max_s, tasks._rng))
        if started == STARTED:
            asked_at = asking
    progress = rule.start(time.time(), rt.settings.scan)
    gen = rt.store.start_polling(gate.key, progress.polling_since, progress.deadline, asked_at)
    if not gen:
        reasons = [r.value for r in Reason]
        gen = rt.store.restart(gate.key, progress.polling_since, progress.deadline, reasons, asked_at)
    if not gen:
        return "raced"
    tasks._enqueue_poll(gate.key, gen)
    return "polling"


def _rescan_gate(w: Watched) -> Gate:
    return Gate(
        project_id=w.project_id,
        project_path=w.project_path,
        sha="",  # never a commit's gate: no commit status, no MR note
        ref=w.ref,
        pipeline_id=w.pipeline_id,
        image=w.image,
        push_job="",
        status_name="",
        policy=w.policy,
        kind=GateKind.RESCAN,
    )


STARTED = "started"


def _start_scan(gate: Gate) -> str:
    """StartImageScan: STARTED, "retry", or the error code. The 24 h quota already used today is no error: the
    scan of today is then read."""
    try:
        status = runtime().ecr.start_scan(gate.image)
    except TransientError:
        return "retry"
    except EcrCallError as exc:
        code = exc.result.ecr_status
        if code in TRANSIENT_CODES:
            return "retry"
        # LimitExceededException: scanned within 24 h. Anything else (denied, not found, unsupported) is for
        # the read that follows to classify, so the verdict names it.
        log.info("monitor: StartImageScan of %s: %s (reading the findings anyway)", gate.key, code)
        return code
    log.info("monitor: StartImageScan of %s: %s", gate.key, status)
    return STARTED


@shared_task(name="monitor.rescanned")
def rescanned(gate_key: str) -> None:
    """A rescan is decided: apply it to the watched digest and refresh the repository's issue."""
    rt = runtime()
    gate = rt.store.get(gate_key)
    if gate is None or gate.verdict is None or gate.kind is not GateKind.RESCAN:
        return
    watched = next(
        (w for w in rt.store.watched(gate.project_id, gate.repository) if w.image.digest == gate.image.digest), None
    )
    rt.store.set_posted(gate.key, gate.verdict.reason.commit_state)  # nothing to post: the sweep leaves it be
    rt.store.mark_noted(gate.key)
    rt.store.forget_open(gate.key)
    if watched is None:
        return
    result = after_rescan(watched, gate.verdict, time.time())
    rt.store.save_watched(result.watched)
    if result.why:
        log.warning("monitor: rescan of %s read no scan (%s): the last state stands", gate.key, result.why)
    log.info("monitor: rescan of %s: %s", gate.key, result.watched.state.value)
    issue.delay(gate.project_id, gate.repository)


# max_retries: as the MR note's, GitLab outages of minutes; the next rescan refreshes the issue anyway.
@shared_task(name="monitor.issue", bind=True, max_retries=tasks.GITLAB_MAX_RETRIES)
def issue(self: Task, project_id: int, repository: str) -> str:
    """Create, edit, reopen or close the repository's one issue so it shows what the watched digests show."""
    rt = runtime()
    lock = rt.store.issue_lock(project_id, repository)
    if not lock.acquire():
        # Another sync of this issue, or one a killed worker held (the lock lapses after its 60 s): waiting for
        # it uses no GitLab retries, and 40 more tries at 2 s outlast the lock.
        raise self.retry(countdown=2.0, max_retries=tasks.GITLAB_MAX_RETRIES + 40)
    try:
        return _sync_issue(project_id, repository)
    except TransientError as exc:
        # A POST that timed out may have created the issue: look for it again only once it must have landed.
        floor = 2 * rt.settings.gitlab.timeout_s if exc.uncertain else 0.0
        raise tasks._gitlab_retry(self, exc, floor=floor) from None
    except PermanentError as exc:
        log.error("monitor: issue of %s in project %s not updated: %s", repository, project_id, exc)
        return "refused"
    finally:
        lock.release()


def _sync_issue(project_id: int, repository: str) -> str:
    rt = runtime()
    monitor = rt.settings.monitor
    text = render_issue(repository, rt.store.watched(project_id, repository), rt.settings.gitlab.url)
    marker = issue_marker(repository)
    found = rt.gitlab.find_issue(project_id, marker, monitor.label, rt.store.issue_iid(project_id, repository))
    if found is None:
        if not text.open:
            return "nothing to report"
        created = rt.gitlab.create_issue(project_id, text.title, text.description, monitor.label, monitor.confidential)
        rt.store.set_issue_iid(project_id, repository, created.iid)
        log.warning("monitor: opened issue #%s in project %s: %s", created.iid, project_id, text.summary)
        return "opened"
    rt.store.set_issue_iid(project_id, repository, found.iid)
    if not text.open:
        if found.state == "closed":
            return "closed already"
        rt.gitlab.comment_issue(
            project_id, found.iid, "Every watched image of this repository is now clean or no longer deployed: closing."
        )
        rt.gitlab.edit_issue(project_id, found.iid, state_event="close")
        log.info("monitor: closed issue #%s in project %s", found.iid, project_id)
        return "closed"
    changes: dict[str, object] = {}
    if found.description != text.description or found.title != text.title:
        changes |= {"title": text.title, "description": text.description}
    if found.state == "closed":
        changes["state_event"] = "reopen"
    if changes:
        rt.gitlab.edit_issue(project_id, found.iid, **changes)
        return "reopened" if "state_event" in changes else "updated"
    return "unchanged"
