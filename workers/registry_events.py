"""Celery tasks for registry events: a scan done wakes its gates' polls; a push starts gates whose job event is lost."""

from __future__ import annotations

import logging
import time

from celery import Task, current_app, shared_task

from bot.core.errors import TransientError
from bot.core.gate import Gate, GateKind, GateState
from bot.core.plan import newest
from bot.core.scan_events import EventKind, RegistryEvent, age_s, event_from_dict, names
from workers import tasks
from workers.runtime import runtime
from workers.tasks import GITLAB_MAX_RETRIES, capped

log = logging.getLogger(__name__)

# A push job pushes, then exits: its job turns "success" a few seconds after the PUSH event. Ask GitLab every
# 5 s for up to a minute; a job still running after that is left to its job event or the sweep.
PUSH_CONFIRM_EVERY_S = 5.0
PUSH_CONFIRM_TRIES = 12
# A push older than this when judged (its message waited out an outage in SQS) is not counted as drift: the
# gates of that time may have finished and expired from the watch sets meanwhile.
MAX_DRIFT_AGE_S = 3600
# A watched digest's scan event within this long of its last rescan is that rescan's own: nothing new to read.
RESCANNED_RECENTLY_S = 600.0
# GitLab job states from which the job may still succeed by itself.
_MAY_STILL_SUCCEED = frozenset({"created", "pending", "running", "waiting_for_resource", "preparing", "scheduled"})


@shared_task(name="gate.registry_event", bind=True, max_retries=GITLAB_MAX_RETRIES)
def registry_event(self: Task, payload: dict, inbox: str = "") -> dict[str, int]:
    """Match one ECR event to the gates waiting on its image and act; duplicates of an event do nothing."""
    rt = runtime()
    event = event_from_dict(payload)
    if not rt.store.first_sight(event.id):
        return {"duplicate": 1}
    # A scan is recorded before the gates are looked up: a gate starting to poll at the same moment either
    # sees this record (and reads ECR at once) or is already polling here (and is woken below).
    if event.kind is EventKind.SCAN:
        rt.store.saw(event.kind.value, event.region, event.repository, event.tags, event.digest)
    counts = {"woken": 0, "starting": 0, "matched": 0, "rescans": 0}
    rescanned: set[tuple[int, str]] = set()
    for key in rt.store.watching(event.region, event.repository, (*event.tags, event.digest)):
        gate = rt.store.get(key)
        if gate is None or not names(event, gate.image):
            continue
        if event.kind is EventKind.FINDING:
            # Only for the digests [monitor] watches: an open gate gets its own "Inspector2 Scan" event, and
            # waking it once per finding would read ECR dozens of times for one verdict.
            watched = gate.state is GateState.DONE and (gate.watched or gate.kind is GateKind.RESCAN)
            if watched and rt.settings.monitor.enabled and (gate.project_id, gate.repository) not in rescanned:
                rescanned.add((gate.project_id, gate.repository))
                name = f"finding-read:{gate.project_id}:{gate.repository}:{event.digest}"
                settle = rt.settings.monitor.finding_settle_s  # one read for the burst (see MonitorSettings)
                if rt.store.once_within(name, settle):
                    args = (gate.project_id, gate.repository, event.digest, 0.0)
                    current_app.send_task("monitor.rescan", args=args, countdown=settle)
                    counts["rescans"] += 1
            continue
        if gate.state is GateState.DONE:
            # A new scan of a digest [monitor] watches (Inspector rescans by itself): read it now, not tomorrow.
            watched = gate.watched or gate.kind is GateKind.RESCAN
            if event.kind is EventKind.SCAN and watched and rt.settings.monitor.enabled:
                if (gate.project_id, gate.repository) not in rescanned:
                    rescanned.add((gate.project_id, gate.repository))
                    args = (gate.project_id, gate.repository, event.digest, RESCANNED_RECENTLY_S)
                    current_app.send_task("monitor.rescan", args=args)
                    counts["rescans"] += 1
            continue
        counts["matched"] += 1
        if gate.state is GateState.POLLING and event.kind is EventKind.SCAN:
            wake(gate)
            counts["woken"] += 1
        elif gate.state is GateState.WAITING and event.kind is EventKind.PUSH:
            confirm_push.delay(gate.key)
            counts["starting"] += 1
    if event.kind is EventKind.PUSH and not counts["matched"]:
        # Often just early: the pipeline's own events may come after the push. Judge it later.
        drift_check.apply_async(args=(payload,), countdown=capped(rt.settings.events.drift_after_s))
    about = f" ({event.finding}, {event.status})" if event.kind is EventKind.FINDING else ""
    log.info("%s event %s for %s%s: %s", event.kind.value, event.id, event.where, about, counts)
    return counts


def wake(gate: Gate) -> None:
    """One poll now, through the one polling rule: it claims the gate's current generation, so the poll that
    was waiting for its countdown finds itself superseded and stops (and a duplicate wake-up does nothing)."""
    tasks._enqueue_poll(gate.key, gate.poll_gen)


@shared_task(name="gate.confirm_push", bind=True, max_retries=PUSH_CONFIRM_TRIES + GITLAB_MAX_RETRIES)
def confirm_push(self: Task, gate_key: str, tries: int = 0) -> str:
    """A PUSH of a waiting gate's image: start it once GitLab says its own push job succeeded. Another
    pipeline of the same commit may push the same tag first, so the event alone never starts a gate."""
    rt = runtime()
    gate = rt.store.get(gate_key)
    if gate is None or gate.state is not GateState.WAITING:
        return "not waiting"
    try:
        job = newest(rt.gitlab.pipeline_jobs(gate.project_id, gate.pipeline_id), gate.push_job)
    except TransientError as exc:
        raise tasks._gitlab_retry(self, exc) from None
    if job is not None and job.status == "success":
        log.info("gate %s: push seen in ECR and %s succeeded: starting", gate_key, gate.push_job)
        tasks._start_polling(gate)
        return "started"
    if job is not None and job.status in _MAY_STILL_SUCCEED and tries < PUSH_CONFIRM_TRIES:
        raise self.retry(args=(gate_key, tries + 1), countdown=PUSH_CONFIRM_EVERY_S)
    return f"push job {job.status if job else 'not found'}"


@shared_task(name="gate.drift_check")
def drift_check(payload: dict) -> bool:
    """A push that still matches no gate: counted as config drift when the bot gates that repository."""
    rt = runtime()
    event = event_from_dict(payload)
    age = age_s(event, time.time())
    if age is not None and age > MAX_DRIFT_AGE_S:
        return False  # a backlog drained after an outage: whether a gate waited for it then is unknown now
    if rt.store.watching(event.region, event.repository, (*event.tags, event.digest)):
        return False
    if not _configured(event):
        return False
    total = rt.store.count_drift(event.region, event.repository)
    log.warning(
        "config drift: %s:%s was pushed at %s and no gate waited for it (%d so far for this repository); "
        "is its push job named in the config, or does the pipeline push under another tag?",
        event.repository,
        ",".join(event.tags) or event.digest[:19],
        event.time or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        total,
    )
    return True


def _configured(event: RegistryEvent) -> bool:
    """A repository the bot gates: one it has gated before, or one the central config names."""
    rt = runtime()
    if rt.store.known_repository(event.region, event.repository):
        return True
    return any(image.matches_repository(event.repository, event.region) for image in rt.settings.all_images())
