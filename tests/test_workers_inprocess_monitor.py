"""[monitor]'s issue upkeep in the pytest process, on real Redis and the fake GitLab: never two issues."""

from __future__ import annotations

import time

import pytest
import requests

from bot.core.errors import TransientError
from bot.core.models import Finding, Image, Reason, Severity, Verdict
from bot.core.monitor import Watched, after_rescan
from tests import inprocess
from tests.harness import wait_for
from workers import monitor

base, rt, s = inprocess.base, inprocess.rt, inprocess.s
NEW = Finding("CVE-2026-0002", Severity.CRITICAL, package="openssl", fixed_version="3.0.9")


def alerting(rt, s, digest: str = "sha256:" + "ab" * 32) -> Watched:
    fresh = Watched(s.project_id, s.project_path, Image("app", digest=digest), s.pipeline_id, "main", time.time())
    rt.store.watch(fresh, keep=3, oldest=0)
    blocked = Verdict(Reason.BLOCKED, "blocked", blocking=(NEW,), blocking_total=1)
    done = after_rescan(fresh, blocked, time.time()).watched
    rt.store.save_watched(done)
    return done


def test_a_lost_redis_finds_the_issue_again_by_its_marker(rt, s):
    alerting(rt, s)
    assert monitor._sync_issue(s.project_id, "app") == "opened"
    rt.store.r.delete(rt.store._k(f"monitor:issue:{s.project_id}:app"))  # what a Redis without AOF loses
    assert monitor._sync_issue(s.project_id, "app") == "unchanged"
    assert len(s.gitlab.issues(s.project_id)) == 1


def test_an_issue_post_that_timed_out_but_landed_is_not_posted_again(rt, s):
    alerting(rt, s)
    timeout = rt.settings.gitlab.timeout_s
    s.gitlab.inject_fault("POST", rf"/projects/{s.project_id}/issues$", delay_s=timeout + 1)
    with pytest.raises(TransientError) as caught:
        monitor._sync_issue(s.project_id, "app")
    assert caught.value.uncertain  # so the task retries only after 2 x the timeout (see monitor.issue)
    wait_for(lambda: s.gitlab.issues(s.project_id), timeout + 5, "the slow POST to land")
    assert monitor._sync_issue(s.project_id, "app") == "unchanged"
    assert len(s.gitlab.issues(s.project_id)) == 1


def test_an_issue_by_someone_else_with_the_marker_is_not_the_bots(rt, s):
    alerting(rt, s)
    token = f"glpat-mallory-{s.project_id}"
    s.gitlab.add_user(s.project_id + 900_000, f"mallory{s.project_id}", token=token)
    forged = {"title": "x", "description": "<!-- ecr-scan-gate:monitor:app -->", "labels": "ecr-scan-gate"}
    answer = requests.post(
        f"{s.gitlab.url}/api/v4/projects/{s.project_id}/issues",
        json=forged,
        headers={"PRIVATE-TOKEN": token},
        timeout=5,
    )
    assert answer.status_code == 201
    assert monitor._sync_issue(s.project_id, "app") == "opened"  # the forged one is not taken for ours
    ours = [i for i in s.gitlab.issues(s.project_id) if i["author"]["id"] == rt.gitlab.bot_user_id()]
    assert len(ours) == 1 and len(s.gitlab.issues(s.project_id)) == 2
