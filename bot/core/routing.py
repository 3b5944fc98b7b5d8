"""Pure: which gates an event concerns, built from resolved config (never from payload URLs), and their policy."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from bot.core.events import Event, JobEvent, PipelineEvent
from bot.core.gate import Gate
from bot.core.models import Image
from bot.core.policy import Policy
from bot.core.repo_config import Resolved
from bot.core.settings import ImageSettings, ProjectSettings, Settings

CONFIG_GATE = "(config)"  # the repository of the one gate that carries a config error (no ECR name has parens)


def mr_iid(event: PipelineEvent) -> int:
    # An MR of another project (a fork's MR pipeline runs in the target project) is not this project's MR.
    return event.mr_iid if event.mr_iid and event.mr_project_id in (None, event.project_id) else 0


def _gate(
    settings: Settings,
    image: ImageSettings,
    event: Event,
    policy: Policy | None,
    report_pipeline_id: int,
) -> Gate:
    pipeline = event if isinstance(event, PipelineEvent) else None
    return Gate(
        project_id=event.project_id,
        project_path=event.project_path,
        sha=event.sha,
        ref=event.ref,
        pipeline_id=event.pipeline_id,
        image=image.image(image.render_tag(event.sha, event.ref, event.pipeline_id)),
        push_job=image.push_job,
        status_name=settings.status_name(image.repository),
        pipeline_url=pipeline.url if pipeline else "",
        source=pipeline.source if pipeline else "",
        mr_iid=mr_iid(pipeline) if pipeline else 0,
        report_pipeline_id=report_pipeline_id if report_pipeline_id != event.pipeline_id else 0,
        # block = "new" compares with the MR's target branch; a branch pipeline has none to compare with.
        policy=replace(policy, target_branch=pipeline.mr_target_branch) if policy and pipeline else policy,
        watched=_watched(settings, event),
    )


def _watched(settings: Settings, event: Event) -> bool:
    """[monitor]: a default-branch, listed-branch or tag pipeline ships what runs; an MR pipeline does not."""
    if isinstance(event, PipelineEvent):
        if mr_iid(event) or event.source in ("merge_request_event", "parent_pipeline"):
            return False
        return settings.monitor.watches(event.ref, event.tag, event.default_branch)
    # A Job Hook names neither the default branch nor an MR: only listed branches (and tags) are known.
    return not event.ref.startswith("refs/") and settings.monitor.watches(event.ref, event.tag, "")


def gates_for_pipeline(
    settings: Settings, resolved: Resolved, images: Sequence[ImageSettings], event: PipelineEvent, report_to: int = 0
) -> list[Gate]:
    """One gate per image (of `resolved`) that this pipeline gates."""
    return [_gate(settings, i, event, resolved.policy(i), report_to or event.pipeline_id) for i in images]


def gates_for_job(settings: Settings, resolved: Resolved, event: JobEvent, report_to: int = 0) -> list[Gate]:
    """Gates whose push job this is (a job event can arrive before its pipeline event).

    A Job Hook of a merge request pipeline carries ref refs/merge-requests/<iid>/head, not the branch:
    a tag built from {ref_slug} cannot be known from it, so such gates wait for the pipeline event
    (or the sweep) instead of polling a wrong tag.
    """
    return [
        _gate(settings, image, event, resolved.policy(image), report_to or event.pipeline_id)
        for image in resolved.images
        if image.push_job == event.job_name and not (event.ref.startswith("refs/") and "{ref_slug}" in image.tag)
    ]


def config_gate(settings: Settings, event: PipelineEvent, report_to: int = 0) -> Gate:
    """The gate that fails a pipeline whose gate config is invalid: one status, "<prefix> (config)"."""
    placeholder = ImageSettings(repository="config", push_job="-")
    gate = _gate(settings, placeholder, event, None, report_to or event.pipeline_id)
    status_name = f"{settings.gitlab.status_prefix} {CONFIG_GATE}"
    return replace(gate, image=Image(repository=CONFIG_GATE), push_job="", status_name=status_name)


def static_push_jobs(project: ProjectSettings) -> frozenset[str] | None:
    """The push jobs of a project known from the central config alone; None when a repo file may add some."""
    if project.repo_file:
        return None
    return frozenset(i.push_job for i in project.images)


def why_ignored(settings: Settings, event: Event, push_jobs: frozenset[str] | None = None) -> str | None:
    """None when the event may concern a gate; else why it is ignored (the receiver answers 200).

    `push_jobs`: the push jobs of the job's pipeline when known (from config or the pipeline's plan).
    """
    project = settings.project_for(event.project_id, event.project_path)
    if project is None:
        return "project not configured"
    if isinstance(event, JobEvent):
        if event.status != "success":
            return f"job {event.status}, waiting for success"
        known = push_jobs if push_jobs is not None else static_push_jobs(project)
        if known is not None and event.job_name not in known:
            return "job is not a push job of a gated image"
    return None


def push_succeeded(event: PipelineEvent, push_job: str) -> bool:
    build = event.build(push_job)
    return build is not None and build.status == "success"


def policy_for(settings: Settings, gate: Gate) -> Policy:
    """The gate's own policy; a gate recorded before policies were stored gets the central one."""
    if gate.policy is not None:
        return gate.policy
    project = settings.project_for(gate.project_id, gate.project_path)
    image = next((i for i in project.images if i.repository == gate.repository), None) if project else None
    fail_on = (image.fail_on if image and image.fail_on is not None else None) or settings.policy.fail_on
    return replace(settings.policy.rules(), fail_on=tuple(fail_on))


def rate_bucket(image: Image) -> str:
    """ECR rate limits are per account and region."""
    return f"ecr:{image.registry_id or 'default'}:{image.region}"
