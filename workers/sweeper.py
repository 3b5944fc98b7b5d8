"""The sweep: finds gates that lost their task or their event and finishes them, failing closed."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bot.core import poll as rule
from bot.core.errors import GateError
from bot.core.events import FINISHED_STATUSES
from bot.core.gate import Gate, GateState
from bot.core.models import Reason, Verdict
from bot.core.plan import NoPush, newest, without_push
from workers.runtime import Runtime

log = logging.getLogger(__name__)

# A waiting gate older than this belongs to a pipeline that will never push: stop asking GitLab.
MAX_WAIT_S = 24 * 3600
# A delivery whose task failed this often is poison, not lost; an hour is far past any retry schedule.
MAX_REPLAYS = 5
MAX_INBOX_AGE_S = 3600


@dataclass(frozen=True)
class Actions:
    """What the sweep may do to a gate: the tasks' own entry points (fakes in the in-process tests)."""

    enqueue_poll: Callable[[str, int], object]
    enqueue_sync: Callable[[str], object]
    enqueue_note: Callable[[int, str, int, int, str], object]
    start_polling: Callable[[Gate], object]
    end: Callable[[Gate, NoPush], object]  # canceled or skipped: the image will not be pushed
    replay: Callable[[str, dict[str, Any], str], object]  # re-queue an accepted delivery whose task was lost
    finished: Callable[[Gate, Verdict], object] = lambda gate, verdict: None  # count a verdict the sweep recorded


def _sweep_polling(rt: Runtime, gate: Gate, now: float, act: Actions) -> str:
    scan = rt.settings.scan
    # Margin past the deadline: the poll task itself times out there; the sweep only covers lost tasks.
    if now > gate.progress.deadline + scan.poll_interval_s + 30:
        verdict = rule.timeout(gate.image, gate.progress, now, how=" (finished by sweep)").verdict
        if rt.store.finish(gate.key, verdict):
            act.finished(gate, verdict)
            act.enqueue_sync(gate.key)
            return "timed_out"
        return "raced"
    if now - gate.last_progress > rt.settings.sweep.stuck_after_s:
        # Re-send the current generation: if the original task is only queued behind a backlog, whichever
        # copy runs first polls and the other stops, so nothing queued is made obsolete.
        rt.store.touch(gate.key, now)
        act.enqueue_poll(gate.key, gate.poll_gen)
        return "resent"
    return "ok"


def _sweep_waiting(rt: Runtime, gate: Gate, now: float, act: Actions) -> str:
    stuck_after = rt.settings.sweep.stuck_after_s
    if not gate.posted_state and now - gate.created_at > 2 * rt.settings.sweep.interval_s:
        # Recorded, but the sync that posts its pending status was lost: post it now (two sweeps' grace
        # for the task itself), so the pipeline cannot finish green before the verdict.
        act.enqueue_sync(gate.key)
    if now - gate.created_at < stuck_after or now - gate.last_progress < stuck_after:
        return "ok"
    rt.store.touch(gate.key, now)  # ask GitLab about this gate once per stuck_after
    jobs = rt.gitlab.pipeline_jobs(gate.project_id, gate.pipeline_id)
    job = newest(jobs, gate.push_job)
    if job is not None and job.status == "success":
        # The job event never arrived (or was lost before it was queued): start now.
        act.start_polling(gate)
        return "started"
    # Our pending status keeps the pipeline running, so no "pipeline finished" event will come: the jobs
    # (the newest try of each) say whether the push can still happen.
    no_push = without_push(gate.push_job, jobs)
    if no_push is None:
        status = rt.gitlab.pipeline_status(gate.project_id, gate.pipeline_id)
        no_push = without_push(gate.push_job, jobs, status) if status in FINISHED_STATUSES else None
    if no_push is None and now - gate.created_at > MAX_WAIT_S:
        no_push = NoPush(Reason.CANCELED, f"{gate.push_job} did not succeed within {MAX_WAIT_S // 3600} h")
    if no_push is None:
        return "ok"
    act.end(gate, NoPush(no_push.reason, f"{no_push.why} (found by sweep)"))
    return no_push.reason.value


def _replay_lost(rt: Runtime, now: float, act: Actions, counts: Counter[str]) -> None:
    """Re-queue accepted deliveries whose task never finished (lost in the broker or a killed worker)."""
    # A task retrying through a GitLab outage can take minutes; only then is a delivery taken as lost.
    older = now - max(2 * rt.settings.sweep.interval_s, rt.settings.sweep.stuck_after_s)
    for delivery in rt.store.stale_deliveries(older):
        if delivery.replays >= MAX_REPLAYS or now - delivery.accepted_at > MAX_INBOX_AGE_S:
            log.error("sweep: delivery %s (%s) given up after %d replays", delivery.id, delivery.task, delivery.replays)
            rt.store.processed(delivery.id)
            counts["given_up"] += 1
            continue
        rt.store.requeued(delivery.id)
        act.replay(delivery.task, delivery.payload, delivery.id)
        counts["replayed"] += 1


def sweep_once(rt: Runtime, act: Actions, now: float | None = None) -> dict[str, int]:
    """One pass over the open gates; returns how many got each action."""
    counts: Counter[str] = Counter()
    now = time.time() if now is None else now
    _replay_lost(rt, now, act, counts)
    for key in list(rt.store.open_gates()):
        gate = rt.store.get(key)
        if gate is None:
            rt.store.forget_open(key)
            counts["expired"] += 1
            continue
        try:
            if gate.state is GateState.DONE:
                # A verdict whose status or note was never confirmed (retries exhausted, task lost).
                if now - gate.last_progress > rt.settings.sweep.stuck_after_s:
                    rt.store.touch(gate.key, now)
                    if gate.verdict is None or gate.posted_state != gate.verdict.reason.commit_state:
                        act.enqueue_sync(gate.key)
                        counts["resynced"] += 1
                    else:
                        act.enqueue_note(gate.project_id, gate.sha, gate.status_pipeline_id, gate.mr_iid, gate.key)
                        counts["renoted"] += 1
                continue
            if gate.state is GateState.POLLING:
                counts[_sweep_polling(rt, gate, now, act)] += 1
            else:
                counts[_sweep_waiting(rt, gate, now, act)] += 1
        except GateError as exc:
            log.warning("sweep: gate %s left for the next sweep: %s", key, exc)
            counts["error"] += 1
    if counts:
        log.info("sweep: %s", dict(counts))
    return dict(counts)
