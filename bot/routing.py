"""Pure: which gates an event concerns, built from config (never from payload URLs)."""

from __future__ import annotations

from bot.config import ImageSettings, ProjectSettings, Settings
from bot.ecr_api import ImageRef
from bot.events import JobEvent, PipelineEvent
from bot.policy import Policy, Target
from bot.state import Gate


def _gate(settings: Settings, image: ImageSettings, *, project_id: int, project_path: str, sha: str, ref: str,
          pipeline_id: int, pipeline_url: str = "", source: str = "", mr_iid: int | None = None) -> Gate:
    return Gate(
        project_id=project_id,
        project_path=project_path,
        sha=sha,
        ref=ref,
        pipeline_id=pipeline_id,
        repository=image.repository,
        tag=image.render_tag(sha, ref, pipeline_id),
        push_job=image.push_job,
        region=image.region,
        registry_id=image.registry_id or "",
        role_arn=image.role_arn or "",
        status_name=settings.status_name(image.repository),
        pipeline_url=pipeline_url,
        source=source,
        mr_iid=mr_iid or 0,
    )


def gates_for_pipeline(settings: Settings, project: ProjectSettings, event: PipelineEvent) -> list[Gate]:
    return [
        _gate(settings, image, project_id=event.project_id, project_path=event.project_path, sha=event.sha,
              ref=event.ref, pipeline_id=event.pipeline_id, pipeline_url=event.url, source=event.source,
              mr_iid=event.mr_iid if event.mr_project_id in (None, event.project_id) else None)
        for image in project.images
    ]


def gates_for_job(settings: Settings, project: ProjectSettings, event: JobEvent) -> list[Gate]:
    """Gates whose push job this is (a job event can arrive before its pipeline event).

    A Job Hook of a merge request pipeline carries ref refs/merge-requests/<iid>/head, not the branch:
    a tag built from {ref_slug} cannot be known from it, so such gates wait for the pipeline event
    (or the sweep) instead of polling a wrong tag.
    """
    return [
        _gate(settings, image, project_id=event.project_id, project_path=event.project_path, sha=event.sha,
              ref=event.ref, pipeline_id=event.pipeline_id)
        for image in project.images
        if image.push_job == event.job_name and not (event.ref.startswith("refs/") and "{ref_slug}" in image.tag)
    ]


def push_succeeded(event: PipelineEvent, push_job: str) -> bool:
    build = event.build(push_job)
    return build is not None and build.status == "success"


def image_settings(settings: Settings, gate: Gate) -> ImageSettings | None:
    project = settings.project_for(gate.project_id, gate.project_path)
    if project is None:
        return None
    return next((i for i in project.images if i.repository == gate.repository), None)


def image_ref(gate: Gate) -> ImageRef:
    return ImageRef(repository=gate.repository, tag=gate.tag, digest=gate.digest, region=gate.region,
                    registry_id=gate.registry_id or None, role_arn=gate.role_arn or None)


def policy_for(settings: Settings, gate: Gate) -> Policy:
    image = image_settings(settings, gate)
    fail_on = (image.fail_on if image and image.fail_on is not None else None) or settings.policy.fail_on
    return Policy(fail_on=tuple(fail_on), ignore=frozenset(settings.policy.ignore))


def target(gate: Gate) -> Target:
    return Target(repository=gate.repository, tag=gate.tag, region=gate.region, registry_id=gate.registry_id or None)


def rate_bucket(gate: Gate) -> str:
    """ECR rate limits are per account and region."""
    return f"ecr:{gate.registry_id or 'default'}:{gate.region}"
