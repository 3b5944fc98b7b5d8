"""The sweep and the reporting (statuses, the MR note), run in the pytest process on real Redis and the shared fakes."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from bot.core.gate import GateState
from bot.core.models import Phase, Reason, ScanResult
from bot.core.policy import failed_verdict
from bot.core.report import MARKER
from tests import inprocess
from tests.harness import PUSH_APP
from tests.inprocess import CLEAN, DIRTY, finish, gate, polling, stored
from workers import reporting, tasks
from workers.sweeper import sweep_once

base, rt, sent, s = inprocess.base, inprocess.rt, inprocess.sent, inprocess.s


def test_sweep_finishes_a_polling_gate_long_past_its_deadline(rt, s, sent):
    key, _ = polling(rt, s)
    deadline = stored(rt, key).progress.deadline
    counts = sweep_once(rt, sent.actions(), now=deadline + rt.settings.scan.poll_interval_s + 31)
    assert counts == {"timed_out": 1}
    g = stored(rt, key)
    assert g.state is GateState.DONE and g.verdict is not None and g.verdict.reason is Reason.TIMEOUT
    assert g.verdict.detail == "last ECR status: no answer (finished by sweep)"
    assert sent.syncs == [key] and sent.polls == []


def test_sweep_resends_a_polling_gate_stuck_without_progress(rt, s, sent):
    since = time.time()
    key, gen = polling(rt, s, since=since)
    now = since + rt.settings.sweep.stuck_after_s + 1
    assert sweep_once(rt, sent.actions(), now=now) == {"resent": 1}
    assert sent.polls == [(key, gen)]  # the current generation: whichever copy runs first polls
    assert stored(rt, key).last_progress == now
    assert sweep_once(rt, sent.actions(), now=now + 1) == {"ok": 1}  # at most once per stuck_after_s
    assert sent.polls == [(key, gen)] and sent.syncs == []


def test_sweep_starts_a_waiting_gate_whose_push_job_succeeded(rt, s, sent, fake_gitlab):
    g = gate(rt, s)
    fake_gitlab.set_job_status(s.jobs[PUSH_APP], "success")  # its job event was lost
    now = g.created_at + rt.settings.sweep.stuck_after_s + 1
    assert sweep_once(rt, sent.actions(), now=now) == {"started": 1}
    assert sent.started == [g.key] and sent.canceled == []
    assert sent.syncs == [g.key]  # its pending status was never posted either


def test_sweep_cancels_a_waiting_gate_whose_push_job_failed(rt, s, sent, fake_gitlab):
    g = gate(rt, s)
    rt.store.set_posted(g.key, "pending")
    fake_gitlab.set_job_status(s.jobs[PUSH_APP], "failed")
    now = g.created_at + rt.settings.sweep.stuck_after_s + 1
    assert sweep_once(rt, sent.actions(), now=now) == {"canceled": 1}
    assert sent.canceled == [(g.key, f"{PUSH_APP} failed: nothing was pushed (found by sweep)")]
    assert sent.started == [] and sent.syncs == []


def test_sweep_resyncs_a_done_gate_whose_status_was_never_posted(rt, s, sent):
    app, api = gate(rt, s, "app"), gate(rt, s, "api")
    for g in (app, api):
        assert rt.store.finish(g.key, failed_verdict(Reason.SCAN_FAILED, g.image))
    rt.store.set_posted(api.key, "failed")  # api's status got through, its note did not
    now = time.time() + rt.settings.sweep.stuck_after_s + 1
    assert sweep_once(rt, sent.actions(), now=now) == {"resynced": 1, "renoted": 1}
    assert sent.syncs == [app.key]
    assert sent.notes == [(api.project_id, api.sha, api.pipeline_id, api.mr_iid, api.key)]


# --- reporting ---------------------------------------------------------------------------------------------


def test_post_status_posts_each_state_once(rt, s, sent, fake_gitlab):
    g = gate(rt, s)
    path = f"/projects/{s.project_id}/statuses/"

    def post_twice() -> list[str]:
        """Post as a sync would, twice; every state POSTed to GitLab so far."""
        for _ in range(2):
            reporting.post_status(rt, stored(rt, g.key))  # the gate as read under the lock each time
        return [r["body"]["state"] for r in fake_gitlab.requests("POST", path) if r["status"] == 201]

    assert post_twice() == ["pending"]
    assert stored(rt, g.key).posted_state == "pending"
    gen = rt.store.start_polling(g.key, time.time(), time.time() + 60)
    scanning = dataclasses.replace(stored(rt, g.key).progress, attempts=1, ecr_status="IN_PROGRESS")
    assert rt.store.save_progress(g.key, gen, g.image, scanning, time.time())
    assert post_twice() == ["pending", "running"]
    finish(rt, g, CLEAN)
    assert post_twice() == ["pending", "running", "success"]
    assert fake_gitlab.request_count("POST", path) == 3  # and nothing refused

    # GitLab updates a pending/running status job in place: one job, now final, on the MR pipeline.
    [job] = [st for st in fake_gitlab.statuses(s.project_id, s.sha) if st["name"] == g.status_name]
    done = stored(rt, g.key)
    assert done.posted_state == "success" and done.verdict is not None
    assert job["status"] == "success" and job["pipeline_id"] == s.pipeline_id
    assert job["description"] == done.verdict.summary
    tasks.sync.run(g.key)  # the sync task: nothing left to post, the note is queued
    assert fake_gitlab.request_count("POST", path) == 3
    assert sent.notes == [(s.project_id, s.sha, s.pipeline_id, s.mr_iid, g.key)]


def test_refresh_notes_writes_one_note_edits_it_and_ignores_an_older_pipeline(rt, s, fake_gitlab):
    path = f"/projects/{s.project_id}/merge_requests/{s.mr_iid}/notes"

    def ours() -> list[dict[str, Any]]:
        return [n for n in fake_gitlab.notes(s.project_id, s.mr_iid) if n["body"].startswith(MARKER)]

    def writes() -> tuple[int, int]:
        return fake_gitlab.request_count("POST", path), fake_gitlab.request_count("PUT", path)

    old_sha, old_pipeline = s.sha, s.pipeline_id
    app1, api1 = gate(rt, s, "app"), gate(rt, s, "api")
    rt.store.see_mr_pipeline(s.project_id, s.mr_iid, old_pipeline, old_sha)
    finish(rt, app1, CLEAN)
    assert reporting.refresh_notes(rt, s.project_id, old_sha, old_pipeline, s.mr_iid, app1.key) is False
    [first] = ours()
    assert "PASSED" in first["body"] and old_sha[:8] in first["body"]
    assert writes() == (1, 0) and stored(rt, app1.key).noted == 1

    s.new_commit()  # a push to the MR: new head, new pipeline, whose verdict comes next
    app2 = gate(rt, s, "app")
    rt.store.see_mr_pipeline(s.project_id, s.mr_iid, s.pipeline_id, s.sha)
    finish(rt, app2, DIRTY)
    assert reporting.refresh_notes(rt, s.project_id, s.sha, s.pipeline_id, s.mr_iid, app2.key) is False
    [edited] = ours()
    assert edited["id"] == first["id"]  # edited in place
    assert "BLOCKED" in edited["body"] and "CVE-2023-44487" in edited["body"] and s.sha[:8] in edited["body"]
    assert old_sha[:8] not in edited["body"]
    assert writes() == (1, 1)

    finish(rt, api1, ScanResult(Phase.FINAL, ecr_status="FAILED", reason=Reason.SCAN_FAILED))  # late, old pipeline
    assert reporting.refresh_notes(rt, s.project_id, old_sha, old_pipeline, s.mr_iid, api1.key) is False
    assert ours() == [edited] and writes() == (1, 1)  # the note stays on the head
    assert stored(rt, api1.key).noted == 1  # nothing more to do for it


def test_sweep_replays_an_accepted_delivery_whose_task_was_lost_then_gives_up(rt, s, sent):
    assert rt.store.claim_and_accept(
        "idem:lost-1", 60, "idem-lost-1", "gate.pipeline_event", '{"kind": "Pipeline Hook"}'
    )
    soon = time.time() + 1
    assert "replayed" not in sweep_once(rt, sent.actions(), now=soon)  # its task may still be retrying
    later = time.time() + max(2 * rt.settings.sweep.interval_s, rt.settings.sweep.stuck_after_s) + 1
    assert sweep_once(rt, sent.actions(), now=later).get("replayed") == 1
    assert sent.replayed == [("gate.pipeline_event", "idem-lost-1")]
    for _ in range(5):  # each replay's task fails again: a poison delivery, not a lost one
        sweep_once(rt, sent.actions(), now=time.time() + 600)
    assert "idem-lost-1" not in {d.id for d in rt.store.stale_deliveries(time.time() + 10**6, limit=10_000)}
    rt.store.processed("idem-lost-1")


def test_sweep_skips_a_waiting_gate_once_only_its_manual_push_job_is_left(rt, s, sent, fake_gitlab):
    g = gate(rt, s)
    rt.store.set_posted(g.key, "pending")
    for name, status in (("unit-tests", "success"), (PUSH_APP, "manual"), ("docker-push-api", "success")):
        fake_gitlab.set_job_status(s.jobs[name], status)
    now = g.created_at + rt.settings.sweep.stuck_after_s + 1
    assert sweep_once(rt, sent.actions(), now=now) == {"skipped": 1}
    assert sent.ended == [(g.key, Reason.SKIPPED)]
    assert sent.canceled == [(g.key, f"the pipeline finished without running {PUSH_APP} (manual) (found by sweep)")]
