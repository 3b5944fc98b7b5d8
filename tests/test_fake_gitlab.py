"""The fake GitLab answers python-gitlab over HTTP the way GitLab does, rule by rule."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import gitlab
import pytest
import requests
from gitlab.exceptions import (
    GitlabAuthenticationError,
    GitlabCreateError,
    GitlabGetError,
    GitlabHeadError,
    GitlabHttpError,
    GitlabUpdateError,
)

from tests.fakes.gitlab import FakeGitLab, FakeGitLabClient
from tests.fakes.gitlab_state import ApiError, mentions, quick_actions
from tests.fakes.payloads import fixture, note_payload, webhook_headers

TOKEN = "test-gitlab-token"  # noqa: S105 - a test value
OTHER_TOKEN = "other-user-token"  # noqa: S105
SHA = "a" * 40
SHA2 = "b" * 40
PID = 7
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def fake() -> Iterator[FakeGitLab]:
    with FakeGitLab(token=TOKEN) as server:
        server.add_group(70, "acme")
        server.add_project(PID, "acme/app", namespace_id=70)
        server.add_user(2, "alice", token=OTHER_TOKEN)
        yield server


@pytest.fixture
def gl(fake: FakeGitLab) -> gitlab.Gitlab:
    return gitlab.Gitlab(fake.url, private_token=TOKEN, timeout=5, keep_base_url=True)


def post_status(gl: gitlab.Gitlab, sha: str = SHA, **data: object) -> dict:
    """POST a status the way the bot does and return GitLab's answer."""
    return gl.projects.get(PID, lazy=True).commits.get(sha, lazy=True).statuses.create(data).attributes


def error_of(excinfo: pytest.ExceptionInfo[Exception]) -> tuple[int | None, object]:
    assert isinstance(excinfo.value, gitlab.GitlabError)
    return excinfo.value.response_code, excinfo.value.error_message


def add_mr_pipeline(
    fake: FakeGitLab, pipeline_id: int = 100, iid: int = 5, sha: str = SHA, status: str = "running"
) -> None:
    fake.add_merge_request(PID, iid, "feature", "main", sha)
    fake.add_pipeline(
        PID,
        pipeline_id,
        sha,
        source="merge_request_event",
        merge_request_iid=iid,
        status=status,
        jobs=[
            {"id": 11, "name": "build", "stage": "build", "status": "success"},
            {"id": 12, "name": "push-image", "stage": "push", "status": status},
        ],
    )


# --- authentication and simple reads ------------------------------------------------------------------


def test_token_is_required_and_identifies_the_bot(fake: FakeGitLab, gl: gitlab.Gitlab) -> None:
    gl.auth()
    assert gl.user is not None and gl.user.username == "ecr-scan-gate-bot" and gl.user.id == 1
    token = gl.http_get("/personal_access_tokens/self")
    assert token["scopes"] == ["api"] and token["active"] is True

    bad = gitlab.Gitlab(fake.url, private_token="wrong", timeout=5)
    with pytest.raises(GitlabAuthenticationError) as excinfo:
        bad.auth()
    assert error_of(excinfo) == (401, "401 Unauthorized")
    assert requests.get(f"{fake.url}/api/v4/user", timeout=5).json() == {"message": "401 Unauthorized"}


def test_token_scopes_are_configurable(fake: FakeGitLab, gl: gitlab.Gitlab) -> None:
    fake.set_token_scopes(["read_api"])
    assert gl.http_get("/personal_access_tokens/self")["scopes"] == ["read_api"]


def test_projects_and_groups_by_id_or_encoded_path(fake: FakeGitLab, gl: gitlab.Gitlab) -> None:
    assert gl.projects.get(PID).path_with_namespace == "acme/app"
    assert gl.projects.get("acme/app").id == PID  # python-gitlab sends acme%2Fapp
    assert gl.groups.get("acme").id == 70
    with pytest.raises(GitlabGetError) as excinfo:
        gl.projects.get(999)
    assert error_of(excinfo) == (404, "404 Project Not Found")
    with pytest.raises(GitlabGetError) as excinfo:
        gl.groups.get(999)
    assert error_of(excinfo) == (404, "404 Group Not Found")


def test_hooks_are_listed_without_their_secret(fake: FakeGitLab, gl: gitlab.Gitlab) -> None:
    fake.add_hook("https://bot.example/webhook", group_id=70, token="s3cret")
    fake.add_hook("https://other.example/hook", project_id=PID, pipeline_events=False)
    (group_hook,) = gl.groups.get(70, lazy=True).hooks.list(get_all=True)
    assert group_hook.url == "https://bot.example/webhook" and group_hook.pipeline_events is True
    assert "token" not in group_hook.attributes
    (project_hook,) = gl.projects.get(PID, lazy=True).hooks.list(get_all=True)
    assert project_hook.pipeline_events is False and project_hook.job_events is True


# --- commit statuses ----------------------------------------------------------------------------------


def test_status_updates_in_place_while_pending_or_running(fake: FakeGitLab, gl: gitlab.Gitlab) -> None:
    add_mr_pipeline(fake)
    first = post_status(gl, state="pending", name="ecr-scan-gate/app", pipeline_id=100, description="waiting")
    assert first["status"] == "pending" and first["pipeline_id"] == 100
    assert first["ref"] == "refs/merge-requests/5/head"  # taken from the pipeline when no ref is sent
    assert first["author"]["username"] == "ecr-scan-gate-bot"
    running = post_status(gl, state="running", name="ecr-scan-gate/app", pipeline_id=100)
    done = post_status(gl, state="success", name="ecr-scan-gate/app", pipeline_id=100, target_url="https://r.example")
    assert first["id"] == running["id"] == done["id"]
    assert done["description"] == "waiting" and done["target_url"] == "https://r.example"
    assert [s["status"] for s in fake.statuses(PID, SHA)] == ["success"]


@pytest.mark.parametrize(
    ("before", "again", "message"),
    [
        (
            "pending",
            "pending",
            'Cannot transition status via :enqueue from :pending (Reason(s): Status cannot transition via "enqueue")',
        ),
        (
            "running",
            "running",
            'Cannot transition status via :run from :running (Reason(s): Status cannot transition via "run")',
        ),
        (
            "running",
            "pending",
            'Cannot transition status via :enqueue from :running (Reason(s): Status cannot transition via "enqueue")',
        ),
        (
            "running",
            "skipped",
            'Cannot transition status via :skip from :running (Reason(s): Status cannot transition via "skip")',
        ),
    ],
)
def test_refused_transitions_keep_the_status(
    fake: FakeGitLab, gl: gitlab.Gitlab, before: str, again: str, message: str
) -> None:
    add_mr_pipeline(fake)
    post_status(gl, state=before, name="gate", pipeline_id=100, description="first")
    with pytest.raises(GitlabCreateError) as excinfo:
        post_status(gl, state=again, name="gate", pipeline_id=100, description="second")
    assert error_of(excinfo) == (400, message)
    assert str(excinfo.value.error_message).startswith("Cannot transition status via")
    (only,) = fake.statuses(PID, SHA)
    assert (only["status"], only["description"]) == (before, "first")


def test_a_finished_status_is_superseded_by_a_new_job(fake: FakeGitLab, gl: gitlab.Gitlab) -> None:
    add_mr_pipeline(fake)
    old = post_status(gl, state="failed", name="gate", pipeline_id=100)
    new = post_status(gl, state="pending", name="gate", pipeline_id=100)
    assert new["id"] > old["id"]
    assert [(s["status"], s["retried"]) for s in fake.statuses(PID, SHA)] == [("failed", True), ("pending", False)]
    assert fake.latest_statuses(PID, SHA)["gate"]["id"] == new["id"]
    commit = gl.projects.get(PID, lazy=True).commits.get(SHA, lazy=True)
    visible = commit.statuses.list(get_all=True, name="gate")
    assert [s.id for s in visible] == [new["id"]]
    everything = commit.statuses.list(get_all=True, query_parameters={"all": True, "name": "gate"})
    assert [s.id for s in everything] == [old["id"], new["id"]]


