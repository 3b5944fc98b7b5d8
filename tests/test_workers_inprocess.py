"""The poll task's decisions, run in the pytest process on real Redis, the shared ECR double and fake GitLab."""

from __future__ import annotations

import random

import pytest
from celery.exceptions import Retry

from bot.core import poll as rule
from bot.core.gate import GateState
from bot.core.models import Reason
from bot.core.routing import rate_bucket
from tests import inprocess
from tests.fakes.ecr import basic_finding
from tests.inprocess import SEED, polling, scans, stored, tuned
from workers import tasks

base, rt, sent, clock, s = inprocess.base, inprocess.rt, inprocess.sent, inprocess.clock, inprocess.s
HIGH = basic_finding("CVE-2023-44487", "HIGH", "nghttp2", "1.43.0-1", "1.43.0-1+deb11u1")


def test_poll_in_progress_saves_progress_and_reschedules_then_complete_passes(rt, s, sent, ecr):
    digest = s.push("app")
    s.script("app", [{"status": "IN_PROGRESS"}, {"status": "COMPLETE", "findings": []}])
    key, gen = polling(rt, s)

    with pytest.raises(Retry):
        tasks.poll.run(key, gen)
    g = stored(rt, key)
    assert g.state is GateState.POLLING and g.verdict is None
    assert (g.progress.attempts, g.progress.failures, g.progress.ecr_status) == (1, 0, "IN_PROGRESS")
    assert g.image.digest == digest  # pinned at the first answer
    assert g.poll_gen == gen + 1
    assert sent.retries == [((key, gen + 1), rt.settings.scan.poll_interval_s)]
    assert sent.syncs == [key]  # the "running" status

    tasks.poll.run(key, gen + 1)  # returns: no retry
    g = stored(rt, key)
    assert g.state is GateState.DONE and g.verdict is not None
    assert g.verdict.reason is Reason.PASSED and g.verdict.digest == digest
    assert g.progress.attempts == 2
    assert len(sent.retries) == 1 and sent.syncs == [key, key]
    assert [c.image for c in scans(ecr, s)] == [s.tag("app"), digest]  # by digest once ECR named it


def test_poll_countdown_is_capped_at_half_the_visibility_timeout(rt, s, sent):
    s.push("app")
    s.script("app", [{"status": "IN_PROGRESS"}])
    slow = tuned(rt, scan={"poll_interval_s": 45.0, "timeout_s": 600.0})
    key, gen = polling(slow, s)
    with pytest.raises(Retry):
        tasks.poll.run(key, gen)
    cap = slow.settings.celery.visibility_timeout_s / 2
    assert cap < slow.settings.scan.poll_interval_s
    assert sent.retries == [((key, gen + 1), cap)]


def test_poll_complete_with_a_high_finding_blocks(rt, s, sent, ecr):
    s.push("app")
    s.script("app", [{"status": "COMPLETE", "findings": [HIGH]}])
    key, gen = polling(rt, s)
    tasks.poll.run(key, gen)
    g = stored(rt, key)
    assert g.state is GateState.DONE and g.verdict is not None and g.verdict.reason is Reason.BLOCKED
    assert [f.id for f in g.verdict.blocking] == ["CVE-2023-44487"] and g.verdict.blocking_total == 1
    assert sent.syncs == [key] and sent.retries == []
    assert len(scans(ecr, s)) == 1


def test_poll_scan_not_found_waits_inside_the_grace_then_fails(rt, s, sent, clock, ecr):
    s.push("app")
    s.script("app", [{"error": "ScanNotFoundException"}])
    grace = rt.settings.scan.not_found_grace_s
    key, gen = polling(rt, s, since=clock.now)

    clock.now += grace / 2
    with pytest.raises(Retry):
        tasks.poll.run(key, gen)
    g = stored(rt, key)
    assert g.state is GateState.POLLING and g.verdict is None
    assert (g.progress.attempts, g.progress.ecr_status) == (1, "ScanNotFoundException")
    assert sent.retries == [((key, gen + 1), rt.settings.scan.poll_interval_s)]

    clock.now += grace  # now past the grace: the answer is believed
    tasks.poll.run(key, gen + 1)
    g = stored(rt, key)
    assert g.state is GateState.DONE and g.verdict is not None and g.verdict.reason is Reason.SCAN_NOT_FOUND
    assert len(sent.retries) == 1 and len(scans(ecr, s)) == 2


def test_poll_past_the_deadline_times_out(rt, s, sent, clock, ecr):
    s.push("app")
    s.script("app", [{"status": "IN_PROGRESS"}])
    key, gen = polling(rt, s, since=clock.now)
    clock.now += rt.settings.scan.timeout_s + 1
    tasks.poll.run(key, gen)
    g = stored(rt, key)
    assert g.state is GateState.DONE and g.verdict is not None and g.verdict.reason is Reason.TIMEOUT
    assert g.verdict.detail == "last ECR status: IN_PROGRESS"
    assert g.progress.attempts == 1
    assert sent.syncs == [key] and sent.retries == []
    assert len(scans(ecr, s)) == 1


def test_poll_with_a_stale_generation_asks_ecr_nothing(rt, s, sent, ecr):
    s.push("app")
    s.script("app", [{"status": "IN_PROGRESS"}])
    key, gen = polling(rt, s)
    with pytest.raises(Retry):
        tasks.poll.run(key, gen)
    before = stored(rt, key)

    tasks.poll.run(key, gen)  # a redelivered copy of the run above: its claim fails
    tasks.poll.run(key, gen + 7)  # a generation never handed out
    assert stored(rt, key) == before
    assert len(scans(ecr, s)) == 1
    assert len(sent.retries) == 1 and sent.syncs == [key]


def test_poll_rate_limited_asks_ecr_nothing_and_comes_back_later(rt, s, sent, ecr):
    s.push("app")
    s.script("app", [{"status": "IN_PROGRESS"}])
    limited = tuned(rt, ecr={"rate_per_s": 0.5, "burst": 1})
    key, gen = polling(limited, s)
    before = stored(limited, key)
    assert limited.store.take_token(rate_bucket(before.image), 0.5, 1) == 0  # another worker took the only token

    with pytest.raises(Retry):
        tasks.poll.run(key, gen)
    after = stored(limited, key)
    assert after.state is GateState.POLLING and after.progress == before.progress  # attempts unchanged: 0
    assert scans(ecr, s) == []
    [(args, countdown)] = sent.retries
    assert args == (key, gen + 1)
    assert 1.0 <= countdown <= 4.0  # the bucket's wait (at most 2 s at 0.5/s) plus up to as much jitter
    assert sent.syncs == []


def test_poll_throttled_counts_failures_and_backs_off(rt, s, sent, ecr):
    s.push("app")
    s.script("app", [{"error": "ThrottlingException"}])
    key, gen = polling(rt, s)
    jitter = random.Random(SEED)  # the same draws as the task's seeded rng
    for n in (1, 2):
        with pytest.raises(Retry):
            tasks.poll.run(key, gen + n - 1)
        g = stored(rt, key)
        assert g.state is GateState.POLLING
        assert (g.progress.attempts, g.progress.failures) == (n, n)
        assert "ThrottlingException" in g.progress.last_error
        assert sent.retries[-1] == ((key, gen + n), rule.backoff(n, rt.settings.scan.backoff_max_s, jitter))
    assert sent.syncs == []  # no scan answer yet: the status stays as it was
    assert [c.error for c in scans(ecr, s)] == ["ThrottlingException"] * 2
