"""Tests for bot.core.events: parsing GitLab Pipeline and Job Hook payloads into typed events."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.core.events import (
    STATUSES,
    Build,
    EventKind,
    InvalidEvent,
    JobEvent,
    PipelineEvent,
    event_from_dict,
    event_to_dict,
    parse_event,
)
from tests.fakes.payloads import SHA, fixture, job_payload, pipeline_payload, webhook_headers

PIPELINE, JOB = "Pipeline Hook", "Job Hook"


# --- the recorded fixtures ---------------------------------------------------------------------


def test_mr_pipeline_fixture() -> None:
    event = parse_event(PIPELINE, fixture("pipeline_hook_mr.json"))
    assert event == PipelineEvent(
        project_id=101,
        project_path="acme/platform/payments-api",
        pipeline_id=7001,
        sha=SHA,
        ref="feature/scan-gate",
        status="running",
        source="merge_request_event",
        mr_iid=17,
        mr_project_id=101,
        builds=(
            Build(90014, "deploy-review", "deploy", "manual", allow_failure=True),
            Build(90013, "docker-push", "push", "success"),
            Build(90012, "unit-tests", "test", "success"),
            Build(90011, "docker-build", "build", "success"),
        ),
        url="https://gitlab.example.com/acme/platform/payments-api/-/pipelines/7001",
        created_at="2025-03-04 09:15:02 UTC",
        mr_target_branch="main",
        default_branch="main",  # project.default_branch: what [monitor] watches by default
    )
    assert event.kind is EventKind.PIPELINE
    assert not event.finished and not event.failed_or_canceled


def test_branch_pipeline_fixture_has_no_merge_request() -> None:
    payload = fixture("pipeline_hook.json")
    assert payload["merge_request"] is None  # GitLab sends null, not an absent key
    event = parse_event(PIPELINE, payload)
    assert isinstance(event, PipelineEvent)
    assert (event.source, event.ref, event.status) == ("push", "main", "success")
    assert event.mr_iid is None and event.mr_project_id is None
    assert event.finished and not event.failed_or_canceled
    assert event.build("docker-push") == Build(90124, "docker-push", "push", "success")


def test_merge_request_key_absent_means_branch_pipeline() -> None:
    payload = fixture("pipeline_hook.json")
    del payload["merge_request"]
    assert parse_event(PIPELINE, payload).mr_iid is None


def test_job_fixture() -> None:
    event = parse_event(JOB, fixture("job_hook.json"))
    assert event == JobEvent(
        project_id=101,
        project_path="acme/platform/payments-api",
        pipeline_id=7001,
        job_id=90013,
        job_name="docker-push",
        stage="push",
        status="success",
        sha=SHA,
        ref="refs/merge-requests/17/head",
        retries_count=0,
    )
    assert event.kind is EventKind.JOB


def test_job_pipeline_id_comes_from_pipeline_id_not_commit_id() -> None:
    payload = fixture("job_hook.json")
    payload["commit"]["id"] = 1  # the documented quirk: commit.id is a pipeline id, never read
    assert parse_event(JOB, payload).pipeline_id == 7001


# Every top-level key of the examples in doc/user/project/integrations/webhook_events.md.
DOC_PIPELINE_KEYS = {"object_kind", "object_attributes", "merge_request", "user", "project", "commit",
                     "source_pipeline", "builds"}  # fmt: skip
DOC_PIPELINE_ATTRS = {"id", "iid", "name", "ref", "tag", "sha", "before_sha", "source", "status", "stages",
                      "created_at", "finished_at", "duration", "variables", "url"}  # fmt: skip
DOC_BUILD_KEYS = {"id", "stage", "name", "status", "created_at", "started_at", "finished_at", "duration",
                  "queued_duration", "failure_reason", "when", "manual", "allow_failure", "user", "runner",
                  "artifacts_file", "environment"}  # fmt: skip
DOC_JOB_KEYS = {"object_kind", "ref", "tag", "before_sha", "sha", "build_id", "build_name", "build_stage",
                "build_status", "build_created_at", "build_created_at_iso", "build_started_at",
                "build_started_at_iso", "build_finished_at", "build_finished_at_iso", "build_duration",
                "build_queued_duration", "build_allow_failure", "build_failure_reason", "retries_count",
                "pipeline_id", "project_id", "project_name", "user", "commit", "repository", "project",
                "runner", "environment", "source_pipeline"}  # fmt: skip


@pytest.mark.parametrize("name", ["pipeline_hook.json", "pipeline_hook_mr.json"])
def test_pipeline_fixtures_keep_the_documented_shape(name: str) -> None:
    payload = fixture(name)
    assert DOC_PIPELINE_KEYS <= payload.keys()
    assert DOC_PIPELINE_ATTRS <= payload["object_attributes"].keys()
    assert all(DOC_BUILD_KEYS <= b.keys() for b in payload["builds"])


def test_job_fixture_keeps_the_documented_shape() -> None:
    assert DOC_JOB_KEYS <= fixture("job_hook.json").keys()


# --- properties --------------------------------------------------------------------------------


@pytest.mark.parametrize("status", sorted(STATUSES))
def test_finished_and_failed_or_canceled(status: str) -> None:
    event = parse_event(PIPELINE, pipeline_payload(status=status))
    assert event.finished == (status in {"success", "failed", "canceled", "skipped"})
    assert event.failed_or_canceled == (status in {"failed", "canceled"})


def test_build_picks_the_newest_retry() -> None:
    builds = [
        ("docker-push", "push", "failed", 500),
        ("docker-push", "push", "success", 900),
        ("docker-push", "push", "canceled", 700),
        ("docker-build", "build", "success", 999),
    ]
    event = parse_event(PIPELINE, pipeline_payload(builds=builds))
    assert event.build("docker-push") == Build(900, "docker-push", "push", "success")
    assert event.build("no-such-job") is None


def test_sha_is_lowercased() -> None:
    assert parse_event(PIPELINE, pipeline_payload(sha=SHA.upper())).sha == SHA
    assert parse_event(JOB, job_payload(sha=SHA.upper())).sha == SHA


def test_mr_project_is_the_target_project() -> None:
    event = parse_event(PIPELINE, pipeline_payload(project_id=5, mr_project_id=9))  # a fork's MR
    assert (event.project_id, event.mr_project_id) == (5, 9)


def test_job_without_project_object_has_empty_path() -> None:
    payload = job_payload()
    del payload["project"]  # older GitLab: only project_id and the display name project_name
    event = parse_event(JOB, payload)
    assert (event.project_id, event.project_path) == (101, "")


@pytest.mark.parametrize("value", ["absent", None])
def test_job_retries_count_absent_or_null_is_zero(value: object) -> None:
    payload = job_payload(retries_count=3)
    assert parse_event(JOB, payload).retries_count == 3
    if value == "absent":
        del payload["retries_count"]
    else:
        payload["retries_count"] = value
    assert parse_event(JOB, payload).retries_count == 0


# --- invalid payloads --------------------------------------------------------------------------


def _without(payload: dict, path: tuple) -> dict:
    target = payload
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return payload


def _with(payload: dict, path: tuple, value: object) -> dict:
    target = payload
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return payload


@pytest.mark.parametrize(
    ("header", "path", "message"),
    [
        (PIPELINE, ("object_attributes",), "object_attributes is missing"),
        (PIPELINE, ("object_attributes", "id"), "object_attributes.id is missing"),
        (PIPELINE, ("object_attributes", "sha"), "object_attributes.sha is missing"),
        (PIPELINE, ("object_attributes", "ref"), "object_attributes.ref is missing"),
        (PIPELINE, ("object_attributes", "status"), "object_attributes.status is missing"),
        (PIPELINE, ("object_attributes", "source"), "object_attributes.source is missing"),
        (PIPELINE, ("project",), "project is missing"),
        (PIPELINE, ("project", "id"), "project.id is missing"),
        (PIPELINE, ("project", "path_with_namespace"), "project.path_with_namespace is missing"),
        (PIPELINE, ("merge_request", "iid"), "merge_request.iid is missing"),
        (PIPELINE, ("merge_request", "target_project_id"), "merge_request.target_project_id is missing"),
        (PIPELINE, ("builds", 0, "name"), "builds[0].name is missing"),
        (PIPELINE, ("object_kind",), "object_kind: null does not match"),
        (JOB, ("project_id",), "project_id is missing"),
        (JOB, ("pipeline_id",), "pipeline_id is missing"),
        (JOB, ("build_id",), "build_id is missing"),
        (JOB, ("build_name",), "build_name is missing"),
        (JOB, ("build_stage",), "build_stage is missing"),
        (JOB, ("build_status",), "build_status is missing"),
        (JOB, ("sha",), "sha is missing"),
        (JOB, ("ref",), "ref is missing"),
        (JOB, ("project", "path_with_namespace"), "project.path_with_namespace is missing"),
    ],
)
def test_missing_field_is_named(header: str, path: tuple, message: str) -> None:
    payload = _without(pipeline_payload() if header == PIPELINE else job_payload(), path)
    with pytest.raises(InvalidEvent) as info:
        parse_event(header, payload)
    assert str(info.value).startswith(message)


@pytest.mark.parametrize(
    ("header", "path", "value", "message"),
    [
        (PIPELINE, ("object_attributes", "id"), True, "object_attributes.id: expected an integer"),
        (PIPELINE, ("object_attributes", "id"), "7001", "object_attributes.id: expected an integer"),
        (PIPELINE, ("object_attributes", "id"), 7001.0, "object_attributes.id: expected an integer"),
        (PIPELINE, ("object_attributes", "id"), 0, "object_attributes.id: expected an integer >= 1"),
        (PIPELINE, ("object_attributes", "id"), 2**64, "object_attributes.id: expected an integer"),
        (PIPELINE, ("object_attributes", "sha"), "abc123", "object_attributes.sha: expected a 40-character"),
        (PIPELINE, ("object_attributes", "sha"), "g" * 40, "object_attributes.sha: expected a 40-character"),
        (PIPELINE, ("object_attributes", "sha"), None, "object_attributes.sha: expected a 40-character"),
        (PIPELINE, ("object_attributes", "status"), "passed", "object_attributes.status: expected a GitLab"),
        (PIPELINE, ("object_attributes", "status"), ["success"], "object_attributes.status: expected a"),
        (PIPELINE, ("object_attributes", "ref"), "", "object_attributes.ref: must not be empty"),
        (PIPELINE, ("object_attributes", "ref"), 5, "object_attributes.ref: expected a string"),
        (PIPELINE, ("object_attributes", "ref"), "r" * 1025, "object_attributes.ref: longer than 1024"),
        (PIPELINE, ("object_attributes", "url"), 3, "object_attributes.url: expected a string"),
        (PIPELINE, ("object_attributes",), [], "object_attributes: expected an object, got a list"),
        (PIPELINE, ("project",), None, "project: expected an object, got null"),
        (PIPELINE, ("merge_request",), "17", "merge_request: expected an object"),
        (PIPELINE, ("merge_request", "iid"), False, "merge_request.iid: expected an integer"),
        (PIPELINE, ("builds",), {}, "builds: expected a list, got an object"),
        (PIPELINE, ("builds", 0), "docker-push", "builds[0]: expected an object"),
        (PIPELINE, ("builds", 0, "id"), "1", "builds[0].id: expected an integer"),
        (PIPELINE, ("builds", 0, "name"), "n" * 256, "builds[0].name: longer than 255"),
        (PIPELINE, ("builds", 0, "status"), "ok", "builds[0].status: expected a GitLab CI status"),
        (JOB, ("project_id",), "101", "project_id: expected an integer"),
        (JOB, ("build_id",), True, "build_id: expected an integer"),
        (JOB, ("pipeline_id",), -1, "pipeline_id: expected an integer >= 1"),
        (JOB, ("retries_count",), -1, "retries_count: expected an integer >= 0"),
        (JOB, ("retries_count",), "2", "retries_count: expected an integer"),
        (JOB, ("build_status",), "done", "build_status: expected a GitLab CI status"),
        (JOB, ("build_stage",), {}, "build_stage: expected a string, got an object"),
        (JOB, ("sha",), SHA[:39], "sha: expected a 40-character hex commit sha"),
        (JOB, ("project",), [], "project: expected an object"),
        (JOB, ("project", "id"), 102, "project.id: differs from project_id"),
        (JOB, ("object_kind",), "pipeline", "object_kind: 'pipeline' does not match X-Gitlab-Event 'Job"),
    ],
)
def test_wrong_field_is_named(header: str, path: tuple, value: object, message: str) -> None:
    payload = _with(pipeline_payload() if header == PIPELINE else job_payload(), path, value)
    with pytest.raises(InvalidEvent) as info:
        parse_event(header, payload)
    assert str(info.value).startswith(message)


def test_a_malformed_later_build_is_not_skipped() -> None:
    payload = pipeline_payload(builds=[("docker-build", "build", "success", 1), ("x", "push", "success", 2)])
    payload["builds"][1]["stage"] = None
    with pytest.raises(InvalidEvent, match=r"^builds\[1\]\.stage: expected a string, got null"):
        parse_event(PIPELINE, payload)


@pytest.mark.parametrize(
    ("header", "payload"),
    [(PIPELINE, job_payload()), (JOB, pipeline_payload()), (PIPELINE, {"object_kind": "push"})],
)
def test_header_and_object_kind_must_agree(header: str, payload: dict) -> None:
    with pytest.raises(InvalidEvent, match=r"^object_kind: .* does not match X-Gitlab-Event"):
        parse_event(header, payload)


@pytest.mark.parametrize("payload", [None, [], "{}", 3, b"{}"])
def test_payload_must_be_an_object(payload: object) -> None:
    with pytest.raises(InvalidEvent, match="^payload: expected an object"):
        parse_event(PIPELINE, payload)


def test_messages_never_echo_large_input() -> None:
    huge = "A" * 100_000
    cases = [
        (PIPELINE, ("object_attributes", "status")),
        (PIPELINE, ("object_attributes", "sha")),
        (JOB, ("object_kind",)),
        (JOB, ("ref",)),
        (JOB, ("build_name",)),
    ]
    for header, path in cases:
        payload = _with(pipeline_payload() if header == PIPELINE else job_payload(), path, huge)
        with pytest.raises(InvalidEvent) as info:
            parse_event(header, payload)
        assert len(str(info.value)) < 200 and "AAAAAAAAAA" not in str(info.value)


@pytest.mark.parametrize(
    "header", ["Merge Request Hook", "Note Hook", "Push Hook", "System Hook", "pipeline hook", "", None]
)
def test_ignored_kinds_return_none(header: str | None) -> None:
    assert parse_event(header, pipeline_payload()) is None
    assert parse_event(header, "not even an object") is None  # ignored before any validation


# --- serialization -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "name"),
    [(PIPELINE, "pipeline_hook.json"), (PIPELINE, "pipeline_hook_mr.json"), (JOB, "job_hook.json")],
)
def test_round_trip_through_json(header: str, name: str) -> None:
    event = parse_event(header, fixture(name))
    data = json.loads(json.dumps(event_to_dict(event)))
    assert data["kind"] == header
    assert event_from_dict(data) == event


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"kind": "Note Hook"},
        {"kind": "Job Hook", "project_id": 1},
        {**event_to_dict(parse_event(JOB, job_payload())), "extra": 1},
        {**event_to_dict(parse_event(PIPELINE, pipeline_payload())), "builds": [{"id": 1}]},
        {**event_to_dict(parse_event(PIPELINE, pipeline_payload())), "builds": ["x"]},
        [],
    ],
)
def test_event_from_dict_rejects_what_is_not_an_event(data: object) -> None:
    with pytest.raises(InvalidEvent):
        event_from_dict(data)


# --- builders ----------------------------------------------------------------------------------


def test_builders_and_headers() -> None:
    branch = parse_event(PIPELINE, pipeline_payload(ref="main", source="push", mr_iid=None, status="failed"))
    assert (branch.mr_iid, branch.failed_or_canceled) == (None, True)
    headers = webhook_headers(JOB, idempotency_key="k-1")
    assert headers["X-Gitlab-Event"] == JOB and headers["Idempotency-Key"] == "k-1"
    assert {"X-Gitlab-Token", "X-Gitlab-Instance", "X-Gitlab-Webhook-UUID", "Content-Type"} <= headers.keys()
    assert "X-Gitlab-Token" not in webhook_headers(token=None)
    assert webhook_headers()["Idempotency-Key"] != webhook_headers()["Idempotency-Key"]


# --- hypothesis: nothing but InvalidEvent escapes ----------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=20), inner, max_size=5),
    max_leaves=30,
)
headers = st.sampled_from([PIPELINE, JOB, "Note Hook", None])


def _parse_or_invalid(header: str | None, payload: object) -> None:
    try:
        event = parse_event(header, payload)
    except InvalidEvent:
        return
    assert event is None or event_from_dict(json.loads(json.dumps(event_to_dict(event)))) == event


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(header=headers, payload=json_values)
def test_arbitrary_json_only_raises_invalid_event(header: str | None, payload: object) -> None:
    _parse_or_invalid(header, payload)


# Paths into valid payloads, so the fuzzing reaches the field checks rather than stopping at object_kind.
PIPELINE_PATHS = [("object_attributes",), ("object_attributes", "id"), ("object_attributes", "sha"),
                  ("object_attributes", "ref"), ("object_attributes", "status"), ("object_attributes", "url"),
                  ("object_attributes", "source"), ("object_attributes", "created_at"), ("project",),
                  ("project", "id"), ("project", "path_with_namespace"), ("merge_request",),
                  ("merge_request", "iid"), ("merge_request", "target_project_id"), ("builds",),
                  ("builds", 0), ("builds", 0, "id"), ("builds", 0, "name"), ("builds", 0, "stage"),
                  ("builds", 0, "status"), ("object_kind",)]  # fmt: skip
JOB_PATHS = [("project_id",), ("pipeline_id",), ("build_id",), ("build_name",), ("build_stage",),
             ("build_status",), ("sha",), ("ref",), ("retries_count",), ("project",),
             ("project", "id"), ("project", "path_with_namespace"), ("object_kind",)]  # fmt: skip


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), value=json_values)
def test_mutated_fixtures_only_raise_invalid_event(data: st.DataObject, value: object) -> None:
    header = data.draw(st.sampled_from([PIPELINE, JOB]))
    paths = PIPELINE_PATHS if header == PIPELINE else JOB_PATHS
    path = data.draw(st.sampled_from(paths))
    payload = pipeline_payload() if header == PIPELINE else job_payload()
    _parse_or_invalid(header, _with(payload, path, value))


def test_a_tag_pipeline_says_so_and_a_job_of_one_too() -> None:
    payload = fixture("pipeline_hook_mr.json")
    payload["object_attributes"]["tag"] = True
    event = parse_event(PIPELINE, payload)
    assert isinstance(event, PipelineEvent) and event.tag
    payload["object_attributes"]["tag"] = "yes"  # only a JSON true is a tag pipeline
    event = parse_event(PIPELINE, payload)
    assert isinstance(event, PipelineEvent) and not event.tag
