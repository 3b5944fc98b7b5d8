"""Celery tasks: orchestration of gates only; decisions live in bot/ (pure) and I/O in the adapters."""

from __future__ import annotations

import logging
import random
import time
from dataclasses import replace
from typing import TypeVar

from celery import Task, current_app, shared_task

from bot.adapters import metrics
from bot.adapters.records import PipelinePlan
from bot.core import poll as rule
from bot.core.errors import PermanentError, TransientError
from bot.core.events import JobEvent, PipelineEvent, event_from_dict
from bot.core.gate import Gate, GateKind, GateState, gate_key
from bot.core.models import Phase, Reason, ScanResult, Verdict
from bot.core.plan import NoPush, Plan, plan_pipeline, without_push
from bot.core.policy import Baseline, Policy, failed_verdict
from bot.core.repo_config import Resolved
from bot.core.risk import BlockMode, finding_key
from bot.core.routing import (
    config_gate,
    gates_for_job,
    gates_for_pipeline,
    mr_iid,
    policy_for,
    push_succeeded,
    rate_bucket,
)
from bot.core.settings import ProjectSettings
from workers import reporting
from workers.runtime import runtime
from workers.scope import confirmed_project, pipeline_confirmed, resolved_config
from workers.sweeper import Actions, sweep_once

log = logging.getLogger(__name__)

# GitLab calls (status, note): 8 tries with backoff capped at 60 s span ~5 minutes, enough to ride
# out a GitLab deploy or a rate-limit window; after that the sweep re-syncs what is still unposted.
GITLAB_MAX_RETRIES = 8


_rng = random.Random()  # noqa: S311 - jitter, not crypto
E = TypeVar("E", PipelineEvent, JobEvent)


def capped(countdown: float) -> float:
    """Every countdown stays under half the visibility timeout, so Redis never redelivers a waiting task."""
    return max(0.0, min(countdown, runtime().settings.celery.visibility_timeout_s / 2))


def _enqueue_poll(gate_key: str, gen: int, countdown: float = 0.0) -> None:
    poll.apply_async(args=(gate_key, gen), countdown=countdown)


def _start_polling(gate: Gate) -> None:
    rt = runtime()
    progress = rule.start(time.time(), rt.settings.scan)
    gen = rt.store.start_polling(gate.key, progress.polling_since, progress.deadline)
    if gen:
        log.info("gate %s: push job succeeded, polling ECR for %s:%s", gate.key, gate.repository, gate.image.tag)
        _enqueue_poll(gate.key, gen, _first_poll_after(gate))
        sync.delay(gate.key)


def _first_poll_after(gate: Gate) -> float:
    """When to read ECR first: [scan] first_read_after_s after the push; with events on, at once if this
    image's scan event already came, else when it comes (registry_events.wake) or at the backstop."""
    rt = runtime()
    if not rt.settings.events.enabled:
        return capped(rt.settings.scan.first_read_after_s)
    if rt.store.seen("scan", gate.image):
        return 0.0
    return capped(rt.settings.polling().poll_interval_s)


def _end(gate: Gate, no_push: NoPush) -> None:
    """Finish a gate whose image will not be pushed: canceled (the pipeline failed) or skipped."""
    verdict = failed_verdict(no_push.reason, gate.image, detail=no_push.why)
    if runtime().store.finish(gate.key, verdict):
        finished(gate, verdict)
        log.info("gate %s %s: %s", gate.key, no_push.reason.value, no_push.why, extra={"reason": verdict.reason.value})
        sync.delay(gate.key)


def finished(gate: Gate, verdict: Verdict, polling_since: float | None = None, completed_at: str = "") -> None:
    """Count a verdict this run recorded (Store.finish returned True): once per gate, whoever finished it."""
    since = gate.progress.polling_since if polling_since is None else polling_since
    metrics.gate_finished(gate.kind.value, verdict.reason.value, since, completed_at, time.time())


def _fail(gate: Gate, verdict: Verdict) -> None:
    """Record a gate that is failed from the start (config error, required image missing) and post it."""
    rt = runtime()
    rt.store.create(gate)
    if rt.store.finish(gate.key, verdict):
        finished(gate, verdict)
        log.warning("gate %s: %s", gate.key, verdict.summary, extra={"reason": verdict.reason.value})
    current = rt.store.get(gate.key)
    if current is not None and current.verdict and current.posted_state != current.verdict.reason.commit_state:
        sync.delay(gate.key)


