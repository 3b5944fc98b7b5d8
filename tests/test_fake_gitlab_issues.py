"""The fake GitLab's project issues and issue notes, driven over HTTP by python-gitlab as the bot drives GitLab."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import gitlab
import pytest
import requests
from gitlab.exceptions import GitlabCreateError, GitlabGetError, GitlabHttpError, GitlabUpdateError

from tests.fakes.gitlab import FakeGitLab, FakeGitLabClient

TOKEN = "test-gitlab-token"  # noqa: S105 - a test value
ALICE_TOKEN = "alice-token"  # noqa: S105
PID = 7
OTHER_PID = 8
BOT, ALICE = 1, 2
GUEST, PLANNER, REPORTER, DEVELOPER = 10, 15, 20, 30
MARKER = "<!-- ecr-scan-gate:cve-issue project=7 repository=app -->"

ISSUE_KEYS = {
    "id",
    "iid",
    "project_id",
    "title",
    "description",
    "state",
    "created_at",
    "updated_at",
    "closed_at",
    "closed_by",
    "labels",
    "milestone",
    "assignees",
    "author",
    "type",
    "assignee",
    "user_notes_count",
    "merge_requests_count",
    "upvotes",
    "downvotes",
    "due_date",
    "confidential",
    "discussion_locked",
    "issue_type",
    "web_url",
    "time_stats",
    "task_completion_status",
    "has_tasks",
    "_links",
    "references",
    "moved_to_id",
    "service_desk_reply_to",
}


@pytest.fixture
def fake() -> Iterator[FakeGitLab]:
    with FakeGitLab(token=TOKEN) as server:
        server.add_group(70, "acme")
        server.add_project(PID, "acme/app", namespace_id=70)
        server.add_project(OTHER_PID, "acme/web", namespace_id=70)
        server.add_user(ALICE, "alice", token=ALICE_TOKEN)
        yield server


@pytest.fixture
def gl(fake: FakeGitLab) -> gitlab.Gitlab:
    return gitlab.Gitlab(fake.url, private_token=TOKEN, timeout=5, keep_base_url=True)


@pytest.fixture
def alice(fake: FakeGitLab) -> gitlab.Gitlab:
    return gitlab.Gitlab(fake.url, private_token=ALICE_TOKEN, timeout=5, keep_base_url=True)


def issues_of(client: gitlab.Gitlab, pid: int = PID) -> object:
    return client.projects.get(pid, lazy=True).issues


def error_of(excinfo: pytest.ExceptionInfo[Exception]) -> tuple[int | None, object]:
    assert isinstance(excinfo.value, gitlab.GitlabError)
    return excinfo.value.response_code, excinfo.value.error_message


def api(fake: FakeGitLab, method: str, path: str, token: str = TOKEN, **kwargs: object) -> requests.Response:
    return requests.request(method, f"{fake.url}/api/v4{path}", headers={"PRIVATE-TOKEN": token}, timeout=5, **kwargs)


# --- creation -----------------------------------------------------------------------------------------


def test_create_answers_201_with_the_issue_and_iids_count_per_project(fake: FakeGitLab, gl: gitlab.Gitlab) -> None:
    first = api(fake, "POST", f"/projects/{PID}/issues", json={"title": "CVEs in app", "labels": "security,cve"})
    assert first.status_code == 201
    issue = first.json()
    assert set(issue) == ISSUE_KEYS | {"subscribed"}
    assert (issue["iid"], issue["project_id"], issue["state"], issue["description"]) == (1, PID, "opened", None)
    assert issue["labels"] == ["cve", "security"]  # created on first use, listed by title
    assert (issue["closed_at"], issue["closed_by"], issue["confidential"], issue["user_notes_count"]) == (
        None,
        None,
        False,
        0,
    )
    assert issue["author"]["id"] == BOT and issue["author"]["username"] == "ecr-scan-gate-bot"
    assert issue["web_url"] == f"{fake.url}/acme/app/-/issues/1"
    assert issue["references"] == {"short": "#1", "relative": "#1", "full": "acme/app#1"}
    assert issue["_links"]["notes"] == f"{fake.url}/api/v4/projects/{PID}/issues/1/notes"
    assert issue["created_at"] == issue["updated_at"] and issue["subscribed"] is True
    second = issues_of(gl).create({"title": "second", "description": "d", "confidential": True})
    elsewhere = issues_of(gl, OTHER_PID).create({"title": "other project"})
    assert (second.iid, second.confidential, elsewhere.iid) == (2, True, 1)
    assert issue["id"] < second.id < elsewhere.id  # ids are global, iids per project
    assert [i["iid"] for i in fake.issues(PID)] == [1, 2] and fake.issue(OTHER_PID, 1)["title"] == "other project"


def test_title_is_required_stripped_and_at_most_255_characters(fake: FakeGitLab, gl: gitlab.Gitlab) -> None:
    missing = api(fake, "POST", f"/projects/{PID}/issues", json={"description": "x"})
    assert (missing.status_code, missing.json()) == (400, {"error": "title is missing"})
    for blank in ("", "   "):
        with pytest.raises(GitlabCreateError) as excinfo:
            issues_of(gl).create({"title": blank})
        assert error_of(excinfo) == (400, {"title": ["can't be blank"]})
    assert issues_of(gl).create({"title": "  padded  "}).title == "padded"
    assert issues_of(gl).create({"title": "x" * 255}).iid == 2
    with pytest.raises(GitlabCreateError) as excinfo:
        issues_of(gl).create({"title": "x" * 256})
    assert error_of(excinfo) == (400, {"title": ["is too long (maximum is 255 characters)"]})
    bad = api(fake, "POST", f"/projects/{PID}/issues", json={"title": "t", "confidential": "maybe"})
    assert (bad.status_code, bad.json()) == (400, {"error": "confidential is invalid"})
    assert len(fake.issues(PID)) == 2


def test_description_is_limited_to_one_megabyte(fake: FakeGitLab, gl: gitlab.Gitlab) -> None:
    assert len(issues_of(gl).create({"title": "t", "description": "x" * 1_048_576}).description) == 1_048_576
    with pytest.raises(GitlabCreateError) as excinfo:
        issues_of(gl).create({"title": "", "description": "x" * 1_048_577})
    assert error_of(excinfo) == (
        400,
        {"title": ["can't be blank"], "description": ["is too long (1 MB). The maximum size is 1 MB."]},
    )
    with pytest.raises(GitlabCreateError) as excinfo:  # counted in bytes (BytesizeValidator), not characters
        issues_of(gl).create({"title": "t", "description": "é" * 600_000})
    assert error_of(excinfo) == (400, {"description": ["is too long (1.14 MB). The maximum size is 1 MB."]})
    issue = issues_of(gl).get(1)
    issue.description = "y" * 2_097_152
    with pytest.raises(GitlabUpdateError) as excinfo:
        issue.save()
    assert error_of(excinfo) == (400, {"description": ["is too long (2 MB). The maximum size is 1 MB."]})
    assert len(fake.issues(PID)) == 1


# --- listing ------------------------------------------------------------------------------------------


def test_list_filters_by_state_labels_iids_confidential_and_author(
    fake: FakeGitLab, gl: gitlab.Gitlab, alice: gitlab.Gitlab
) -> None:
    issues = issues_of(gl)
    issues.create({"title": "a", "labels": ["security", "cve"]})
    issues.create({"title": "b", "labels": "security", "confidential": True})
    issues.create({"title": "c"})
    closed = issues.get(1)
    closed.state_event = "close"
    closed.save()
    fake.add_member(PID, ALICE, DEVELOPER)
    issues_of(alice).create({"title": "d by alice", "labels": "security"})

    def iids(**filters: object) -> list[int]:
        return [i.iid for i in issues.list(get_all=True, **filters)]

    assert iids() == [4, 3, 2, 1]  # created_at desc by default, every state
    assert iids(state="opened") == [4, 3, 2] and iids(state="closed") == [1]
    assert iids(labels=["security", "cve"]) == [1]  # all of them
    assert iids(labels=["security"]) == [4, 2, 1]
    assert iids(labels="None") == [3] and iids(labels="any") == [4, 2, 1]
    assert iids(iids=[1, 3]) == [3, 1]  # iids[]=1&iids[]=3
    assert iids(confidential=True) == [2] and iids(confidential=False) == [4, 3, 1]
    assert iids(author_id=BOT, state="opened") == [3, 2]
    assert iids(scope="created_by_me") == [3, 2, 1]
    assert iids(order_by="created_at", sort="asc") == [1, 2, 3, 4]
    assert iids(order_by="title", sort="asc") == [1, 2, 3, 4]
    assert iids(order_by="updated_at") == [4, 1, 3, 2]  # closing #1 updated it
    bad = api(fake, "GET", f"/projects/{PID}/issues", params={"state": "open", "sort": "up"})
    assert (bad.status_code, bad.json()) == (
        400,
        {"error": "state does not have a valid value, sort does not have a valid value"},
    )


def test_search_is_word_prefix_full_text_in_title_and_description(fake: FakeGitLab, gl: gitlab.Gitlab) -> None:
    issues = issues_of(gl)
    issues.create({"title": "New CVEs in deployed images", "description": f"{MARKER}\n\n| CVE-2024-1234 | openssl |"})
    issues.create({"title": "Scanner report", "description": MARKER.replace("project=7", "project=70")})
    issues.create({"title": "Unrelated", "description": "nothing to see"})

    def iids(search: str, **filters: object) -> list[int]:
        return [i.iid for i in issues.list(get_all=True, search=search, **filters)]

    assert iids("cves") == [1] and iids("CVE-2024-1234") == [1] and iids("openssl") == [1]
    assert iids("scan") == [2, 1]  # "Scanner" and the marker's ecr-scan-gate are both words starting with "scan"
    assert iids("can") == []  # full-text search matches word prefixes, not substrings
    assert iids("deployed images") == [1] and iids('"images deployed"') == []  # a quoted phrase keeps its order
    # The marker as a search term matches project=70 too ("7" is a prefix of "70"): check the text yourself.
    assert iids(MARKER) == [2, 1]
    assert [i.iid for i in issues.list(get_all=True, search=MARKER) if MARKER in (i.description or "")] == [1]
    assert iids("scanner", **{"in": "description"}) == [] and iids("scanner", **{"in": "title"}) == [2]
    assert iids("nothing", state="opened") == [3] and iids("...") == []


def test_lists_are_paginated_with_link_and_total_headers(fake: FakeGitLab, gl: gitlab.Gitlab) -> None:
    for n in range(25):
        issues_of(gl).create({"title": f"issue {n}"})
    response = api(fake, "GET", f"/projects/{PID}/issues", params={"per_page": 10, "page": 3, "state": "opened"})
    assert [i["iid"] for i in response.json()] == [5, 4, 3, 2, 1]
    assert (response.headers["X-Total"], response.headers["X-Total-Pages"], response.headers["X-Page"]) == (
        "25",
        "3",
        "3",
    )
    first = api(fake, "GET", f"/projects/{PID}/issues", params={"state": "opened"})
    assert len(first.json()) == 20 and first.headers["X-Next-Page"] == "2"  # 20 a page by default
    next_url = first.links["next"]["url"]
    assert parse_qs(urlsplit(next_url).query)["state"] == ["opened"]
    everything = issues_of(gl).list(get_all=True, per_page=7, state="opened")
    assert [i.iid for i in everything] == list(range(25, 0, -1))
    assert fake.request_count("GET", rf"/projects/{PID}/issues$") == 2 + 4


# --- edits, state, notes -----------------------------------------------------------------------------


def test_edit_close_and_reopen(fake: FakeGitLab, gl: gitlab.Gitlab) -> None:
    issue = issues_of(gl).create({"title": "CVEs", "description": "old", "labels": "security"})
    created = issue.updated_at
    issue.description = f"{MARKER}\nnew"
    issue.state_event = "close"
    issue.save()
    # python-gitlab's ProjectIssue.closed_by() (the closing MRs) hides the attribute of that name.
    assert (issue.state, issue.description, issue.attributes["closed_by"]["id"]) == ("closed", f"{MARKER}\nnew", BOT)
    assert issue.closed_at is not None and issue.updated_at > created
    assert [i.iid for i in issues_of(gl).list(get_all=True, state="closed")] == [1]
    closed_at = issue.closed_at
    issue.state_event = "close"  # already closed: nothing happens, and that is not an error
    issue.save()
    assert (issue.state, issue.closed_at) == ("closed", closed_at)
    issue.state_event = "reopen"
    issue.save()
    assert (issue.state, issue.closed_at, issue.attributes["closed_by"]) == ("opened", None, None)
    # Only the description change is a note; state changes are resource events, not notes.
    notes = fake.issue_notes(PID, 1)
    assert [(n["body"], n["system"]) for n in notes] == [("changed the description", True)]
    assert issues_of(gl).get(1).user_notes_count == 0


def test_labels_replace_add_and_remove(fake: FakeGitLab, gl: gitlab.Gitlab) -> None:
    issue = issues_of(gl).create({"title": "t", "labels": "a,b"})
    for changes, expected in (
        ({"labels": "c, d"}, ["c", "d"]),
        ({"add_labels": "e", "remove_labels": "c,unknown"}, ["d", "e"]),
        ({"labels": ""}, []),
    ):
        response = api(fake, "PUT", f"/projects/{PID}/issues/1", json=changes)
        assert response.status_code == 200 and response.json()["labels"] == expected
    issue.confidential = True
    issue.save()
    assert fake.issue_notes(PID, 1)[-1]["body"] == "made the issue confidential"
    empty = api(fake, "PUT", f"/projects/{PID}/issues/1", json={})
    assert empty.status_code == 400
    assert empty.json()["error"].endswith("are missing, at least one parameter must be provided")
    bad = api(fake, "PUT", f"/projects/{PID}/issues/1", json={"state_event": "delete"})
    assert bad.json() == {"error": "state_event does not have a valid value"}


def test_issue_notes_are_separate_from_merge_request_notes(fake: FakeGitLab, gl: gitlab.Gitlab) -> None:
    fake.add_merge_request(PID, 1, "feature", "main", "a" * 40)
    issue = issues_of(gl).create({"title": "CVEs"})
    before = issue.updated_at
    note = issue.notes.create({"body": "Fixed: no new CVE in the deployed images."})
    assert (note.noteable_type, note.noteable_iid, note.noteable_id, note.system) == ("Issue", 1, issue.id, False)
    assert note.author["id"] == BOT
    assert [n.body for n in issue.notes.list(get_all=True)] == ["Fixed: no new CVE in the deployed images."]
    assert fake.notes(PID, 1) == [] and gl.projects.get(PID, lazy=True).mergerequests.get(1).notes.list() == []
    fresh = issues_of(gl).get(1)
    assert fresh.user_notes_count == 1 and fresh.updated_at > before  # a note touches its issue
    missing = api(fake, "POST", f"/projects/{PID}/issues/1/notes", json={})
    assert (missing.status_code, missing.json()) == (400, {"error": "body is missing"})
    with pytest.raises(GitlabCreateError) as excinfo:
        issue.notes.create({"body": "x" * 1_000_001})
    assert error_of(excinfo) == (
        400,
        '400 Bad request - Note {:note=>["is too long (maximum is 1000000 characters)"]}',
    )
    assert len(fake.issue_notes(PID, 1)) == 1


def test_quick_actions_and_mentions_are_recorded_not_run(fake: FakeGitLab, gl: gitlab.Gitlab) -> None:
    issue = issues_of(gl).create({"title": "CVEs for @alice", "description": "/close\n`/label ~x` and @bob"})
    issue.notes.create({"body": "/reopen please"})
    assert (issue.state, fake.issue(PID, 1)["quick_actions"]) == ("opened", ["close"])
    assert fake.issue(PID, 1)["mentions"] == ["alice", "bob"]
    assert fake.issue_notes(PID, 1)[0]["quick_actions"] == ["reopen"]
    assert [(t["command"], t["issue_iid"], t["note_id"] is None) for t in fake.quick_actions_triggered()] == [
        ("close", 1, True),
        ("reopen", 1, False),
    ]


def test_missing_issues_and_bad_iids(fake: FakeGitLab, gl: gitlab.Gitlab) -> None:
    with pytest.raises(GitlabGetError) as excinfo:
        issues_of(gl).get(99)
    assert error_of(excinfo) == (404, "404 Not found")
    for method, path, body in (
        ("PUT", f"/projects/{PID}/issues/99", {"title": "x"}),
        ("GET", f"/projects/{PID}/issues/99/notes", None),
        ("POST", f"/projects/{PID}/issues/99/notes", {"body": "x"}),
    ):
        response = api(fake, method, path, json=body)
        assert (response.status_code, response.json()) == (404, {"message": "404 Not found"})
    unknown = api(fake, "GET", "/projects/999/issues")
    assert (unknown.status_code, unknown.json()) == (404, {"message": "404 Project Not Found"})
    bad = api(fake, "GET", f"/projects/{PID}/issues/abc")
    assert (bad.status_code, bad.json()) == (400, {"error": "issue_iid is invalid"})
    issues_of(gl, OTHER_PID).create({"title": "in acme/web"})
    with pytest.raises(GitlabGetError):
        issues_of(gl).get(1)  # an iid belongs to its project
    assert issues_of(gl, "acme/web").get(1).title == "in acme/web"


# --- permissions --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("level", "sees"), [(None, False), (GUEST, False), (PLANNER, True), (REPORTER, True)])
def test_confidential_issues_need_planner_or_reporter(
    fake: FakeGitLab, gl: gitlab.Gitlab, alice: gitlab.Gitlab, level: int | None, sees: bool
) -> None:
    if level is not None:
        fake.add_member(PID, ALICE, level)
    issues_of(gl).create({"title": "public"})
    issues_of(gl).create({"title": "secret", "confidential": True})
    assert [i.title for i in issues_of(alice).list(get_all=True)] == (["secret", "public"] if sees else ["public"])
    note = api(fake, "POST", f"/projects/{PID}/issues/2/notes", token=ALICE_TOKEN, json={"body": "hi"})
    edit = api(fake, "PUT", f"/projects/{PID}/issues/2", token=ALICE_TOKEN, json={"title": "mine"})
    if sees:
        assert (note.status_code, edit.status_code, issues_of(alice).get(2).title) == (201, 200, "mine")
    else:
        with pytest.raises(GitlabGetError) as excinfo:
            issues_of(alice).get(2)
        assert error_of(excinfo) == (404, "404 Not found")
        assert (note.status_code, edit.status_code, edit.json()) == (404, 403, {"message": "403 Forbidden"})


def test_authors_and_assignees_see_their_confidential_issues(
    fake: FakeGitLab, gl: gitlab.Gitlab, alice: gitlab.Gitlab
) -> None:
    mine = issues_of(alice).create({"title": "alice's secret", "confidential": True})
    assert (mine.confidential, issues_of(alice).get(1).title) == (True, "alice's secret")
    issues_of(gl).create({"title": "for alice", "confidential": True, "assignee_ids": [ALICE]})
    assert [i.iid for i in issues_of(alice).list(get_all=True)] == [2, 1]
    assert issues_of(gl).get(1).title == "alice's secret"  # the bot is a Developer here


def test_labels_and_assignees_need_membership(fake: FakeGitLab, gl: gitlab.Gitlab, alice: gitlab.Gitlab) -> None:
    issues_of(gl).create({"title": "makes the label", "labels": "security"})
    outsider = issues_of(alice).create({"title": "t", "labels": "security,new", "assignee_ids": [ALICE]})
    assert (outsider.labels, outsider.assignees) == ([], [])  # dropped silently, as GitLab does
    fake.add_member(PID, ALICE, GUEST)
    guest = issues_of(alice).create({"title": "t", "labels": "security,new", "assignee_ids": [ALICE]})
    assert (guest.labels, [a["id"] for a in guest.assignees]) == (["security"], [ALICE])  # no new label
    guest.labels = ["other"]
    guest.title = "renamed"
    guest.save()  # the author may edit, but a Guest may not change labels afterwards
    assert (guest.title, guest.labels) == ("renamed", ["security"])
    fake.add_member(PID, BOT, GUEST)  # without a membership the bot counts as a Developer; a Guest bot is not one
    bot_issue = issues_of(gl).create({"title": "by a guest bot", "labels": "security,brand-new"})
    bot_issue.labels = []
    bot_issue.save()
    assert bot_issue.labels == ["security"]
    with pytest.raises(GitlabUpdateError) as excinfo:
        bot_issue = issues_of(alice).get(1)
        bot_issue.title = "hijacked"
        bot_issue.save()
    assert error_of(excinfo) == (403, "403 Forbidden")


# --- what is not modelled, faults, control -----------------------------------------------------------


def test_unmodelled_routes_and_parameters_answer_501(fake: FakeGitLab, gl: gitlab.Gitlab) -> None:
    issues_of(gl).create({"title": "t"})
    with pytest.raises(GitlabHttpError) as excinfo:
        gl.http_delete(f"/projects/{PID}/issues/1")
    assert error_of(excinfo) == (
        501,
        f"not implemented by fake GitLab (method): DELETE /api/v4/projects/{PID}/issues/1",
    )
    with pytest.raises(GitlabHttpError) as excinfo:
        gl.http_get(f"/projects/{PID}/issues/1/links")
    assert error_of(excinfo) == (
        501,
        f"not implemented by fake GitLab (route): GET /api/v4/projects/{PID}/issues/1/links",
    )
    with pytest.raises(GitlabCreateError) as excinfo:
        issues_of(gl).create({"title": "t", "milestone_id": 3})
    assert error_of(excinfo) == (501, "not implemented by fake GitLab (parameter): milestone_id")
    assert api(fake, "GET", f"/projects/{PID}/issues", params={"order_by": "priority"}).status_code == 501
    assert api(fake, "GET", f"/projects/{PID}/issues", params={"milestone": "v1"}).status_code == 501


def test_faults_apply_to_issue_routes(fake: FakeGitLab, gl: gitlab.Gitlab) -> None:
    fake.inject_fault("POST", rf"/projects/{PID}/issues$", 500)
    with pytest.raises(GitlabCreateError) as excinfo:
        issues_of(gl).create({"title": "t"})
    assert error_of(excinfo) == (500, "500 Internal Server Error")
    assert fake.issues(PID) == []
    fake.inject_fault("GET", r"/issues$", 502)
    retrying = gitlab.Gitlab(fake.url, private_token=TOKEN, timeout=5, retry_transient_errors=True)
    issues_of(gl).create({"title": "t"})
    assert [i.iid for i in issues_of(retrying).list(get_all=True)] == [1]
    fake.inject_fault("POST", r"/issues/\d+/notes$", None, delay_s=1.0)
    impatient = gitlab.Gitlab(fake.url, private_token=TOKEN, timeout=0.2)
    with pytest.raises(requests.exceptions.Timeout):
        issues_of(impatient).get(1, lazy=True).notes.create({"body": "late"})


def test_issue_control_methods_over_http(fake: FakeGitLab, gl: gitlab.Gitlab) -> None:
    issue = issues_of(gl).create({"title": "t", "description": MARKER})
    issue.notes.create({"body": "hello"})
    control = FakeGitLabClient(fake.url)
    (listed,) = control.issues(project_id=PID)
    assert (listed["iid"], listed["description"], listed["quick_actions"]) == (1, MARKER, [])
    assert control.issue(project_id=PID, iid=1)["user_notes_count"] == 1
    assert [n["body"] for n in control.issue_notes(project_id=PID, iid=1)] == ["hello"]


def test_the_bots_one_issue_flow(fake: FakeGitLab, gl: gitlab.Gitlab) -> None:
    """Find by marker (or create), update in place, close with a comment when fixed, reopen when needed."""
    issues = issues_of(gl)

    def find() -> object | None:
        candidates = issues.list(get_all=True, search=MARKER, labels=["security"], confidential=True)
        mine = [i for i in candidates if MARKER in (i.description or "") and i.author["id"] == BOT]
        return mine[0] if mine else None

    assert find() is None
    issues.create(
        {"title": "New CVEs: app", "description": f"{MARKER}\nCVE-1", "labels": "security", "confidential": True}
    )
    issue = find()
    assert issue is not None
    issue.description = f"{MARKER}\nCVE-1\nCVE-2"
    issue.save()
    issue.notes.create({"body": "All fixed."})
    issue.state_event = "close"
    issue.save()
    assert find().state == "closed"
    issue.state_event = "reopen"
    issue.save()
    assert [(i["iid"], i["state"]) for i in fake.issues(PID)] == [(1, "opened")]
    assert [n["body"] for n in fake.issue_notes(PID, 1)] == ["changed the description", "All fixed."]
