"""Pure: which images one pipeline gates (by its jobs), and how a gate ends when its push never happens."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bot.core.events import FINISHED_STATUSES, Build
from bot.core.models import Reason
from bot.core.settings import ImageSettings

# A job in one of these states may still run by itself; "manual" waits for a person and may never run.
_MAY_RUN = frozenset({"created", "waiting_for_resource", "preparing", "waiting_for_callback", "pending", "running"})
_MAY_RUN |= {"canceling", "scheduled"}
NO_BUILDS = (
    "the Pipeline Hook lists no jobs (builds[] empty, absent, or over 1000 names), so every configured image is gated"
)


@dataclass(frozen=True)
class NotGated:
    """An image this pipeline does not gate, because its push job is not one of the pipeline's jobs."""

    repository: str
    push_job: str


@dataclass(frozen=True)
class Plan:
    """What one pipeline gates: images whose push job it has, those it lacks (required ones fail)."""

    gated: tuple[ImageSettings, ...] = ()
    not_gated: tuple[NotGated, ...] = ()
    missing_required: tuple[ImageSettings, ...] = ()
    why_all: str = ""  # set when every image is gated because the jobs are unknown (fail closed)


def plan_pipeline(images: Sequence[ImageSettings], builds: Sequence[Build]) -> Plan:
    """Gate only images whose push job the pipeline created; with no job list, gate all (fail closed)."""
    if not builds:
        return Plan(gated=tuple(images), why_all=NO_BUILDS if images else "")
    names = {b.name for b in builds}
    gated = tuple(i for i in images if i.push_job in names)
    absent = [i for i in images if i.push_job not in names]
    return Plan(
        gated=gated,
        not_gated=tuple(NotGated(i.repository, i.push_job) for i in absent if not i.required),
        missing_required=tuple(i for i in absent if i.required),
    )


def newest(builds: Sequence[Build], name: str) -> Build | None:
    """The newest try of a job: a retry is a new job with a higher id."""
    matches = [b for b in builds if b.name == name]
    return max(matches, key=lambda b: b.id) if matches else None


@dataclass(frozen=True)
class NoPush:
    """The push job will not push: the gate ends with `reason` (canceled or skipped), explained by `why`."""

    reason: Reason
    why: str


def without_push(push_job: str, builds: Sequence[Build], pipeline_status: str = "") -> NoPush | None:
    """None while the push job may still push; else how its gate ends.

    The pipeline's own status cannot be waited for: our pending status keeps it running. So the jobs decide:
    once none of them may still run by itself and the push job has not succeeded, nothing will be pushed.
    A failed or canceled pipeline (or push job) cancels the gate; a pipeline that just finished without
    running the push job (a manual job nobody started) skips it, since nothing was built.
    """
    latest = {b.name: b for b in sorted(builds, key=lambda b: b.id)}.values()
    push = newest(builds, push_job)
    if push is not None and push.status == "success":
        return None
    if push is not None and push.status in ("failed", "canceled"):
        return NoPush(Reason.CANCELED, f"{push_job} {push.status}: nothing was pushed")
    if pipeline_status in ("failed", "canceled"):
        return NoPush(Reason.CANCELED, f"pipeline {pipeline_status} before {push_job} succeeded")
    settled = pipeline_status in FINISHED_STATUSES or (bool(builds) and not any(b.status in _MAY_RUN for b in latest))
    if not settled:
        return None
    broken = sorted(b.name for b in latest if b.status in ("failed", "canceled") and not b.allow_failure)
    if broken:
        return NoPush(Reason.CANCELED, f"pipeline failed ({', '.join(broken[:3])}) before {push_job} ran")
    state = push.status if push is not None else "not in the pipeline"
    return NoPush(Reason.SKIPPED, f"the pipeline finished without running {push_job} ({state})")