def _confirmed(task: Task, event: E) -> tuple[E, ProjectSettings] | None:
    """The event with GitLab's path for its project, and the project's config; None if GitLab disagrees with
    the payload about the project or the pipeline (a forged or stale payload: nothing is written)."""
    rt = runtime()
    try:
        confirmed = confirmed_project(rt, event.project_id, event.project_path)
        if confirmed is None or not pipeline_confirmed(rt, event.project_id, event.pipeline_id, event.sha):
            return None
        parent = event.parent_pipeline_id
        # A parent GitLab does not know for this commit is ignored: the gates report into their own pipeline.
        real_parent = parent if parent and pipeline_confirmed(rt, event.project_id, parent, event.sha) else None
    except TransientError as exc:
        raise _gitlab_retry(task, exc) from None
    return replace(event, project_path=confirmed.path, parent_pipeline_id=real_parent), confirmed.settings


def _resolved(task: Task, project: ProjectSettings, event: PipelineEvent | JobEvent) -> Resolved:
    try:
        return resolved_config(runtime(), project, event.project_id, event.project_path, event.sha)
    except TransientError as exc:
        raise _gitlab_retry(task, exc) from None


def _report_to(event: PipelineEvent | JobEvent) -> int:
    """The pipeline a gate reports into: a child pipeline's root parent (the MR's pipeline), else its own."""
    if not event.parent_pipeline_id:
        return event.pipeline_id
    store = runtime().store
    root = store.report_pipeline(event.project_id, event.parent_pipeline_id)
    store.set_report_pipeline(event.project_id, event.pipeline_id, root)
    return root


def _config_error(event: PipelineEvent, resolved: Resolved, report_to: int) -> None:
    gate = config_gate(runtime().settings, event, report_to)
    problems = "\n".join(str(p) for p in resolved.problems)
    n = len(resolved.problems)
    status = f"{n} problem{'s' if n != 1 else ''} in {resolved.source}"
    _fail(gate, failed_verdict(Reason.CONFIG_ERROR, gate.image, detail=problems, status=status))


def _handle_pipeline(task: Task, payload: dict) -> None:
    rt = runtime()
    parsed = event_from_dict(payload)
    assert isinstance(parsed, PipelineEvent)
    confirmed = _confirmed(task, parsed)
    if confirmed is None:
        return
    event, project = confirmed
    report_to = _report_to(event)
    mr = mr_iid(event)
    if mr:
        rt.store.see_mr_pipeline(event.project_id, mr, report_to, event.sha)
    resolved = _resolved(task, project, event)
    plan = plan_pipeline(resolved.images, event.builds) if not resolved.problems else Plan()
    if plan.why_all:
        log.warning("pipeline %s of project %s: %s", event.pipeline_id, event.project_id, plan.why_all)
    changed = rt.store.save_plan(
        PipelinePlan(
            project_id=event.project_id,
            pipeline_id=event.pipeline_id,
            report_pipeline_id=report_to,
            sha=event.sha,
            not_gated=tuple((n.repository, n.push_job) for n in plan.not_gated),
            push_jobs=tuple(sorted({i.push_job for i in plan.gated})),
        )
    )
    if resolved.problems:
        _config_error(event, resolved, report_to)
        return
    for missing in gates_for_pipeline(rt.settings, resolved, plan.missing_required, event, report_to):
        detail = f"push job {missing.push_job} is not in this pipeline"
        _fail(missing, failed_verdict(Reason.PUSH_JOB_MISSING, missing.image, detail=detail))
    gates = gates_for_pipeline(rt.settings, resolved, plan.gated, event, report_to)
    for fresh in gates:
        created = rt.store.create(fresh)  # False also when a job event recorded it already
        gate = rt.store.get(fresh.key)
        if gate is None:
            continue
        if not created and fresh.mr_iid and not gate.mr_iid:
            rt.store.set_mr(gate.key, fresh.mr_iid)
        if gate.state is GateState.WAITING:
            if push_succeeded(event, gate.push_job):
                _start_polling(gate)
                continue
            no_push = without_push(gate.push_job, event.builds, event.status)
            if no_push is not None:
                _end(gate, no_push)
                continue
        if not gate.posted_state:
            sync.delay(gate.key)  # the early pending status, so the pipeline cannot finish green first
    _skip_ungated(event, plan)
    if changed and not gates and not plan.missing_required and plan.not_gated:
        # Nothing gated: no status at all, but the MR note says which images were not and why.
        note.delay(event.project_id, event.sha, report_to, mr, "")


def _skip_ungated(event: PipelineEvent, plan: Plan) -> None:
    """Gates recorded before the jobs were known (a job list came late) whose push job is not in the pipeline."""
    ungated = {n.repository for n in plan.not_gated}
    if not ungated:
        return
    for gate in runtime().store.gates_for_commit(event.project_id, event.sha):
        if gate.pipeline_id == event.pipeline_id and gate.repository in ungated and gate.state is GateState.WAITING:
            _end(gate, NoPush(Reason.SKIPPED, f"{gate.push_job} is not in this pipeline: nothing to gate"))


