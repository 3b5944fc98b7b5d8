"""Pure parsing of GitLab Pipeline Hook and Job Hook payloads into typed, validated events."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar

from pydantic import ConfigDict, TypeAdapter, ValidationError


class InvalidEvent(ValueError):
    """A supported event whose payload lacks a field the bot needs, or has it in the wrong shape."""


class EventKind(StrEnum):
    """The X-Gitlab-Event header values the bot acts on."""

    PIPELINE = "Pipeline Hook"
    JOB = "Job Hook"


# The payload's object_kind per header (webhook_events.md: "pipeline"; a job is "build").
_OBJECT_KIND = {EventKind.PIPELINE: "pipeline", EventKind.JOB: "build"}

# Ci::HasStatus plus canceling (16.x) and waiting_for_callback (17.x); pipelines and jobs share them.
STATUSES = frozenset({
    "created", "waiting_for_resource", "preparing", "waiting_for_callback", "pending", "running",
    "success", "failed", "canceling", "canceled", "skipped", "manual", "scheduled",
})  # fmt: skip
# Ci::HasStatus::COMPLETED_STATUSES: nothing changes after these.
FINISHED_STATUSES = frozenset({"success", "failed", "canceled", "skipped"})

_SHA = re.compile(r"[0-9a-fA-F]{40}")
_MAX_ID = 2**63 - 1  # GitLab ids are bigint
MAX_REF = 1024
MAX_NAME = 255  # doc/ci/jobs: "Job names must be 255 characters or fewer"; stages too
MAX_PATH = 1024
MAX_TEXT = 2048  # display-only fields (url, created_at, source)
# Jobs of one pipeline kept in an event (the newest try of each name). A payload naming more is treated as
# naming none (every image gated: fail closed) rather than copied into Redis whole: 9,000 builds made a
# 6.8 MB task message.
MAX_BUILDS = 1000


Obj = dict[str, Any]  # a JSON object of the payload


def _describe(value: object) -> str:
    """A short, safe description of a bad value: never echoes more than a few characters."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return repr(value) if len(value) <= 32 else f"a string of {len(value)} characters"
    if isinstance(value, int | float):  # magnitude first: str() of a huge int raises ValueError
        return f"the number {value:.6g}" if abs(value) < 1e15 else "a non-finite or very large number"
    if isinstance(value, dict):
        return "an object"
    return "a list" if isinstance(value, list) else f"a {type(value).__name__}"


def _get(obj: Obj, key: str, where: str) -> Any:
    if key not in obj:
        raise InvalidEvent(f"{where}{key} is missing")
    return obj[key]


def _obj(value: object, field: str) -> Obj:
    if not isinstance(value, dict):
        raise InvalidEvent(f"{field}: expected an object, got {_describe(value)}")
    return value


def _check(obj: Obj, key: str, where: str, ok: Callable[[Any], Any], expected: str) -> Any:
    value = _get(obj, key, where)
    if not ok(value):
        raise InvalidEvent(f"{where}{key}: expected {expected}, got {_describe(value)}")
    return value


def _int(obj: Obj, key: str, where: str = "", minimum: int = 1) -> int:
    # `type(v) is int`, not isinstance: bool is an int subclass and JSON true must not pass for an id.
    ok = lambda v: type(v) is int and minimum <= v <= _MAX_ID  # noqa: E731
    value: int = _check(obj, key, where, ok, f"an integer >= {minimum}")
    return value


def _str(obj: Obj, key: str, where: str = "", max_len: int = MAX_NAME, optional: bool = False) -> str:
    if optional and obj.get(key) is None:
        return ""
    value: str = _check(obj, key, where, lambda v: isinstance(v, str), "a string")
    if not value and not optional:
        raise InvalidEvent(f"{where}{key}: must not be empty")
    if len(value) > max_len:
        raise InvalidEvent(f"{where}{key}: longer than {max_len} characters ({len(value)})")
    return value


def _sha(obj: Obj, key: str, where: str = "") -> str:
    ok = lambda v: isinstance(v, str) and _SHA.fullmatch(v)  # noqa: E731
    value: str = _check(obj, key, where, ok, "a 40-character hex commit sha")
    return value.lower()


def _status(obj: Obj, key: str, where: str = "") -> str:
    value: str = _check(obj, key, where, lambda v: isinstance(v, str) and v in STATUSES, "a GitLab CI status")
    return value


# Events travel to the workers as JSON and are re-validated there: an unknown key is refused, not dropped.
_FORBID_EXTRA = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class Build:
    """One job of a pipeline as listed in the Pipeline Hook's builds[]."""

    __pydantic_config__: ClassVar[ConfigDict] = _FORBID_EXTRA

    id: int
    name: str
    stage: str
    status: str
    allow_failure: bool = False  # a failure of such a job does not fail the pipeline


