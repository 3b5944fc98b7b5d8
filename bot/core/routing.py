"""Pure: which gates an event concerns, built from config (never from payload URLs), and their policy."""

from __future__ import annotations

from bot.core.events import Event, JobEvent, PipelineEvent
from bot.core.gate import Gate
from bot.core.models import Image
from bot.core.policy import Policy
from bot.core.settings import ImageSettings, ProjectSettings, Settings


def _gate(
    settings: Settings, image: ImageSettings, event: Event, *, pipeline_url: str = "", source: str = "", mr_iid: int = 0
) -> Gate:
    return Gate(
        project_id=event.project_id,
        project_path=event.project_path,
        sha=event.sha,
        ref=event.ref,
        pipeline_id=event.pipeline_id,
        image=image.image(image.render_tag(event.sha, event.ref, event.pipeline_id)),
        push_job=image.push_job,
        status_name=settings.status_name(image.repository),
        pipeline_url=pipeline_url,
        source=source,
        mr_iid=mr_iid,
    )


def gates_for_pipeline(settings: Settings, project: ProjectSettings, event: PipelineEvent) -> list[Gate]:
    # An MR of another project (a fork's MR pipeline runs in the target project) is not this project's MR.
    mr_iid = event.mr_iid if event.mr_iid and event.mr_project_id in (None, event.project_id) else 0
    return [
        _gate(settings, image, event, pipeline_url=event.url, source=event.source, mr_iid=mr_iid)
        for image in project.images
    ]


def gates_for_job(settings: Settings, project: ProjectSettings, event: JobEvent) -> list[Gate]:
    """Gates whose push job this is (a job event can arrive before its pipeline event).

    A Job Hook of a merge request pipeline carries ref refs/merge-requests/<iid>/head, not the branch:
    a tag built from {ref_slug} cannot be known from it, so such gates wait for the pipeline event
    (or the sweep) instead of polling a wrong tag.
    """
    return [
        _gate(settings, image, event)
        for image in project.images
        if image.push_job == event.job_name and not (event.ref.startswith("refs/") and "{ref_slug}" in image.tag)
    ]


def gates_for_event(settings: Settings, project: ProjectSettings, event: Event) -> list[Gate]:
    if isinstance(event, PipelineEvent):
        return gates_for_pipeline(settings, project, event)
    return gates_for_job(settings, project, event)


def why_ignored(settings: Settings, event: Event) -> str | None:
    """None when the event concerns a configured gate; else why it is ignored (the receiver answers 200)."""
    project = settings.project_for(event.project_id, event.project_path)
    if project is None:
        return "project not configured"
    if isinstance(event, JobEvent):
        if event.job_name not in {i.push_job for i in project.images}:
            return "job is not a configured push job"
        if event.status != "success":
            return f"push job {event.status}, waiting for success"
    return None


def push_succeeded(event: PipelineEvent, push_job: str) -> bool:
    build = event.build(push_job)
    return build is not None and build.status == "success"


def image_settings(settings: Settings, gate: Gate) -> ImageSettings | None:
    project = settings.project_for(gate.project_id, gate.project_path)
    if project is None:
        return None
    return next((i for i in project.images if i.repository == gate.repository), None)


def policy_for(settings: Settings, gate: Gate) -> Policy:
    image = image_settings(settings, gate)
    fail_on = (image.fail_on if image and image.fail_on is not None else None) or settings.policy.fail_on
    return Policy(fail_on=tuple(fail_on), ignore=frozenset(settings.policy.ignore))


def rate_bucket(image: Image) -> str:
    """ECR rate limits are per account and region."""
    return f"ecr:{image.registry_id or 'default'}:{image.region}"