@shared_task(name="gate.pipeline_event", bind=True, max_retries=GITLAB_MAX_RETRIES)
def pipeline_event(self: Task, payload: dict, inbox: str = "") -> None:
    """Resolve the project's config, plan the pipeline's gates, post their pending statuses, start or end them."""
    _handle_pipeline(self, payload)
    runtime().store.processed(inbox)


def _handle_job(task: Task, payload: dict) -> None:
    rt = runtime()
    parsed = event_from_dict(payload)
    assert isinstance(parsed, JobEvent)
    if parsed.status != "success":
        return
    confirmed = _confirmed(task, parsed)
    if confirmed is None:
        return
    event, project = confirmed
    plan = rt.store.plan(event.project_id, event.pipeline_id)
    if plan is not None and event.job_name not in plan.push_jobs:
        return  # the pipeline event came first, and its plan says this job pushes no gated image
    keys = [
        g.key
        for g in rt.store.gates_for_commit(event.project_id, event.sha)
        if g.pipeline_id == event.pipeline_id and g.push_job == event.job_name
    ]
    if not keys:
        # The pipeline event is late, or still being handled (its plan saved, its gates not yet recorded):
        # record this job's gates from the same config, so the push is never missed.
        resolved = _resolved(task, project, event)
        if resolved.problems:
            return  # the pipeline event posts the config error
        for fresh in gates_for_job(rt.settings, resolved, event, _report_to(event)):
            rt.store.create(fresh)
        keys = [
            gate_key(event.project_id, event.pipeline_id, i.repository)
            for i in resolved.images
            if i.push_job == event.job_name
        ]
    for key in keys:
        current = rt.store.get(key)
        if current is not None and current.state is GateState.WAITING:
            _start_polling(current)


@shared_task(name="gate.job_event", bind=True, max_retries=GITLAB_MAX_RETRIES)
def job_event(self: Task, payload: dict, inbox: str = "") -> None:
    """A push job succeeded: start polling its images (creating the gates if the pipeline event is late)."""
    _handle_job(self, payload)
    runtime().store.processed(inbox)


# max_retries=None: a poll is bounded by the gate's deadline (scan.timeout_s), not by a count.
@shared_task(name="gate.poll", bind=True, max_retries=None)
def poll(self: Task, gate_key: str, gen: int) -> None:
    """ONE DescribeImageScanFindings call, then the polling rule: ask again later (never sleep) or finish."""
    rt = runtime()
    settings = rt.settings
    now = time.time()
    gate = rt.store.get(gate_key)
    if gate is None or gate.state is not GateState.POLLING:
        return
    gen = rt.store.claim_poll(gate_key, gen, now)
    if not gen:
        return  # another copy of this poll (redelivered, or re-sent by the sweep) already ran
    answer: rule.Answer
    wait = rt.store.take_token(rate_bucket(gate.image), settings.ecr.rate_per_s, settings.ecr.burst)
    if wait > 0:
        answer = rule.RateLimited(wait)  # the shared rate limit: come back when a token is due
    else:
        try:
            answer = rt.ecr.scan_findings(gate.image, settings.scan.page_size)
        except TransientError as exc:
            log.warning("gate %s: transient ECR error (%s)", gate_key, exc)
            answer = exc
    policy = policy_for(settings, gate)
    if isinstance(answer, ScanResult) and answer.phase is Phase.COMPLETE:
        policy = _in_context(gate, policy)
    step = rule.next_step(gate.image, gate.progress, answer, now, settings.polling(), policy, _rng)
    if isinstance(step, rule.Finish):
        if rt.store.finish(gate_key, step.verdict, step.image, step.progress):
            completed = answer.completed_at if isinstance(answer, ScanResult) else ""
            finished(gate, step.verdict, step.progress.polling_since, completed)
            reason = step.verdict.reason.value
            log.info("gate %s: %s (%s)", gate_key, reason, step.verdict.summary, extra={"reason": reason})
            sync.delay(gate_key)
            if isinstance(answer, ScanResult) and answer.phase is Phase.COMPLETE:
                _record_baseline(gate, answer)
                if gate.watched and settings.monitor.enabled:
                    current_app.send_task("monitor.watch", args=(gate_key, answer.enhanced))
        return
    if not isinstance(answer, rule.RateLimited):
        rt.store.save_progress(gate_key, gen, step.image, step.progress, now)
        if isinstance(answer, ScanResult) and gate.posted_state != "running" and gate.kind is GateKind.MERGE:
            sync.delay(gate_key)
    raise self.retry(args=(gate_key, gen), countdown=capped(step.after_s))