def test_state_must_be_one_of_six(fake: FakeGitLab, gl: gitlab.Gitlab) -> None:
    add_mr_pipeline(fake)
    with pytest.raises(GitlabCreateError) as excinfo:
        post_status(gl, state="error", pipeline_id=100)
    assert error_of(excinfo) == (400, "state does not have a valid value")
    assert post_status(gl, state="skipped", pipeline_id=100)["name"] == "default"


@pytest.mark.parametrize("field", ["name", "description", "target_url", "ref"])
def test_status_fields_are_limited_to_255_characters(fake: FakeGitLab, gl: gitlab.Gitlab, field: str) -> None:
    fake.add_pipeline(PID, 100, SHA, ref="x" * 255)
    post_status(gl, state="pending", **{field: "x" * 255})
    with pytest.raises(GitlabCreateError) as excinfo:
        post_status(gl, state="pending", **{field: "x" * 256})
    assert error_of(excinfo) == (400, f"{field} must be less than 255 characters")


def test_pipeline_id_must_match_project_sha_and_ref(fake: FakeGitLab, gl: gitlab.Gitlab) -> None:
    add_mr_pipeline(fake)
    fake.add_pipeline(PID, 200, SHA2, ref="main")
    for data in ({"pipeline_id": 999}, {"pipeline_id": 200}, {"pipeline_id": 100, "ref": "feature"}):
        with pytest.raises(GitlabCreateError) as excinfo:
            post_status(gl, state="pending", name="gate", **data)
        assert error_of(excinfo) == (404, "404 Pipeline for pipeline_id, sha and ref Not Found")
    assert fake.statuses(PID, SHA) == [] and len(fake.pipelines()) == 2


def test_branch_ref_on_a_detached_mr_pipeline_creates_a_stray_external_pipeline(
    fake: FakeGitLab, gl: gitlab.Gitlab
) -> None:
    add_mr_pipeline(fake)
    assert fake.merge_request(PID, 5)["head_pipeline"]["id"] == 100
    stray = post_status(gl, state="pending", name="gate", ref="feature")
    (external,) = fake.pipelines(source="external")
    assert stray["pipeline_id"] == external["id"] != 100
    assert (external["ref"], external["sha"]) == ("feature", SHA)
    # ...and that stray pipeline now stands in for the MR's head pipeline, which the gate never touched.
    assert gl.projects.get(PID, lazy=True).mergerequests.get(5).head_pipeline["id"] == external["id"]


def test_without_pipeline_id_the_newest_pipeline_of_the_sha_is_used(fake: FakeGitLab, gl: gitlab.Gitlab) -> None:
    fake.add_pipeline(PID, 100, SHA, ref="main", status="success")
    fake.add_pipeline(PID, 101, SHA, ref="main", status="running")
    assert post_status(gl, state="pending")["pipeline_id"] == 101
    assert post_status(gl, state="pending", name="n2", pipeline_id=100)["pipeline_id"] == 100
    assert fake.pipelines(source="external") == []


def test_a_sha_without_pipeline_gets_an_external_pipeline_and_an_unknown_sha_404s(
    fake: FakeGitLab, gl: gitlab.Gitlab
) -> None:
    fake.add_commit(PID, SHA2, branches=["main"])
    created = post_status(gl, SHA2, state="success")
    assert fake.pipelines(source="external")[0]["id"] == created["pipeline_id"]
    assert created["ref"] == "main"
    with pytest.raises(GitlabCreateError) as excinfo:
        post_status(gl, "c" * 40, state="success")
    assert error_of(excinfo) == (404, "404 Commit Not Found")


def test_a_status_may_not_take_a_ci_job_name(fake: FakeGitLab, gl: gitlab.Gitlab) -> None:
    add_mr_pipeline(fake)
    with pytest.raises(GitlabCreateError) as excinfo:
        post_status(gl, state="pending", name="push-image", pipeline_id=100)
    assert error_of(excinfo) == (400, {"name": ["has already been taken"]})


def test_a_conflict_on_the_sha_lock_is_a_409(fake: FakeGitLab, gl: gitlab.Gitlab) -> None:
    add_mr_pipeline(fake)
    fake.inject_fault("POST", r"/statuses/", 409)
    with pytest.raises(GitlabCreateError) as excinfo:
        post_status(gl, state="pending", pipeline_id=100)
    assert error_of(excinfo) == (409, "Another update to this commit status is in progress")
    assert post_status(gl, state="pending", pipeline_id=100)["status"] == "pending"


def test_external_statuses_drive_the_pipeline_status(fake: FakeGitLab, gl: gitlab.Gitlab) -> None:
    add_mr_pipeline(fake, status="running")
    post_status(gl, state="pending", name="gate", pipeline_id=100)
    fake.set_job_status(12, "success")
    pipeline = gl.projects.get(PID, lazy=True).pipelines.get(100)
    assert pipeline.status == "running"  # every CI job is done, but the gate is still pending
    post_status(gl, state="failed", name="gate", pipeline_id=100)
    assert gl.projects.get(PID, lazy=True).pipelines.get(100).status == "failed"
    post_status(gl, state="pending", name="gate", pipeline_id=100)
    post_status(gl, state="success", name="gate", pipeline_id=100)
    assert gl.projects.get(PID, lazy=True).pipelines.get(100).status == "success"


def test_status_list_includes_ci_jobs_and_filters(fake: FakeGitLab, gl: gitlab.Gitlab) -> None:
    add_mr_pipeline(fake)
    post_status(gl, state="pending", name="gate", pipeline_id=100)
    commit = gl.projects.get(PID, lazy=True).commits.get(SHA, lazy=True)
    assert sorted(s.name for s in commit.statuses.list(get_all=True)) == ["build", "gate", "push-image"]
    assert [s.name for s in commit.statuses.list(get_all=True, stage="external")] == ["gate"]
    assert commit.statuses.list(get_all=True, ref="main") == []


