"""End to end (web → Redis → real worker → fake GitLab/ECR): exceptions in a repo file, and the MR commands."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.fakes.ecr import basic_finding
from tests.fakes.payloads import note_payload
from tests.harness import PUSH_API, PUSH_APP, Scenario, wait_for

REPO_FILE = ".gitlab/ecr-scan-gate.toml"
HIGH = basic_finding("CVE-2023-44487", "HIGH", "nghttp2", "1.43.0-1", "1.43.0-1+deb11u1")
TODAY = datetime.now(UTC).date()
DEVELOPER, MAINTAINER, REPORTER = 30, 40, 20
_user_ids = itertools.count(int(datetime.now(UTC).timestamp()) % 100_000 * 10 + 10_000)


def finish(s: Scenario, steps: list[dict[str, Any]] | None, repository: str = "app") -> dict[str, Any]:
    s.push(repository)
    if steps is not None:
        s.script(repository, steps)
    assert s.pipeline_event("running").status_code == 202
    assert s.job_event(PUSH_APP if repository == "app" else PUSH_API).status_code == 202
    return s.wait_status(repository)


def user(s: Scenario, level: int | None, name: str) -> tuple[int, str]:
    """A GitLab user with this role in the scenario's project (None: not a member)."""
    uid = next(_user_ids)
    username = f"{name}{uid}"
    s.gitlab.add_user(uid, username)
    if level is not None:
        s.gitlab.add_member(s.project_id, uid, level)
    return uid, username


def comment(s: Scenario, who: tuple[int, str], text: str) -> int:
    """The comment exists in GitLab and its Note Hook is delivered; returns the note id."""
    note = s.gitlab.add_note(s.project_id, s.mr_iid, text, user_id=who[0])
    body = note_payload(
        project_id=s.project_id,
        project_path=s.project_path,
        mr_iid=s.mr_iid,
        note_id=note["id"],
        body=text,
        author_id=who[0],
        author_username=who[1],
        sha=s.sha,
    )
    assert s.deliver("Note Hook", body, None).status_code == 202
    return int(note["id"])


def awarded(s: Scenario, note_id: int) -> str:
    return wait_for(
        lambda: [a["name"] for a in s.gitlab.awards(s.project_id, s.mr_iid, note_id)][:1], 30, "an award emoji"
    )[0]


def test_a_repo_file_exception_lets_the_finding_pass_and_the_note_says_why(scenario: Scenario) -> None:
    until = TODAY + timedelta(days=30)
    text = f'[[policy.exceptions]]\nid = "CVE-2023-44487"\nreason = "HTTP/2 is off"\nexpires = {until}\nby = "@alice"\n'
    scenario.gitlab.set_file(scenario.project_id, REPO_FILE, text, sha=scenario.sha)
    final = finish(scenario, [{"status": "COMPLETE", "findings": [HIGH]}])
    assert final["status"] == "success"
    note = scenario.wait_note("PASSED", "Accepted risks")
    assert f"| `CVE-2023-44487` | `nghttp2` | HTTP\\/2 is off | `@alice` | {until} |" in note


def test_an_expired_exception_blocks_again_and_says_when_it_ended(scenario: Scenario) -> None:
    ended = TODAY - timedelta(days=1)
    text = f'[[policy.exceptions]]\nid = "CVE-2023-44487"\nreason = "HTTP/2 is off"\nexpires = {ended}\n'
    scenario.gitlab.set_file(scenario.project_id, REPO_FILE, text, sha=scenario.sha)
    final = finish(scenario, [{"status": "COMPLETE", "findings": [HIGH]}])
    assert final["status"] == "failed"
    scenario.wait_note("BLOCKED", f"exception expired on {ended.isoformat().replace('-', chr(92) + '-')}")


def test_recheck_by_a_developer_polls_a_failed_gate_again_a_reporter_is_refused(scenario: Scenario) -> None:
    s = scenario
    first = finish(s, None)  # pushed, but scan on push was off: scan_not_found
    assert first["status"] == "failed" and "no scan found" in first["description"]
    refused = comment(s, user(s, REPORTER, "rita"), "ecr-scan-gate recheck")
    assert awarded(s, refused) == "no_entry_sign"
    s.wait_note("refused\\: recheck needs the Developer role or above")  # the note escapes Markdown
    assert s.status("app")["status"] == "failed"
    s.script("app", [{"status": "IN_PROGRESS"}, {"status": "COMPLETE", "findings": []}])  # scan on push turned on
    allowed = comment(s, user(s, DEVELOPER, "dev"), "ecr-scan-gate recheck")
    assert awarded(s, allowed) == "white_check_mark"
    assert s.wait_status("app", {"success"})["status"] == "success"
    note = s.wait_note("PASSED", "rechecking 1 gate")
    assert f"#note_{allowed}" in note


def test_accept_by_a_maintainer_redecides_a_blocked_gate_the_authors_own_is_refused(scenario: Scenario) -> None:
    s = scenario
    assert finish(s, [{"status": "COMPLETE", "findings": [HIGH]}])["status"] == "failed"
    until = (TODAY + timedelta(days=10)).isoformat()
    line = f"ecr-scan-gate accept CVE-2023-44487 package nghttp2 until {until} because HTTP/2 is off here"
    s.gitlab.add_member(s.project_id, 900, MAINTAINER)  # the MR's author (user 900 in the fake), a Maintainer
    own = comment(s, (900, "mr-author"), line)
    assert awarded(s, own) == "no_entry_sign"
    s.wait_note("refused\\: the merge request's author cannot accept a risk for it")
    hostile = f"ecr-scan-gate accept CVE-2023-44487 until {until} because /merge @all <img src=x> [x](javascript:1)"
    maintainer = user(s, MAINTAINER, "maya")
    good = comment(s, maintainer, line)
    assert awarded(s, good) == "white_check_mark"
    assert s.wait_status("app", {"success"})["status"] == "success"
    note = s.wait_note("PASSED", "Accepted risks", f"`@{maintainer[1]}`")
    assert "Recorded in" in note and f"{s.mr_iid} comment |" in note  # "MR !N" is escaped: no reference link
    comment(s, maintainer, hostile)
    note = s.wait_note("because /merge @all")
    assert not any(line.lstrip().startswith("/") for line in note.splitlines())
    assert "@all" not in note.replace("because /merge @all", "")  # only inside the code span
    assert s.gitlab.quick_actions_triggered() == [] or all(
        q.get("project_id") != s.project_id for q in s.gitlab.quick_actions_triggered()
    )