def _in_context(gate: Gate, policy: Policy) -> Policy:
    """The gate's policy with what only Redis knows: exceptions accepted by MR command, the baseline."""
    store = runtime().store
    policy = replace(policy, exceptions=policy.exceptions + store.project_exceptions(gate.project_id))
    if policy.block is BlockMode.NEW and policy.target_branch:
        found = store.baseline(gate.project_id, policy.target_branch, gate.repository)
        if found is not None:
            policy = replace(policy, baseline=Baseline(policy.target_branch, found[1], found[0]))
    return policy


def _record_baseline(gate: Gate, answer: ScanResult) -> None:
    """A branch pipeline's completed scan is what block = "new" compares the branch's MRs with."""
    if gate.mr_iid or gate.ref.startswith("refs/") or gate.source in ("merge_request_event", "parent_pipeline"):
        return
    keys = [finding_key(f) for f in answer.findings]
    runtime().store.save_baseline(gate.project_id, gate.ref, gate.repository, gate.pipeline_id, keys)


def _gitlab_retry(task: Task, exc: TransientError, floor: float = 0.0) -> Exception:
    cap = runtime().settings.gitlab.backoff_max_s
    countdown = exc.retry_after if exc.retry_after is not None else rule.backoff(task.request.retries, cap, _rng)
    return task.retry(countdown=capped(max(countdown, floor)))


@shared_task(name="gate.sync", bind=True, max_retries=GITLAB_MAX_RETRIES)
def sync(self: Task, gate_key: str) -> None:
    """Post the commit status that matches the gate's current state; then refresh the MR note."""
    rt = runtime()
    lock = rt.store.status_lock(gate_key)
    if not lock.acquire():
        # Another sync of this gate is posting; ours runs after it (lock waits don't use up GitLab retries).
        raise self.retry(countdown=1.0 + random.uniform(0, 1), max_retries=GITLAB_MAX_RETRIES + 50)  # noqa: S311
    settle = 2 * rt.settings.gitlab.timeout_s
    try:
        with reporting.holding(lock, settle):
            gate = rt.store.get(gate_key)
            if gate is None:
                return
            if gate.kind is GateKind.RESCAN:
                # No commit status and no note: a rescan's verdict goes to the repository's issue.
                if gate.state is GateState.DONE:
                    current_app.send_task("monitor.rescanned", args=(gate_key,))
                return
            if confirmed_project(rt, gate.project_id, gate.project_path) is None:
                rt.store.drop(gate_key)  # recorded from a forged or stale payload: write nothing
                return
            reporting.post_status(rt, gate)
    except TransientError as exc:
        # An unanswered POST may still land: ask GitLab about it only once it must have (see
        # reporting._already_posted), or the check could miss it and post the verdict twice.
        raise _gitlab_retry(self, exc, floor=settle if exc.uncertain else 0.0) from None
    except PermanentError as exc:
        # e.g. the status name equals a CI job name: GitLab refuses it. Loud, and left for a human.
        log.error("gate %s: GitLab refused the status: %s", gate_key, exc)
        return
    if gate.state is GateState.DONE:
        note.delay(gate.project_id, gate.sha, gate.status_pipeline_id, gate.mr_iid, gate_key)


@shared_task(name="gate.note", bind=True, max_retries=GITLAB_MAX_RETRIES)
def note(self: Task, project_id: int, sha: str, pipeline_id: int, mr_iid: int, gate_key: str = "") -> None:
    """Rebuild the MR's one note from every gate of its current pipeline and edit it in place."""
    rt = runtime()
    try:
        busy = reporting.refresh_notes(rt, project_id, sha, pipeline_id, mr_iid, gate_key)
    except TransientError as exc:
        # A note POST that timed out may still be stored by GitLab: look for it again only once that
        # request must have finished, so find-then-edit sees it and never posts a second note.
        floor = 2 * rt.settings.gitlab.timeout_s if exc.uncertain else 0.0
        raise _gitlab_retry(self, exc, floor=floor) from None
    except PermanentError as exc:
        log.error("MR note for %s@%s not updated: %s", project_id, sha[:8], exc)
        return
    if busy:
        # Another worker holds this MR's note lock; rebuild after it, so neither section is lost.
        raise self.retry(countdown=1.0 + random.uniform(0, 2), max_retries=50)  # noqa: S311


@shared_task(name="gate.sweep")
def sweep() -> dict[str, int]:
    """Beat: finish gates past their deadline, restart lost polls, start gates whose job event was lost."""
    counts = sweep_once(
        runtime(), Actions(_enqueue_poll, sync.delay, note.delay, _start_polling, _end, _replay, finished)
    )
    for action, n in counts.items():
        metrics.SWEEP_ACTIONS.labels(action=action).inc(n)
    return counts


def _replay(task: str, payload: dict, inbox: str) -> None:
    current_app.send_task(task, args=(payload,), kwargs={"inbox": inbox})
