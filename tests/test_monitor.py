"""[monitor]'s pure parts: which pipelines are watched, what a rescan makes of a digest, the one issue's text."""

from __future__ import annotations

from bot.core.models import Finding, Image, Reason, Severity, Verdict
from bot.core.monitor import DigestState, Watched, after_rescan, issue_marker, render_issue
from bot.core.settings import MonitorSettings

DIGEST = "sha256:" + "ab" * 32
OLD = Finding("CVE-2020-0001", Severity.HIGH, package="zlib", installed_version="1.2", fixed_version="1.3")
NEW = Finding("CVE-2026-0002", Severity.CRITICAL, package="openssl", installed_version="3.0.1", fixed_version="3.0.9")


def watched(**kw: object) -> Watched:
    base: dict = {
        "project_id": 7,
        "project_path": "team/app",
        "image": Image("app", digest=DIGEST),
        "pipeline_id": 901,
        "ref": "main",
        "gated_at": 1000.0,
    }
    return Watched(**{**base, **kw})  # type: ignore[arg-type]


def blocked(*findings: Finding) -> Verdict:
    return Verdict(Reason.BLOCKED, "blocked", blocking=findings, blocking_total=len(findings))


def test_the_default_branch_and_tags_are_watched_when_enabled_and_nothing_when_not() -> None:
    on = MonitorSettings(enabled=True)
    assert on.watches("main", False, "main") and on.watches("v1.2.0", True, "main")
    assert not on.watches("feature/x", False, "main") and not on.watches("main", False, "")
    listed = MonitorSettings(enabled=True, branches=("release/*",), tags=False)
    assert listed.watches("release/7", False, "main") and not listed.watches("main", False, "main")
    assert not listed.watches("v1", True, "main")
    assert not MonitorSettings().watches("main", False, "main")


def test_only_findings_new_since_the_gate_alert_and_a_read_that_failed_changes_nothing() -> None:
    w = watched(known=frozenset({"cve-2020-0001|zlib"}))
    same = after_rescan(w, blocked(OLD), 2000.0)
    assert same.watched.state is DigestState.BLOCKING and not same.watched.alerting and not same.changed
    worse = after_rescan(same.watched, blocked(OLD, NEW), 3000.0)
    assert worse.changed and worse.watched.new_blocking == ("cve-2026-0002|openssl",)
    timed_out = after_rescan(worse.watched, Verdict(Reason.TIMEOUT, "slow"), 4000.0)
    assert not timed_out.changed and timed_out.watched.alerting and "timeout" in timed_out.why
    fixed = after_rescan(worse.watched, Verdict(Reason.PASSED, "clean"), 5000.0)
    assert fixed.changed and fixed.watched.state is DigestState.CLEAN and not fixed.watched.alerting


def test_the_issue_lists_new_findings_with_fixed_versions_and_the_pipeline_that_shipped_it() -> None:
    w = after_rescan(watched(), blocked(NEW), 2000.0).watched
    text = render_issue("app", [w], "https://gitlab.example.com")
    assert text.open and text.description.startswith(issue_marker("app"))
    assert "1 new blocking finding" in text.title
    for needle in (
        "CVE-2026-0002",
        "openssl",
        "3.0.9",
        "[pipeline 901](https://gitlab.example.com/team/app/-/pipelines/901)",
        DIGEST,
        "`main`",
    ):
        assert needle in text.description, needle
    assert not render_issue("app", [watched()]).open  # clean: nothing to report (an open issue is closed)


def test_an_image_no_longer_scanned_is_reported_as_unknown_never_clean() -> None:
    gone = Verdict(Reason.FINDINGS_UNAVAILABLE, "scan findings unavailable for app (SCAN_ELIGIBILITY_EXPIRED)")
    w = after_rescan(watched(), gone, 2000.0).watched
    assert w.state is DigestState.UNSCANNED and w.alerting
    text = render_issue("app", [w])
    assert text.open and "no longer scanned" in text.title
    assert "**unknown** (not clean)" in text.description and "SCAN_ELIGIBILITY_EXPIRED" in text.description


def test_text_from_ecr_cannot_ping_or_run_quick_actions_in_the_issue() -> None:
    evil = Finding("CVE-2026-9", Severity.HIGH, package="@everyone\n/close", fixed_version="<script>")
    text = render_issue("app", [after_rescan(watched(ref="@all /label ~x"), blocked(evil), 1.0).watched])
    outside_code = "".join(text.description.split("`")[0::2])  # what GitLab renders as text, not code
    assert "@everyone" not in outside_code and "@all" not in outside_code and "<script>" not in text.description
    assert not any(line.lstrip(" >").startswith("/") for line in text.description.splitlines())
