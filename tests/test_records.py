"""Records beside the gates, on real Redis: MR-command exceptions, branch baselines, the audit, the inbox."""

from __future__ import annotations

import time
from datetime import date

from bot.core.commands import AuditEntry
from bot.core.models import Acceptance
from tests import inprocess

base, rt = inprocess.base, inprocess.rt


def test_an_accepted_exception_is_stored_per_project_and_replaced_per_scope(rt):
    first = Acceptance("CVE-1", "first", date(2027, 1, 1), by="@a", source="MR !1 comment")
    again = Acceptance("cve-1", "second", date(2027, 2, 1), by="@b", source="MR !2 comment")
    other = Acceptance("CVE-1", "libc only", date(2027, 1, 1), package="libc6")
    for acceptance in (first, again, other):
        rt.store.add_exception(4242, acceptance)
    assert sorted((a.reason, a.package) for a in rt.store.project_exceptions(4242)) == [
        ("libc only", "libc6"),
        ("second", ""),
    ]
    assert rt.store.project_exceptions(4243) == ()


def test_the_newest_pipeline_is_the_baseline_an_older_late_one_is_not(rt):
    rt.store.save_baseline(7, "main", "app", 20, ["b|x", "a|y", "a|y"])
    rt.store.save_baseline(7, "main", "app", 19, ["old|z"])
    assert rt.store.baseline(7, "main", "app") == (20, frozenset({"a|y", "b|x"}))
    assert rt.store.baseline(7, "main", "api") is None


def test_the_audit_keeps_the_last_fifty(rt):
    for i in range(55):
        rt.store.add_audit(7, 3, AuditEntry(time.time(), "u", f"cmd {i}", "ok", i))
    entries = rt.store.audit(7, 3)
    assert len(entries) == 50 and entries[0].command == "cmd 5" and entries[-1].note_id == 54


def test_a_merge_verdict_is_counted_once_for_the_dashboard_a_rescan_not(rt, fake_gitlab, ecr):
    from bot.adapters.history import RECENT_KEPT
    from bot.core.models import Reason
    from bot.core.policy import failed_verdict
    from bot.core.risk import utc_day
    from tests.harness import Scenario

    s = Scenario(fake_gitlab, ecr, lambda *a: None)
    g = inprocess.gate(rt, s, "app")
    assert rt.store.finish(g.key, failed_verdict(Reason.TIMEOUT, g.image))
    assert not rt.store.finish(g.key, failed_verdict(Reason.ERROR, g.image))  # the first verdict wins, once
    today = utc_day(time.time())
    assert rt.store.daily_counts(s.project_id, today) == {"timeout": 1}
    assert [key for key, _ in rt.store.recent_verdicts(10)] == [g.key]
    assert s.project_id in rt.store.stats_projects()
    # A rescan's verdict feeds its issue, not the merge rates.
    rescan = f"rescan:{s.project_id}:app:sha256:{'a' * 64}"
    rt.store.r.hset(rt.store._k(rescan), mapping={"state": "polling"})
    assert rt.store.finish(rescan, failed_verdict(Reason.SCAN_FAILED, g.image))
    assert rt.store.daily_counts(s.project_id, today) == {"timeout": 1}
    assert len(rt.store.recent_verdicts(10)) == 1
    # The recent list keeps the newest RECENT_KEPT.
    pipe = rt.store.r.pipeline()
    for i in range(RECENT_KEPT + 5):
        pipe.zadd(rt.store._k("recent"), {f"gate:{s.project_id}:{i}:x": float(i)})
    pipe.execute()
    other = inprocess.gate(rt, Scenario(fake_gitlab, ecr, lambda *a: None), "app")
    assert rt.store.finish(other.key, failed_verdict(Reason.TIMEOUT, other.image))
    kept = rt.store.recent_verdicts(RECENT_KEPT + 10)
    assert len(kept) == RECENT_KEPT and kept[0][0] == other.key


def test_when_a_new_scan_was_asked_for_is_kept_with_the_progress_and_a_restart_clears_what_it_must(
    rt, fake_gitlab, ecr
):
    from bot.core.models import Reason
    from bot.core.policy import failed_verdict
    from tests.harness import Scenario

    s = Scenario(fake_gitlab, ecr, lambda *a: None)
    g = inprocess.gate(rt, s, "app")
    now = time.time()
    assert rt.store.start_polling(g.key, now, now + 60, not_before=now - 1)
    stored = rt.store.get(g.key)
    assert stored is not None and stored.progress.not_before == now - 1
    rt.store.r.hset(rt.store._k(g.key), "settled", "an earlier read's mark")
    assert rt.store.finish(g.key, failed_verdict(Reason.TIMEOUT, g.image))
    # A restart (an MR `recheck`) is a new read: no new scan asked for, no earlier read's mark to agree with.
    assert rt.store.restart(g.key, now + 1, now + 61, [Reason.TIMEOUT.value])
    again = rt.store.get(g.key)
    assert again is not None and again.progress.not_before == 0.0 and again.progress.settled == ""
    assert again.progress.deadline == now + 61
    # Only the reasons allowed restart a gate.
    assert rt.store.finish(g.key, failed_verdict(Reason.SCAN_FAILED, g.image))
    assert not rt.store.restart(g.key, now + 2, now + 62, [Reason.TIMEOUT.value], not_before=now + 2)