def test_concurrent_status_posts_are_all_recorded(fake: FakeGitLab, gl: gitlab.Gitlab) -> None:
    add_mr_pipeline(fake)
    threads = [
        threading.Thread(
            target=post_status, args=(gl,), kwargs={"state": "pending", "name": f"g{i}", "pipeline_id": 100}
        )
        for i in range(20)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(fake.latest_statuses(PID, SHA)) == 20
    assert len({s["id"] for s in fake.statuses(PID, SHA)}) == 20


# --- merge requests, pipelines, jobs ------------------------------------------------------------------


def test_merge_requests_of_a_commit(fake: FakeGitLab, gl: gitlab.Gitlab) -> None:
    add_mr_pipeline(fake)
    fake.set_mr_head(PID, 5, SHA2)
    fake.add_project(8, "acme/other")
    fake.add_merge_request(8, 1, "feature", "main", SHA)
    commit = gl.projects.get(PID, lazy=True).commits.get(SHA, lazy=True)
    (mr,) = commit.merge_requests()
    assert (mr["iid"], mr["project_id"], mr["sha"]) == (5, PID, SHA2)  # an older commit of the MR still finds it
    mr = gl.projects.get(PID, lazy=True).mergerequests.get(5)
    assert (mr.state, mr.source_branch, mr.target_branch, mr.head_pipeline) == ("opened", "feature", "main", None)
    assert mr.web_url == f"{fake.url}/acme/app/-/merge_requests/5"
    with pytest.raises(GitlabGetError):
        gl.projects.get(PID, lazy=True).mergerequests.get(99)


def test_jobs_and_pipelines(fake: FakeGitLab, gl: gitlab.Gitlab) -> None:
    add_mr_pipeline(fake)
    fake.add_job(100, 13, "push-image", stage="push", status="pending")  # a retry of job 12
    project = gl.projects.get(PID, lazy=True)
    assert project.jobs.get(12).status == "running"
    pipeline = project.pipelines.get(100)
    assert (pipeline.ref, pipeline.source, pipeline.sha) == ("refs/merge-requests/5/head", "merge_request_event", SHA)
    assert sorted(j.id for j in pipeline.jobs.list(get_all=True)) == [11, 13]
    assert sorted(j.id for j in pipeline.jobs.list(get_all=True, include_retried=True)) == [11, 12, 13]
    fake.add_project(8, "acme/other")
    with pytest.raises(GitlabGetError) as excinfo:
        gl.projects.get(8, lazy=True).pipelines.get(100)
    assert excinfo.value.response_code == 404


# --- notes --------------------------------------------------------------------------------------------


def test_note_create_list_get_and_edit(fake: FakeGitLab, gl: gitlab.Gitlab) -> None:
    add_mr_pipeline(fake)
    mr = gl.projects.get(PID, lazy=True).mergerequests.get(5, lazy=True)
    fake.add_note(PID, 5, "first, by alice", user_id=2)
    note = mr.notes.create({"body": "<!-- ecr-scan-gate -->\nreport v1"})
    assert (note.author["username"], note.system, note.noteable_iid) == ("ecr-scan-gate-bot", False, 5)
    assert [n.id for n in mr.notes.list(get_all=True)] == [note.id, note.id - 1]  # newest first by default
    assert [n.id for n in mr.notes.list(get_all=True, sort="asc")] == [note.id - 1, note.id]
    note.body = "<!-- ecr-scan-gate -->\nreport v2"
    note.save()
    assert mr.notes.get(note.id).body.endswith("report v2")
    assert [n["body"] for n in fake.notes(PID, 5)] == ["first, by alice", "<!-- ecr-scan-gate -->\nreport v2"]


def test_only_the_author_may_edit_a_note(fake: FakeGitLab, gl: gitlab.Gitlab) -> None:
    add_mr_pipeline(fake)
    theirs = fake.add_note(PID, 5, "alice's note", user_id=2)
    note = gl.projects.get(PID, lazy=True).mergerequests.get(5, lazy=True).notes.get(theirs["id"])
    note.body = "overwritten"
    with pytest.raises(GitlabUpdateError) as excinfo:
        note.save()
    assert error_of(excinfo) == (403, "403 Forbidden")
    assert fake.notes(PID, 5)[0]["body"] == "alice's note"


def test_note_body_is_required_and_at_most_a_million_characters(fake: FakeGitLab, gl: gitlab.Gitlab) -> None:
    add_mr_pipeline(fake)
    notes = gl.projects.get(PID, lazy=True).mergerequests.get(5, lazy=True).notes
    assert len(notes.create({"body": "x" * 1_000_000}).body) == 1_000_000
    with pytest.raises(GitlabCreateError) as excinfo:
        notes.create({"body": "x" * 1_000_001})
    assert error_of(excinfo) == (400, '400 Bad request - Note {:note=>["is too long (maximum is 1000000 characters)"]}')
    with pytest.raises(GitlabCreateError) as excinfo:
        notes.create({"body": "   "})
    assert excinfo.value.response_code == 400
    with pytest.raises(GitlabHttpError) as excinfo:
        gl.http_post(f"/projects/{PID}/merge_requests/5/notes", post_data={})
    assert error_of(excinfo) == (400, "body is missing")


def test_note_creation_is_rate_limited_per_user(fake: FakeGitLab, gl: gitlab.Gitlab) -> None:
    add_mr_pipeline(fake)
    fake.configure(note_rate_limit=3, note_rate_window_s=30)
    notes = gl.projects.get(PID, lazy=True).mergerequests.get(5, lazy=True).notes
    for i in range(3):
        notes.create({"body": f"note {i}"})
    response = requests.post(
        f"{fake.url}/api/v4/projects/{PID}/merge_requests/5/notes",
        json={"body": "4th"},
        headers={"PRIVATE-TOKEN": TOKEN},
        timeout=5,
    )
    assert response.status_code == 429
    assert 1 <= int(response.headers["Retry-After"]) <= 30
    assert response.json() == {
        "message": {"error": "This endpoint has been requested too many times. Try again later."}
    }
    with pytest.raises(GitlabCreateError) as excinfo:
        notes.create({"body": "5th"}, obey_rate_limit=False)
    assert excinfo.value.response_code == 429
    # Another user has a budget of their own, and edits are not creations.
    other = gitlab.Gitlab(fake.url, private_token=OTHER_TOKEN, timeout=5)
    assert other.projects.get(PID, lazy=True).mergerequests.get(5, lazy=True).notes.create({"body": "hi"}).id


def test_python_gitlab_obeys_the_retry_after(fake: FakeGitLab, gl: gitlab.Gitlab) -> None:
    add_mr_pipeline(fake)
    fake.configure(note_rate_limit=1, note_rate_window_s=1)
    notes = gl.projects.get(PID, lazy=True).mergerequests.get(5, lazy=True).notes
    notes.create({"body": "one"})
    started = time.monotonic()
    notes.create({"body": "two"})  # python-gitlab sleeps Retry-After (1 s) inside the call, then retries
    assert time.monotonic() - started >= 0.9
    assert fake.request_count("POST", r"/notes$", status=429) == 1


def test_get_all_follows_the_link_header_across_pages(fake: FakeGitLab, gl: gitlab.Gitlab) -> None:
    add_mr_pipeline(fake)
    for i in range(205):
        fake.add_note(PID, 5, f"note {i}")
    notes = gl.projects.get(PID, lazy=True).mergerequests.get(5, lazy=True).notes
    assert len(notes.list(get_all=True, per_page=100)) == 205
    assert fake.request_count("GET", r"/notes$") == 3
    assert len(notes.list(get_all=True)) == 205  # default per_page 20: 11 pages
    assert len(notes.list(get_all=False)) == 20

    response = requests.get(
        f"{fake.url}/api/v4/projects/{PID}/merge_requests/5/notes",
        params={"per_page": 500, "page": 2, "sort": "asc"},
        headers={"PRIVATE-TOKEN": TOKEN},
        timeout=5,
    )
    headers = response.headers
    assert (headers["X-Page"], headers["X-Per-Page"], headers["X-Total"], headers["X-Total-Pages"]) == (
        "2",
        "100",
        "205",
        "3",
    )
    assert (headers["X-Next-Page"], headers["X-Prev-Page"]) == ("3", "1")
    next_query = parse_qs(urlsplit(response.links["next"]["url"]).query)
    assert next_query == {"page": ["3"], "per_page": ["100"], "sort": ["asc"]}
    assert [n["body"] for n in response.json()][:1] == ["note 100"]


def test_quick_actions_and_mentions_are_recorded_not_run(fake: FakeGitLab, gl: gitlab.Gitlab) -> None:
    add_mr_pipeline(fake)
    body = (
        "<!-- ecr-scan-gate -->\n/merge\n/approve now\n  /close\nsee `/assign @carol` and ping @alice\n"
        "```\n/close\n@dave\n```\nmail bob@example.com\n/usr/lib/x is a path"
    )
    note = gl.projects.get(PID, lazy=True).mergerequests.get(5, lazy=True).notes.create({"body": body})
    (recorded,) = fake.notes(PID, 5)
    assert recorded["quick_actions"] == ["merge", "approve"]
    assert recorded["mentions"] == ["alice"]
    assert [q["command"] for q in fake.quick_actions_triggered()] == ["merge", "approve"]
    assert fake.merge_request(PID, 5)["state"] == "opened"  # recorded only
    note.body = "clean"
    note.save()
    assert fake.notes(PID, 5)[0]["quick_actions"] == [] and fake.notes(PID, 5)[0]["mentions"] == []


@pytest.mark.parametrize(
    ("body", "commands", "names"),
    [
        ("/label ~bug", ["label"], []),
        ("text\n/Merge\n", ["merge"], []),
        ("`/close`", [], []),
        ("`\n/close\n`", [], []),  # inline code spanning lines, as GitLab's extractor reads it
        ("```\n/close\n```", [], []),
        (">>>\n/close\n>>>", [], []),
        ("<details>\n/close\n</details>", [], []),
        ("a /close in the middle", [], []),
        ("@all and @group/sub", [], ["all", "group"]),
        ("``@x`` and `@y`\n~~~\n@z\n~~~", [], []),
        ("x@y.z and \\@w", [], ["w"]),
    ],
)
def test_markdown_scanning(body: str, commands: list[str], names: list[str]) -> None:
    assert quick_actions(body) == commands
    assert mentions(body) == names


def test_system_notes_are_listed_but_cannot_be_edited(fake: FakeGitLab, gl: gitlab.Gitlab) -> None:
    add_mr_pipeline(fake)
    system = fake.add_note(PID, 5, "added 1 commit\n\n/merge", user_id=1, system=True)
    human = fake.add_note(PID, 5, "please look", user_id=2)
    assert (system["system"], system["author"]["id"], human["system"]) == (True, 1, False)
    notes = gl.projects.get(PID, lazy=True).mergerequests.get(5, lazy=True).notes
    listed = {n.id: (n.system, n.author["id"], n.author["username"]) for n in notes.list(get_all=True)}
    assert listed == {system["id"]: (True, 1, "ecr-scan-gate-bot"), human["id"]: (False, 2, "alice")}
    note = notes.get(system["id"])  # authored by the bot, yet a system note is never editable
    note.body = "rewritten"
    with pytest.raises(GitlabUpdateError) as excinfo:
        note.save()
    assert error_of(excinfo) == (403, "403 Forbidden")
    assert fake.notes(PID, 5)[0]["quick_actions"] == [] and fake.quick_actions_triggered() == []
    with pytest.raises(ApiError) as raised:
        fake.add_note(PID, 5, "by nobody", user_id=77)
    assert (raised.value.status, raised.value.body) == (404, {"message": "404 User Not Found"})


# --- members ------------------------------------------------------------------------------------------


def test_direct_and_inherited_membership(fake: FakeGitLab, gl: gitlab.Gitlab) -> None:
    fake.add_group(71, "acme/platform")
    fake.add_project(PID + 1, "acme/platform/payments-api", namespace_id=71)
    fake.add_user(3, "carol")
    fake.add_member(PID + 1, 2, 30)  # alice: Developer on the project...
    fake.add_group_member(70, 2, 40)  # ...and Maintainer of the top group: the higher level wins
    fake.add_group_member(71, 3, 20)
    project = gl.projects.get(PID + 1, lazy=True)
    alice = project.members_all.get(2)
    assert {k: alice.attributes[k] for k in ("id", "username", "state", "access_level", "expires_at")} == {
        "id": 2,
        "username": "alice",
        "state": "active",
        "access_level": 40,
        "expires_at": None,
    }
    assert alice.web_url == f"{fake.url}/alice" and "created_at" in alice.attributes
    assert project.members.get(2).access_level == 30  # the direct membership alone
    assert project.members_all.get(3).access_level == 20  # from the subgroup
    assert gl.projects.get(PID, lazy=True).members_all.get(2).access_level == 40  # a sibling project of acme
    assert sorted((m.id, m.access_level) for m in project.members_all.list(get_all=True)) == [(2, 40), (3, 20)]
    assert [m.id for m in project.members.list(get_all=True)] == [2]
    fake.add_member(PID + 1, 2, 10)  # again: the level changes
    assert project.members.get(2).access_level == 10 and project.members_all.get(2).access_level == 40


def test_non_members_and_unknown_users_are_404_not_found(fake: FakeGitLab, gl: gitlab.Gitlab) -> None:
    fake.add_group_member(70, 2, 30)
    project = gl.projects.get(PID, lazy=True)
    for user_id in (1, 999):  # the bot is no member until a test makes it one; 999 is nobody
        with pytest.raises(GitlabGetError) as excinfo:
            project.members_all.get(user_id)
        assert error_of(excinfo) == (404, "404 Not found")
    with pytest.raises(GitlabGetError) as excinfo:
        project.members.get(2)  # inherited only
    assert error_of(excinfo) == (404, "404 Not found")
    fake.add_member(PID, 1, 40)
    assert project.members.get(1).username == "ecr-scan-gate-bot"
    assert api_get(fake, f"/projects/{PID}/members/all/abc").json() == {"error": "user_id is invalid"}
    assert api_get(fake, "/projects/999/members/all/1").json() == {"message": "404 Project Not Found"}
    with pytest.raises(ValueError, match="access_level must be one of"):
        fake.add_member(PID, 2, 45)
    with pytest.raises(ApiError):
        fake.add_member(PID, 999, 30)
    control = FakeGitLabClient(fake.url)
    assert control.add_group_member(group_id=70, user_id=1, access_level=50)["access_level"] == 50
    assert project.members_all.get(1).access_level == 50  # the highest level, the group's Owner


# --- merge request authors ----------------------------------------------------------------------------


def test_merge_requests_have_an_author(fake: FakeGitLab, gl: gitlab.Gitlab) -> None:
    fake.add_merge_request(PID, 1, "feature", "main", SHA)
    fake.add_merge_request(PID, 2, "other", "main", SHA2, author_id=2)
    project = gl.projects.get(PID, lazy=True)
    default = project.mergerequests.get(1).author
    assert (default["id"], default["username"], default["bot"]) == (900, "mr-author", False)
    assert project.mergerequests.get(2).author["username"] == "alice"
    (listed,) = project.commits.get(SHA2, lazy=True).merge_requests()
    assert listed["author"]["id"] == 2
    with pytest.raises(ApiError) as excinfo:
        fake.add_merge_request(PID, 3, "x", "main", SHA, author_id=77)
    assert excinfo.value.status == 404
    # The default author is made on demand; a test may still create user 900 itself.
    fake.add_user(900, "dana", token="dana-token")  # noqa: S106 - a test value
    assert project.mergerequests.get(1).author["username"] == "dana"


# --- award emoji on notes -----------------------------------------------------------------------------


def test_award_emoji_on_a_note(fake: FakeGitLab, gl: gitlab.Gitlab) -> None:
    add_mr_pipeline(fake)
    theirs = fake.add_note(PID, 5, "@ecr-scan-gate-bot recheck", user_id=2)
    note = gl.projects.get(PID, lazy=True).mergerequests.get(5, lazy=True).notes.get(theirs["id"])
    award = note.awardemojis.create({"name": "white_check_mark"})
    fields = ("id", "name", "awardable_id", "awardable_type", "url")
    assert {k: award.attributes[k] for k in fields} == {
        "id": award.id,
        "name": "white_check_mark",
        "awardable_id": theirs["id"],  # the note's id
        "awardable_type": "Note",
        "url": None,  # only set for a custom emoji
    }
    assert set(fake.awards(PID, 5, theirs["id"])[0]) == {*fields, "user", "created_at", "updated_at"}
    assert (award.user["id"], award.user["username"]) == (1, "ecr-scan-gate-bot")
    assert fake.request_count("POST", rf"/notes/{theirs['id']}/award_emoji$", status=201) == 1
    note.awardemojis.create({"name": "+1"})  # an alias, stored under its name
    other = gitlab.Gitlab(fake.url, private_token=OTHER_TOKEN, timeout=5)
    other_note = other.projects.get(PID, lazy=True).mergerequests.get(5, lazy=True).notes.get(theirs["id"], lazy=True)
    other_note.awardemojis.create({"name": "white_check_mark"})  # the same emoji by another user
    listed = [(a.name, a.user["id"]) for a in note.awardemojis.list(get_all=True)]
    assert listed == [("white_check_mark", 1), ("thumbsup", 1), ("white_check_mark", 2)]
    assert note.awardemojis.get(award.id).name == "white_check_mark"
    assert [(a["name"], a["user"]["username"]) for a in fake.awards(PID, 5, theirs["id"])] == [
        ("white_check_mark", "ecr-scan-gate-bot"),
        ("thumbsup", "ecr-scan-gate-bot"),
        ("white_check_mark", "alice"),
    ]
    assert FakeGitLabClient(fake.url).awards(project_id=PID, iid=5, note_id=theirs["id"])[0]["id"] == award.id


def test_award_emoji_errors_are_404s(fake: FakeGitLab, gl: gitlab.Gitlab) -> None:
    add_mr_pipeline(fake)
    fake.add_merge_request(PID, 6, "f6", "main", SHA2)
    theirs = fake.add_note(PID, 5, "hello", user_id=2)
    elsewhere = fake.add_note(PID, 6, "on another MR", user_id=2)
    system = fake.add_note(PID, 5, "changed the description", system=True)
    mr = gl.projects.get(PID, lazy=True).mergerequests.get(5, lazy=True)
    awards = mr.notes.get(theirs["id"], lazy=True).awardemojis
    awards.create({"name": "no_entry_sign"})
    cases = [
        (awards, "no_entry_sign", "404 Award Emoji Name has already been taken Not Found"),
        (awards, "Not An Emoji", "404 Award Emoji Name is not a valid emoji name Not Found"),
        (awards, "", "404 Award Emoji Name can't be blank and Name is not a valid emoji name Not Found"),
        (
            mr.notes.get(system["id"], lazy=True).awardemojis,
            "x",
            "404 Award Emoji Awardable cannot be awarded emoji Not Found",
        ),
        (mr.notes.get(elsewhere["id"], lazy=True).awardemojis, "x", "404 Not found"),  # a note of MR !6
        (mr.notes.get(99999, lazy=True).awardemojis, "x", "404 Not found"),
        (
            gl.projects.get(PID, lazy=True).mergerequests.get(99, lazy=True).notes.get(1, lazy=True).awardemojis,
            "x",
            "404 Not found",
        ),
    ]
    for manager, name, message in cases:
        with pytest.raises(GitlabCreateError) as excinfo:
            manager.create({"name": name})
        assert error_of(excinfo) == (404, message)
    with pytest.raises(GitlabGetError) as excinfo:
        awards.get(424242)
    assert error_of(excinfo) == (404, "404 Not found")
    with pytest.raises(GitlabHttpError) as excinfo:
        gl.http_post(f"/projects/{PID}/merge_requests/5/notes/{theirs['id']}/award_emoji", post_data={})
    assert error_of(excinfo) == (400, "name is missing")
    with pytest.raises(ApiError):
        fake.awards(PID, 5, 99999)
    assert [a["name"] for a in fake.awards(PID, 5, theirs["id"])] == ["no_entry_sign"]


# --- Note Hook payloads -------------------------------------------------------------------------------

# doc/user/project/integrations/webhook_events.md, "Comment on a merge request".
DOC_NOTE_KEYS = set("object_kind event_type user project_id project repository object_attributes merge_request".split())
DOC_NOTE_ATTRS = set(
    (
        "id note noteable_type author_id created_at updated_at project_id attachment line_code commit_id "
        "noteable_id system st_diff action url"
    ).split()
)
DOC_NOTE_MR_KEYS = set(
    (
        "id target_branch source_branch source_project_id author_id assignee_id title created_at updated_at "
        "milestone_id state merge_status target_project_id iid description position labels source target "
        "last_commit work_in_progress draft assignee detailed_merge_status"
    ).split()
)
DOC_HOOK_PROJECT_KEYS = set(
    (
        "id name description web_url avatar_url git_ssh_url git_http_url namespace visibility_level "
        "path_with_namespace default_branch homepage url ssh_url http_url"
    ).split()
)


def test_note_fixture_and_payload_keep_the_documented_shape() -> None:
    for payload in (fixture("note_hook_mr.json"), note_payload(), note_payload(action="update", system=True)):
        assert DOC_NOTE_KEYS <= payload.keys()
        assert DOC_NOTE_ATTRS <= payload["object_attributes"].keys()
        assert DOC_NOTE_MR_KEYS <= payload["merge_request"].keys()
        assert DOC_HOOK_PROJECT_KEYS <= payload["project"].keys()
        assert DOC_HOOK_PROJECT_KEYS - {"id"} <= payload["merge_request"]["target"].keys()
        assert {"id", "name", "username"} <= payload["user"].keys()
    assert note_payload() == fixture("note_hook_mr.json")  # the defaults are the fixture


def test_note_payload_builds_the_scenario() -> None:
    payload = note_payload(
        project_id=202,
        project_path="acme/web/shop",
        mr_iid=8,
        note_id=777,
        body="/approve-scan",
        author_id=3,
        author_username="carol",
        mr_source_branch="fix/cve",
        mr_target_branch="release",
        sha=SHA,
        mr_author_id=2,
    )
    assert (payload["object_kind"], payload["event_type"], payload["project_id"]) == ("note", "note", 202)
    attrs = payload["object_attributes"]
    assert (attrs["id"], attrs["note"], attrs["noteable_type"], attrs["author_id"]) == (
        777,
        "/approve-scan",
        "MergeRequest",
        3,
    )
    assert (attrs["system"], attrs["action"], attrs["project_id"], attrs["noteable_id"]) == (False, "create", 202, 5512)
    assert attrs["url"] == "https://gitlab.example.com/acme/web/shop/-/merge_requests/8#note_777"
    assert {k: payload["user"][k] for k in ("id", "username", "name")} == {
        "id": 3,
        "username": "carol",
        "name": "carol",
    }
    mr = payload["merge_request"]
    assert (mr["iid"], mr["source_branch"], mr["target_branch"], mr["author_id"]) == (8, "fix/cve", "release", 2)
    assert (mr["source_project_id"], mr["target_project_id"], mr["state"]) == (202, 202, "opened")
    assert mr["last_commit"]["id"] == SHA and mr["target"]["path_with_namespace"] == "acme/web/shop"
    assert payload["project"]["path_with_namespace"] == "acme/web/shop"
    assert payload["repository"]["homepage"] == "https://gitlab.example.com/acme/web/shop"
    edited = note_payload(action="update", system=True, internal=True)
    assert (edited["object_attributes"]["action"], edited["object_attributes"]["system"]) == ("update", True)
    assert (edited["event_type"], edited["object_attributes"]["internal"]) == ("confidential_note", True)
    assert edited["object_attributes"]["updated_at"] > edited["object_attributes"]["created_at"]
    assert note_payload()["user"]["name"] == "Sam Maintainer"
    with pytest.raises(ValueError, match="action must be one of"):
        note_payload(action="delete")
    assert webhook_headers("Note Hook")["X-Gitlab-Event"] == "Note Hook"


# --- repository files ---------------------------------------------------------------------------------

CONFIG_PATH = ".gitlab/ecr-scan-gate.toml"
CONFIG_TOML = '[gate]\nmode = "enforce"\n# ünïcode survives\n'


def git_blob_id(data: bytes) -> str:
    """What `git hash-object` prints for a file with this content."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def api_get(fake: FakeGitLab, path: str, **params: str) -> requests.Response:
    return requests.get(f"{fake.url}/api/v4{path}", params=params, headers={"PRIVATE-TOKEN": TOKEN}, timeout=5)


def test_a_file_is_read_at_a_commit(fake: FakeGitLab, gl: gitlab.Gitlab) -> None:
    fake.set_file(PID, CONFIG_PATH, CONFIG_TOML, sha=SHA)
    data = CONFIG_TOML.encode()
    f = gl.projects.get(PID, lazy=True).files.get(file_path=CONFIG_PATH, ref=SHA)
    assert f.decode() == data
    assert {k: v for k, v in f.attributes.items() if k not in ("content", "project_id")} == {
        "file_name": "ecr-scan-gate.toml",
        "file_path": CONFIG_PATH,
        "size": len(data),
        "encoding": "base64",
        "content_sha256": hashlib.sha256(data).hexdigest(),
        "ref": SHA,
        "blob_id": git_blob_id(data),
        "commit_id": SHA,
        "last_commit_id": SHA,
        "execute_filemode": False,
    }
    assert base64.b64decode(f.content) == data
    # python-gitlab sends the path as one segment; the log keeps it encoded, so counts match on that.
    assert fake.request_count("GET", r"/repository/files/\.gitlab%2Fecr-scan-gate\.toml$", status=200) == 1
    assert fake.pipelines() == []  # set_file(sha=...) registers the commit, nothing else
    assert fake.set_file(PID, "README.md", "hi", sha=SHA)["blob_id"] == git_blob_id(b"hi")


def test_head_gives_the_blob_headers_without_a_body(fake: FakeGitLab, gl: gitlab.Gitlab) -> None:
    fake.add_commit(PID, SHA, branches=["main"])
    fake.set_file(PID, CONFIG_PATH, CONFIG_TOML, branch="main")
    data = CONFIG_TOML.encode()
    headers = gl.projects.get(PID, lazy=True).files.head(CONFIG_PATH, ref="main")
    assert {k: v for k, v in headers.items() if k.startswith("X-Gitlab-")} == {
        "X-Gitlab-File-Name": "ecr-scan-gate.toml",
        "X-Gitlab-File-Path": CONFIG_PATH,
        "X-Gitlab-Size": str(len(data)),
        "X-Gitlab-Encoding": "base64",
        "X-Gitlab-Content-Sha256": hashlib.sha256(data).hexdigest(),
        "X-Gitlab-Ref": "main",
        "X-Gitlab-Blob-Id": git_blob_id(data),
        "X-Gitlab-Commit-Id": SHA,
        "X-Gitlab-Last-Commit-Id": SHA,
        "X-Gitlab-Execute-Filemode": "false",
    }
    git = subprocess.run(["git", "hash-object", "--stdin"], input=data, capture_output=True, check=False)
    if git.returncode == 0:  # the real thing, where git is installed
        assert headers["X-Gitlab-Blob-Id"] == git.stdout.decode().strip()
    response = requests.head(
        f"{fake.url}/api/v4/projects/{PID}/repository/files/.gitlab%2Fecr-scan-gate.toml",
        params={"ref": SHA},
        headers={"PRIVATE-TOKEN": TOKEN},
        timeout=5,
    )
    assert (response.status_code, response.content, response.headers["Content-Length"]) == (200, b"", "0")
    # GET sends the same headers along with the JSON.
    got = api_get(fake, f"/projects/{PID}/repository/files/.gitlab%2Fecr-scan-gate.toml", ref=SHA)
    assert got.headers["X-Gitlab-Blob-Id"] == git_blob_id(data) and got.json()["blob_id"] == git_blob_id(data)
    assert fake.request_count("HEAD", r"/repository/files/") == 2


def test_raw_returns_the_bytes_and_defaults_to_the_default_branch(fake: FakeGitLab, gl: gitlab.Gitlab) -> None:
    fake.add_commit(PID, SHA, branches=["main"])
    fake.set_file(PID, CONFIG_PATH, CONFIG_TOML, sha=SHA)
    fake.set_file(PID, CONFIG_PATH, "old = true\n", sha=SHA2)
    files = gl.projects.get(PID, lazy=True).files
    assert files.raw(CONFIG_PATH, ref=SHA2) == b"old = true\n"
    assert files.raw(CONFIG_PATH) == CONFIG_TOML.encode()  # no ref: the head of main
    response = api_get(fake, f"/projects/{PID}/repository/files/.gitlab%2Fecr-scan-gate.toml/raw")
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert response.headers["X-Gitlab-Commit-Id"] == SHA and response.headers["X-Gitlab-Ref"] == ""
    assert response.headers["X-Gitlab-Blob-Id"] == git_blob_id(CONFIG_TOML.encode())
    fake.set_file(PID, "logo.png", b"\x89PNG\r\n\x1a\n\0\xff", sha=SHA)
    binary = api_get(fake, f"/projects/{PID}/repository/files/logo.png/raw", ref=SHA)
    assert (binary.content, binary.headers["Content-Type"]) == (b"\x89PNG\r\n\x1a\n\0\xff", "application/octet-stream")
    assert fake.request_count("GET", r"/repository/files/[^/]+/raw$") == 4


def test_a_missing_file_a_file_of_another_commit_and_an_unknown_ref_are_404(
    fake: FakeGitLab, gl: gitlab.Gitlab
) -> None:
    fake.set_file(PID, CONFIG_PATH, CONFIG_TOML, sha=SHA)
    fake.add_commit(PID, SHA2)
    files = gl.projects.get(PID, lazy=True).files
    for path, ref in ((CONFIG_PATH, SHA2), ("nope.toml", SHA)):  # files do not carry over between commits
        with pytest.raises(GitlabGetError) as excinfo:
            files.get(file_path=path, ref=ref)
        assert error_of(excinfo) == (404, "404 File Not Found")
    with pytest.raises(GitlabGetError) as excinfo:
        files.get(file_path=CONFIG_PATH, ref="c" * 40)
    assert error_of(excinfo) == (404, "404 Commit Not Found")  # lib/api/files.rb assign_file_vars!
    with pytest.raises(GitlabGetError) as excinfo:
        files.raw(CONFIG_PATH)  # main has no head: "HEAD of the project" does not exist
    assert error_of(excinfo) == (404, "404 Commit Not Found")
    with pytest.raises(GitlabHeadError) as excinfo:
        files.head(CONFIG_PATH, ref=SHA2)
    assert excinfo.value.response_code == 404
    with pytest.raises(GitlabGetError) as excinfo:
        gl.projects.get(999, lazy=True).files.get(file_path=CONFIG_PATH, ref=SHA)
    assert error_of(excinfo) == (404, "404 Project Not Found")
    fake.delete_file(PID, CONFIG_PATH, SHA)
    with pytest.raises(GitlabGetError):
        files.get(file_path=CONFIG_PATH, ref=SHA)


def test_ref_is_required_and_the_path_is_checked_before_the_lookup(fake: FakeGitLab) -> None:
    fake.set_file(PID, CONFIG_PATH, CONFIG_TOML, sha=SHA)
    encoded = ".gitlab%2Fecr-scan-gate.toml"
    for params in ({}, {"ref": ""}):
        response = api_get(fake, f"/projects/{PID}/repository/files/{encoded}", **params)
        assert (response.status_code, response.json()) == (400, {"error": "ref is missing"})
    missing_project = api_get(fake, f"/projects/999/repository/files/{encoded}")
    assert (missing_project.status_code, missing_project.json()) == (400, {"error": "ref is missing"})
    traversal = api_get(fake, f"/projects/{PID}/repository/files/%2e%2e%2fetc%2fpasswd")
    assert traversal.json() == {"error": "file_path should be a valid file path, ref is missing"}
    absolute = api_get(fake, f"/projects/{PID}/repository/files/%2F{encoded}", ref=SHA)
    assert (absolute.status_code, absolute.json()) == (400, {"error": "file_path should be a valid file path"})
    # The raw route allows a leading separator.
    assert api_get(fake, f"/projects/{PID}/repository/files/%2F{encoded}/raw", ref=SHA).text == CONFIG_TOML
    head_raw = requests.head(f"{fake.url}/api/v4/projects/{PID}/repository/files/{encoded}/raw", timeout=5)
    assert head_raw.status_code == 401
    head_raw = requests.head(
        f"{fake.url}/api/v4/projects/{PID}/repository/files/{encoded}/raw", headers={"PRIVATE-TOKEN": TOKEN}, timeout=5
    )
    assert head_raw.status_code == 501  # GitLab has no HEAD .../raw route; the fake says so


def test_a_branch_ref_follows_the_branch_head(fake: FakeGitLab, gl: gitlab.Gitlab) -> None:
    files = gl.projects.get(PID, lazy=True).files
    with pytest.raises(ValueError, match="has no head commit"):
        fake.set_file(PID, CONFIG_PATH, "x", branch="main")
    fake.add_commit(PID, SHA, branches=["main"])
    fake.set_file(PID, CONFIG_PATH, CONFIG_TOML, branch="main")  # stored at SHA
    assert files.get(file_path=CONFIG_PATH, ref="main").commit_id == SHA
    assert files.get(file_path=CONFIG_PATH, ref="refs/heads/main").commit_id == SHA
    fake.add_pipeline(PID, 100, SHA2, ref="main")  # a pipeline for a branch runs at its new head
    with pytest.raises(GitlabGetError) as excinfo:
        files.get(file_path=CONFIG_PATH, ref="main")
    assert error_of(excinfo) == (404, "404 File Not Found")
    fake.add_pipeline(PID, 101, SHA, ref="refs/merge-requests/1/head", source="merge_request_event")
    with pytest.raises(GitlabGetError):  # a merge request ref moves no branch
        files.get(file_path=CONFIG_PATH, ref="main")
    fake.set_branch_head(PID, "main", SHA)
    assert files.get(file_path=CONFIG_PATH, ref="main").commit_id == SHA
    with pytest.raises(GitlabGetError) as excinfo:
        files.get(file_path=CONFIG_PATH, ref="no-such-branch")
    assert error_of(excinfo) == (404, "404 Commit Not Found")
    with pytest.raises(ValueError, match="exactly one of sha, branch"):
        fake.set_file(PID, CONFIG_PATH, "x")


def test_reads_need_an_api_read_api_or_read_repository_scope(fake: FakeGitLab, gl: gitlab.Gitlab) -> None:
    fake.add_commit(PID, SHA, branches=["main"])
    fake.set_file(PID, CONFIG_PATH, CONFIG_TOML, sha=SHA)
    fake.set_ci_config(PID, ["build"], sha=SHA)
    project = gl.projects.get(PID, lazy=True)
    fake.set_token_scopes(["read_user"])
    with pytest.raises(GitlabGetError) as excinfo:
        project.files.get(file_path=CONFIG_PATH, ref=SHA)
    assert excinfo.value.response_code == 403
    assert api_get(fake, f"/projects/{PID}/repository/files/{CONFIG_PATH.replace('/', '%2F')}", ref=SHA).json() == {
        "error": "insufficient_scope",
        "error_description": "The request requires higher privileges than provided by the access token.",
        "scope": "read_repository ai_workflows api read_api",
    }
    fake.set_token_scopes(["read_repository"])
    assert project.files.raw(CONFIG_PATH, ref=SHA) == CONFIG_TOML.encode()
    with pytest.raises(GitlabGetError) as excinfo:
        project.ci_lint.get()
    assert excinfo.value.response_code == 403
    fake.set_token_scopes(["read_api"])
    assert project.ci_lint.get().valid is True


# --- CI lint ------------------------------------------------------------------------------------------


def test_ci_lint_lists_the_jobs_of_a_commit(fake: FakeGitLab, gl: gitlab.Gitlab) -> None:
    fake.add_commit(PID, SHA, branches=["main"])
    fake.set_ci_config(
        PID,
        [
            {"name": "push-image", "stage": "push", "when": "manual"},
            "docker-build",
            {"name": "unit-tests", "stage": "test", "needs": ["docker-build"], "tags": ["docker"]},
        ],
        sha=SHA2,
        stages=["build", "test", "push"],
    )
    project = gl.projects.get(PID, lazy=True)
    lint = project.ci_lint.get(content_ref=SHA2, include_jobs=True)
    assert (lint.valid, lint.errors, lint.warnings, lint.includes) == (True, [], [], [])
    assert [(j["name"], j["stage"]) for j in lint.jobs] == [
        ("docker-build", "test"),
        ("unit-tests", "test"),
        ("push-image", "push"),
    ]
    assert lint.jobs[2] == {
        "name": "push-image",
        "stage": "push",
        "before_script": [],
        "script": ["echo push-image"],
        "after_script": [],
        "tag_list": [],
        "only": {"refs": ["branches", "tags"]},
        "except": None,
        "environment": None,
        "when": "manual",
        "allow_failure": True,  # the default of a manual job
        "needs": None,
    }
    assert lint.jobs[1]["needs"] == [{"name": "docker-build", "artifacts": True, "optional": False}]
    assert lint.jobs[1]["tag_list"] == ["docker"] and lint.jobs[0]["allow_failure"] is False
    assert lint.merged_yaml.startswith("---\nstages:\n- build\n- test\n- push\npush-image:\n  stage: push\n")
    assert "docker-build:\n  stage: test\n  script:\n  - echo docker-build\n" in lint.merged_yaml
    assert "jobs" not in project.ci_lint.get(content_ref=SHA2).attributes  # only with include_jobs
    assert fake.request_count("GET", rf"/projects/{PID}/ci/lint$") == 2


def test_ci_lint_defaults_to_the_default_branch_head(fake: FakeGitLab, gl: gitlab.Gitlab) -> None:
    fake.add_commit(PID, SHA, branches=["main"])
    fake.add_commit(PID, SHA2, branches=["feature"])
    fake.set_ci_config(PID, ["on-main"], branch="main")
    fake.set_ci_config(PID, [{"name": "on-feature", "stage": "build"}], sha=SHA2)
    ci_lint = gl.projects.get(PID, lazy=True).ci_lint
    assert [j["name"] for j in ci_lint.get(include_jobs=True).jobs] == ["on-main"]
    assert [j["name"] for j in ci_lint.get(content_ref="feature", include_jobs=True).jobs] == ["on-feature"]
    assert [j["name"] for j in ci_lint.get(sha=SHA2, include_jobs=True).jobs] == ["on-feature"]  # deprecated name
    fake.set_branch_head(PID, "main", SHA2)
    assert [j["name"] for j in ci_lint.get(include_jobs=True).jobs] == ["on-feature"]


def test_ci_lint_without_a_config_unknown_refs_and_invalid_configs(fake: FakeGitLab, gl: gitlab.Gitlab) -> None:
    ci_lint = gl.projects.get(PID, lazy=True).ci_lint
    with pytest.raises(GitlabGetError) as excinfo:
        ci_lint.get()
    assert error_of(excinfo) == (404, "404 Repository Not Found")  # no commit at all: an empty repository
    fake.add_commit(PID, SHA, branches=["main"])
    missing = ci_lint.get(include_jobs=True)
    assert missing.attributes | {"project_id": None} == {
        "project_id": None,
        "valid": False,
        "errors": ["Please provide content of .gitlab-ci.yml"],
        "warnings": [],
        "merged_yaml": None,
        "includes": None,
        "jobs": [],
    }
    with pytest.raises(GitlabGetError) as excinfo:
        ci_lint.get(content_ref="c" * 40)
    assert error_of(excinfo) == (404, "404 Commit Not Found")  # lib/api/lint.rb: not_found! 'Commit'
    fake.set_ci_config(PID, ["build"], sha=SHA, valid=False)
    invalid = ci_lint.get(include_jobs=True)
    assert (invalid.valid, invalid.jobs) == (False, [])  # no jobs unless the config is valid
    assert invalid.errors == ["jobs config should contain at least one visible job"]
    assert invalid.merged_yaml == "---\nbuild:\n  stage: test\n  script:\n  - echo build\n"
    fake.set_ci_config(PID, [{"name": "push", "stage": "push"}], sha=SHA)
    assert ci_lint.get().errors == [
        "push job: chosen stage push does not exist; available stages are .pre, build, test, deploy, .post"
    ]
    with pytest.raises(ValueError, match="when must be one of"):
        fake.set_ci_config(PID, [{"name": "x", "when": "sometimes"}], sha=SHA)


def test_ci_lint_params_and_dry_run(fake: FakeGitLab, gl: gitlab.Gitlab) -> None:
    fake.add_commit(PID, SHA, branches=["main"])
    fake.set_ci_config(PID, [{"name": "deploy", "stage": "deploy", "environment": "prod"}], sha=SHA)
    bad = api_get(fake, f"/projects/{PID}/ci/lint", include_jobs="maybe", sha=SHA, content_ref=SHA)
    assert (bad.status_code, bad.json()) == (
        400,
        {"error": "sha, content_ref are mutually exclusive, include_jobs is invalid"},
    )
    ci_lint = gl.projects.get(PID, lazy=True).ci_lint
    (job,) = ci_lint.get(dry_run=True, include_jobs=True).jobs
    assert "only" not in job and "needs" not in job  # a simulated pipeline's jobs (dry_run_convert_to_jobs)
    assert (job["name"], job["environment"], job["when"]) == ("deploy", "prod", "on_success")
    unknown = ci_lint.get(dry_run=True, dry_run_ref="no-such-branch", include_jobs=True)
    assert (unknown.valid, unknown.errors, unknown.jobs) == (False, ["Reference not found"], [])
    fake.add_commit(PID, SHA2, branches=["empty"])
    assert ci_lint.get(dry_run=True, content_ref=SHA2, ref="empty").errors == ["Missing CI config file"]
    assert ci_lint.get(dry_run="0", content_ref=SHA2).errors == ["Please provide content of .gitlab-ci.yml"]


def test_repository_control_methods_over_http(fake: FakeGitLab, gl: gitlab.Gitlab) -> None:
    control = FakeGitLabClient(fake.url)
    control.set_branch_head(project_id=PID, branch="main", sha=SHA)
    stored = control.set_file(project_id=PID, path=CONFIG_PATH, content=CONFIG_TOML, branch="main")
    assert stored == {
        "file_path": CONFIG_PATH,
        "commit_id": SHA,
        "blob_id": git_blob_id(CONFIG_TOML.encode()),
        "size": len(CONFIG_TOML.encode()),
    }
    project = gl.projects.get(PID, lazy=True)
    assert project.files.get(file_path=CONFIG_PATH, ref="main").decode() == CONFIG_TOML.encode()
    lint = control.set_ci_config(project_id=PID, jobs=["build", {"name": "scan", "stage": "deploy"}], branch="main")
    assert lint == {"commit_id": SHA, "valid": True, "jobs": ["build", "scan"]}
    assert [j["name"] for j in project.ci_lint.get(include_jobs=True).jobs] == ["build", "scan"]
    control.delete_file(project_id=PID, path=CONFIG_PATH, sha=SHA)
    with pytest.raises(GitlabGetError):
        project.files.get(file_path=CONFIG_PATH, ref=SHA)
    with pytest.raises(ApiError) as excinfo:
        control.delete_file(project_id=PID, path=CONFIG_PATH, sha=SHA)
    assert (excinfo.value.status, excinfo.value.body) == (404, {"message": "404 File Not Found"})
    with pytest.raises(ApiError) as excinfo:
        control.set_file(project_id=PID, path=CONFIG_PATH, content="x", branch="nope")
    assert excinfo.value.status == 400 and "has no head commit" in excinfo.value.body["message"]
    count = requests.get(
        f"{fake.url}/_fake/request_count", params={"method": "GET", "path_regex": "/repository/files/"}, timeout=5
    )
    assert count.json() == 2


# --- failure modes ------------------------------------------------------------------------------------


def test_unknown_routes_and_methods_answer_501(fake: FakeGitLab, gl: gitlab.Gitlab) -> None:
    with pytest.raises(GitlabHttpError) as excinfo:
        gl.http_get(f"/projects/{PID}/wikis")
    assert excinfo.value.response_code == 501
    assert excinfo.value.error_message == f"not implemented by fake GitLab (route): GET /api/v4/projects/{PID}/wikis"
    with pytest.raises(GitlabHttpError) as excinfo:
        gl.http_delete(f"/projects/{PID}/merge_requests/5/notes/1")
    assert excinfo.value.response_code == 501


def test_faults_are_injected_for_the_next_matching_requests(fake: FakeGitLab, gl: gitlab.Gitlab) -> None:
    fake.inject_fault("GET", r"^/api/v4/projects/\d+$", 502, times=2)
    for _ in range(2):
        with pytest.raises(GitlabGetError) as excinfo:
            gl.projects.get(PID)
        assert error_of(excinfo) == (502, "502 Bad Gateway")
    assert gl.projects.get(PID).id == PID
    fake.inject_fault("*", r"/projects/", 500, body={"message": "500 Internal Server Error"})
    retrying = gitlab.Gitlab(fake.url, private_token=TOKEN, timeout=5, retry_transient_errors=True)
    assert retrying.projects.get(PID).id == PID
    assert [r["status"] for r in fake.requests("GET", rf"/projects/{PID}$")] == [502, 502, 200, 500, 200]


def test_a_429_fault_carries_retry_after(fake: FakeGitLab) -> None:
    fake.inject_fault("GET", "/user", 429, retry_after=7)
    response = requests.get(f"{fake.url}/api/v4/user", headers={"PRIVATE-TOKEN": TOKEN}, timeout=5)
    assert (response.status_code, response.headers["Retry-After"]) == (429, "7")
    assert requests.get(f"{fake.url}/api/v4/user", headers={"PRIVATE-TOKEN": TOKEN}, timeout=5).ok


def test_a_delay_fault_makes_the_client_time_out(fake: FakeGitLab) -> None:
    fake.inject_fault("GET", "/user", None, delay_s=1.0)
    impatient = gitlab.Gitlab(fake.url, private_token=TOKEN, timeout=0.2)
    with pytest.raises(requests.exceptions.Timeout):
        impatient.auth()


def test_reset_forgets_everything_but_the_bot(fake: FakeGitLab, gl: gitlab.Gitlab) -> None:
    add_mr_pipeline(fake)
    fake.reset()
    assert fake.pipelines() == [] and fake.requests() == []
    gl.auth()
    with pytest.raises(GitlabGetError):
        gl.projects.get(PID)


# --- control over HTTP --------------------------------------------------------------------------------


def test_the_control_api_over_http(fake: FakeGitLab, gl: gitlab.Gitlab) -> None:
    control = FakeGitLabClient(fake.url)
    assert control.info()["bot_user"]["username"] == "ecr-scan-gate-bot"
    control.add_merge_request(project_id=PID, iid=3, source_branch="f", target_branch="main", sha=SHA)
    control.add_pipeline(
        project_id=PID,
        pipeline_id=300,
        sha=SHA,
        source="merge_request_event",
        merge_request_iid=3,
        jobs=[{"id": 31, "name": "push", "stage": "push", "status": "running"}],
    )
    post_status(gl, state="pending", name="gate", pipeline_id=300)
    assert control.latest_statuses(project_id=PID, sha=SHA)["gate"]["status"] == "pending"
    control.inject_fault(method="POST", path_regex="/notes", status=500)
    with pytest.raises(GitlabCreateError):
        gl.projects.get(PID, lazy=True).mergerequests.get(3, lazy=True).notes.create({"body": "x"})
    count = requests.get(f"{fake.url}/_fake/request_count", params={"method": "POST", "status": 500}, timeout=5)
    assert count.json() == 1
    with pytest.raises(ApiError) as excinfo:
        control.add_project(project_id=PID, path_with_namespace="dup/licate")
    assert excinfo.value.status == 400 and "already exists" in excinfo.value.body["message"]
    assert requests.post(f"{fake.url}/_fake/nope", json={}, timeout=5).status_code == 404
    with pytest.raises(AttributeError):
        control.not_a_method  # noqa: B018


def test_standalone_server_prints_its_url() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.gitlab", "--port", "0", "--token", "T"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        assert requests.get(f"{url}/api/v4/user", headers={"PRIVATE-TOKEN": "T"}, timeout=5).json()["id"] == 1
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_group_projects_with_and_without_subgroups(fake: FakeGitLab, gl: gitlab.Gitlab) -> None:
    fake.add_group(71, "acme/team")
    fake.add_project(PID + 1, "acme/team/web", namespace_id=71)
    fake.add_project(PID + 2, "other/x")
    group = gl.groups.get(70, lazy=True)
    own = [p.path_with_namespace for p in group.projects.list(get_all=True)]
    deep = [p.path_with_namespace for p in group.projects.list(get_all=True, include_subgroups="true")]
    assert own == ["acme/app"]
    assert sorted(deep) == ["acme/app", "acme/team/web"]
