"""What the worker refuses to take from a payload: a forged project path or id, a made-up pipeline id."""

from __future__ import annotations

import dataclasses

from bot.adapters.records import PipelinePlan
from bot.core.events import event_to_dict, parse_event
from bot.core.settings import ProjectSettings
from tests import inprocess
from tests.fakes.payloads import job_payload
from tests.harness import PUSH_API, PUSH_APP
from workers import reporting, tasks

base, rt, sent, s = inprocess.base, inprocess.rt, inprocess.sent, inprocess.s


def run(body: dict, **changes: object) -> None:
    """The pipeline_event task, in this process, on what the receiver would queue for `body`."""
    event = parse_event("Pipeline Hook", body)
    assert event is not None
    tasks.pipeline_event(event_to_dict(dataclasses.replace(event, **changes)))


def by_id(rt, project_id: int):
    """The runtime with the project configured by id only (no path glob)."""
    entry = ProjectSettings.model_validate(
        {"id": project_id, "repo_file": False, "images": [{"repository": "app", "push_job": PUSH_APP}]}
    )
    changed = dataclasses.replace(rt, settings=rt.settings.model_copy(update={"projects": (entry,)}))
    inprocess.use(changed)
    return changed


def test_an_id_configured_project_takes_its_path_from_gitlab_not_the_payload(rt, s, sent):
    rt = by_id(rt, s.project_id)
    run(s.pipeline_body(project_path="evil/elsewhere"))
    assert rt.store.gates_for_commit(s.project_id, s.sha) == []  # the payload lied about the path: nothing
    run(s.pipeline_body(), project_path="")  # no path in the event (as old Job Hooks): GitLab's
    (gate,) = rt.store.gates_for_commit(s.project_id, s.sha)
    assert gate.project_path == s.project_path


def test_a_pipeline_gitlab_does_not_have_is_refused_and_cannot_freeze_the_note(rt, s, sent):
    forged = 2**63 - 1
    run(s.pipeline_body(pipeline_id=forged))
    assert rt.store.gates_for_commit(s.project_id, s.sha) == []
    assert rt.store.mr_latest(s.project_id, s.mr_iid) == (0, "")  # it never became the MR's newest pipeline
    run(s.pipeline_body())
    assert rt.store.mr_latest(s.project_id, s.mr_iid) == (s.pipeline_id, s.sha)
    assert {g.repository for g in rt.store.gates_for_commit(s.project_id, s.sha)} == {"app", "api"}


def test_a_rejected_event_leaves_no_phantom_in_the_note(rt, s, sent, fake_gitlab):
    # Another project's id under this project's configured path: refused, so nothing of it reaches a note.
    other = inprocess.Scenario(fake_gitlab, s.ecr, s.deliver)
    run(s.pipeline_body(project_id=other.project_id, project_path=s.project_path))
    run(s.pipeline_body())
    for key in [g.key for g in rt.store.gates_for_commit(s.project_id, s.sha)]:
        rt.store.finish(key, inprocess.failed_verdict_for(rt, key))
    assert reporting.refresh_notes(rt, s.project_id, s.sha, s.pipeline_id, s.mr_iid) is False
    (note,) = [n["body"] for n in s.notes()]
    assert "of 2 images" in note and other.project_path not in note
    assert {PUSH_APP, PUSH_API} == {g.push_job for g in rt.store.gates_for_commit(s.project_id, s.sha)}
    assert rt.store.gates_for_commit(other.project_id, s.sha) == []


def test_a_job_event_while_its_pipeline_event_is_half_done_still_starts_the_gate(rt, s, sent):
    # The pipeline event saved its plan but had not recorded its gates yet when the push job's event ran.
    rt.store.save_plan(PipelinePlan(s.project_id, s.pipeline_id, s.pipeline_id, s.sha, push_jobs=(PUSH_APP, PUSH_API)))
    s.gitlab.set_job_status(s.jobs[PUSH_APP], "success")
    body = job_payload(
        project_id=s.project_id,
        project_path=s.project_path,
        pipeline_id=s.pipeline_id,
        job_id=s.jobs[PUSH_APP],
        sha=s.sha,
        ref=s.branch,
    )
    event = parse_event("Job Hook", body)
    assert event is not None
    tasks.job_event(event_to_dict(event))
    (gate,) = rt.store.gates_for_commit(s.project_id, s.sha)
    assert (gate.repository, gate.state.value) == ("app", "polling")
    assert sent.polls and sent.polls[0][0] == gate.key
