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