@dataclass(frozen=True)
class PipelineEvent:
    """A Pipeline Hook: `ref` is the branch even for merge request pipelines (source_ref)."""

    __pydantic_config__: ClassVar[ConfigDict] = _FORBID_EXTRA

    kind: ClassVar[EventKind] = EventKind.PIPELINE
    project_id: int
    project_path: str
    pipeline_id: int
    sha: str
    ref: str
    status: str
    source: str
    mr_iid: int | None  # merge_request.iid: only merge request pipelines carry one
    mr_project_id: int | None  # merge_request.target_project_id: the project that owns the MR
    builds: tuple[Build, ...]
    url: str  # display only: GitLab is reached through the configured URL, never a payload's
    created_at: str
    # A child pipeline (trigger: include:) of this project: the pipeline that triggered it.
    parent_pipeline_id: int | None = None
    mr_target_branch: str = ""  # merge_request.target_branch ("" for a branch pipeline)
    tag: bool = False  # object_attributes.tag: a tag pipeline (ref is the tag)
    default_branch: str = ""  # project.default_branch

    @property
    def finished(self) -> bool:
        return self.status in FINISHED_STATUSES

    @property
    def failed_or_canceled(self) -> bool:
        return self.status in ("failed", "canceled")

    def build(self, name: str) -> Build | None:
        """The newest job with this name: a retry gets a higher id (payloads may list retries)."""
        matches = [b for b in self.builds if b.name == name]
        return max(matches, key=lambda b: b.id) if matches else None


@dataclass(frozen=True)
class JobEvent:
    """A Job Hook. For merge request pipelines `ref` is refs/merge-requests/<iid>/head, not the branch."""

    __pydantic_config__: ClassVar[ConfigDict] = _FORBID_EXTRA

    kind: ClassVar[EventKind] = EventKind.JOB
    project_id: int
    project_path: str  # "" when the payload has no `project` object (see _parse_job)
    pipeline_id: int
    job_id: int
    job_name: str
    stage: str
    status: str
    sha: str
    ref: str
    retries_count: int
    parent_pipeline_id: int | None = None  # as PipelineEvent.parent_pipeline_id
    tag: bool = False  # a tag pipeline's job


Event = PipelineEvent | JobEvent


def _parse_build(value: object, i: int) -> Build:
    where = f"builds[{i}]."
    build = _obj(value, f"builds[{i}]")
    return Build(
        id=_int(build, "id", where),
        name=_str(build, "name", where),
        stage=_str(build, "stage", where),
        status=_status(build, "status", where),
        allow_failure=build.get("allow_failure") is True,
    )


def _parent_pipeline(payload: Obj, project_id: int) -> int | None:
    """The triggering pipeline when it is of the same project (a child pipeline), else None.

    data_builder/pipeline.rb and build.rb add `source_pipeline` only to triggered pipelines; another
    project's trigger (multi-project pipeline) is not a parent whose status we could post to.
    """
    source = payload.get("source_pipeline")
    if not isinstance(source, dict):
        return None
    where = "source_pipeline."
    project = _obj(_get(source, "project", where), "source_pipeline.project")
    if _int(project, "id", where + "project.") != project_id:
        return None
    return _int(source, "pipeline_id", where)


def _newest_builds(builds: list[Build]) -> tuple[Build, ...]:
    """One build per job name, the newest try (the highest id); none at all beyond MAX_BUILDS names."""
    newest: dict[str, Build] = {}
    for build in builds:
        if build.name not in newest or build.id > newest[build.name].id:
            newest[build.name] = build
    return tuple(newest.values()) if len(newest) <= MAX_BUILDS else ()


def _parse_pipeline(payload: Obj) -> PipelineEvent:
    attrs = _obj(_get(payload, "object_attributes", ""), "object_attributes")
    project = _obj(_get(payload, "project", ""), "project")
    a, p = "object_attributes.", "project."
    # webhook_events.md: merge_request is present (non-null) only for merge request pipelines.
    mr = payload.get("merge_request")
    mr_iid = mr_project_id = None
    target_branch = ""
    if mr is not None:
        mr = _obj(mr, "merge_request")
        mr_iid = _int(mr, "iid", "merge_request.")
        mr_project_id = _int(mr, "target_project_id", "merge_request.")
        target_branch = _str(mr, "target_branch", "merge_request.", MAX_REF, optional=True)
    # Absent or null builds[]: the jobs are unknown, and routing then gates every image (fail closed).
    builds = payload.get("builds")
    builds = [] if builds is None else builds
    if not isinstance(builds, list):
        raise InvalidEvent(f"builds: expected a list, got {_describe(builds)}")
    project_id = _int(project, "id", p)
    return PipelineEvent(
        project_id=project_id,
        project_path=_str(project, "path_with_namespace", p, MAX_PATH),
        pipeline_id=_int(attrs, "id", a),
        sha=_sha(attrs, "sha", a),
        ref=_str(attrs, "ref", a, MAX_REF),
        status=_status(attrs, "status", a),
        source=_str(attrs, "source", a, MAX_NAME),
        mr_iid=mr_iid,
        mr_project_id=mr_project_id,
        builds=_newest_builds([_parse_build(b, i) for i, b in enumerate(builds)]),
        url=_str(attrs, "url", a, MAX_TEXT, optional=True),
        created_at=_str(attrs, "created_at", a, MAX_TEXT, optional=True),
        parent_pipeline_id=_parent_pipeline(payload, project_id),
        mr_target_branch=target_branch,
        tag=attrs.get("tag") is True,
        default_branch=_str(project, "default_branch", p, MAX_REF, optional=True),
    )


def _parse_job(payload: Obj) -> JobEvent:
    project_id = _int(payload, "project_id")
    # Older Job Hooks lack `project`; their `project_name` is Project#full_name (data_builder/build.rb),
    # a display name ("Acme / Platform / payments-api"), not a path. A path guessed from it could match
    # another project's config, so the path stays "" and only config selectors by project id match.
    path = ""
    if payload.get("project") is not None:
        project = _obj(payload["project"], "project")
        path = _str(project, "path_with_namespace", "project.", MAX_PATH)
        if "id" in project and _int(project, "id", "project.") != project_id:
            raise InvalidEvent("project.id: differs from project_id")
    # retries_count needed a feature flag before GitLab 16.2: absent means "not known", taken as 0.
    retries = _int(payload, "retries_count", minimum=0) if payload.get("retries_count") is not None else 0
    return JobEvent(
        project_id=project_id,
        project_path=path,
        # webhook_events.md: the Job Hook's commit.id is also the pipeline id; pipeline_id says so plainly.
        pipeline_id=_int(payload, "pipeline_id"),
        job_id=_int(payload, "build_id"),
        job_name=_str(payload, "build_name"),
        stage=_str(payload, "build_stage"),
        status=_status(payload, "build_status"),
        sha=_sha(payload, "sha"),
        ref=_str(payload, "ref", max_len=MAX_REF),
        retries_count=retries,
        parent_pipeline_id=_parent_pipeline(payload, project_id),
        tag=payload.get("tag") is True,
    )


def parse_event(event_header: str | None, payload: object) -> Event | None:
    """The typed event, or None for kinds the bot ignores; InvalidEvent for a malformed one."""
    try:
        kind = EventKind(event_header or "")
    except ValueError:
        return None  # Merge Request Hook, Note Hook, Push Hook, ... or no header at all
    payload = _obj(payload, "payload")
    object_kind = payload.get("object_kind")
    if object_kind != _OBJECT_KIND[kind]:
        raise InvalidEvent(
            f"object_kind: {_describe(object_kind)} does not match X-Gitlab-Event {kind.value!r}"
            f" (expected {_OBJECT_KIND[kind]!r})"
        )
    return _parse_pipeline(payload) if kind is EventKind.PIPELINE else _parse_job(payload)


# Celery carries events as JSON: TypeAdapters write and re-validate them (unknown or missing keys refused).
_ADAPTERS: dict[EventKind, TypeAdapter[Any]] = {
    EventKind.PIPELINE: TypeAdapter(PipelineEvent),
    EventKind.JOB: TypeAdapter(JobEvent),
}


def event_to_dict(event: Event) -> dict[str, Any]:
    """JSON-safe form for Celery task arguments; event_from_dict reverses it."""
    data: dict[str, Any] = _ADAPTERS[event.kind].dump_python(event, mode="json")
    return {"kind": event.kind.value, **data}


def event_from_dict(data: object) -> Event:
    """Rebuild an event from event_to_dict's output; InvalidEvent if it is not one."""
    fields = dict(_obj(data, "event"))
    try:
        kind = EventKind(fields.pop("kind", None))
        event: Event = _ADAPTERS[kind].validate_python(fields)
    except (ValueError, ValidationError) as exc:  # unknown kind, missing, extra or mistyped keys
        raise InvalidEvent(f"event: not a serialized event ({exc.__class__.__name__})") from None
    return event
