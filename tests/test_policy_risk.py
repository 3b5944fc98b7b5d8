"""Accepted risk and smarter blocking: expiry (UTC, inclusive), scopes, fixable-only, CVSS, new-only; MR commands."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from bot.core.commands import Command, CommandError, CommandKind, parse_command, refusal
from bot.core.models import Acceptance, Finding, Image, Phase, Reason, ScanResult, Severity
from bot.core.note_parts import risk_blocks, unused_block
from bot.core.policy import Baseline, Policy, decide
from bot.core.risk import BlockMode, expiring_soon, fixable, utc_day
from bot.core.scan import classify_response

IMAGE = Image(repository="payments-api", tag="v1")
TODAY = date(2026, 12, 3)
HTTP2 = Finding("CVE-2023-44487", Severity.HIGH, package="nghttp2", fixed_version="1.43.0-1+deb11u1", cvss=7.5)
SSH = Finding("CVE-2024-6387", Severity.CRITICAL, package="openssh-server", fixed_version="", cvss=8.1)
LOW = Finding("CVE-2022-0001", Severity.LOW, package="zlib")


def scan(*findings: Finding) -> ScanResult:
    counts: dict[Severity, int] = {}
    for f in findings:
        counts[f.severity] = counts.get(f.severity, 0) + 1
    return ScanResult(Phase.COMPLETE, ecr_status="COMPLETE", counts=counts, findings=findings)


def accept(finding_id: str = HTTP2.id, expires: date = TODAY, **kw: str) -> Acceptance:
    return Acceptance(finding_id, kw.pop("reason", "HTTP/2 is off"), expires, **kw)


def test_an_exception_holds_through_its_last_utc_day_and_blocks_the_day_after() -> None:
    policy = Policy(exceptions=(accept(expires=TODAY),))
    on_the_day = decide(scan(HTTP2), policy, IMAGE, TODAY)
    assert on_the_day.reason is Reason.PASSED
    assert [(w.finding.id, w.why) for w in on_the_day.waived] == [(HTTP2.id, "accepted")]
    after = decide(scan(HTTP2), policy, IMAGE, date(2026, 12, 4))
    assert after.reason is Reason.BLOCKED and [f.id for f in after.blocking] == [HTTP2.id]
    assert [w.why for w in after.expired] == ["exception expired on 2026-12-03"]
    assert after.waived == () and after.unused == ()  # an expired exception is reported, not "unused"


def test_the_day_is_the_utc_day() -> None:
    last_second = datetime(2026, 12, 3, 23, 59, 59, tzinfo=UTC).timestamp()
    assert utc_day(last_second) == TODAY and utc_day(last_second + 1) == date(2026, 12, 4)


def test_expiring_soon_is_within_seven_days() -> None:
    assert expiring_soon(accept(expires=date(2026, 12, 10)), TODAY)
    assert not expiring_soon(accept(expires=date(2026, 12, 11)), TODAY)
    assert not expiring_soon(accept(expires=date(2026, 12, 2)), TODAY)  # already over


@pytest.mark.parametrize(
    ("scope", "waived"),
    [
        ({}, True),
        ({"package": "nghttp2"}, True),
        ({"package": "libnghttp2-14"}, False),
        ({"repository": "payments-api"}, True),
        ({"repository": "billing"}, False),
    ],
)
def test_scopes(scope: dict[str, str], waived: bool) -> None:
    verdict = decide(scan(HTTP2), Policy(exceptions=(accept(expires=date(2027, 1, 31), **scope),)), IMAGE, TODAY)
    assert (verdict.reason is Reason.PASSED) is waived
    # Out of the repository's scope it is not "unused" either: it is simply not this image's.
    assert len(verdict.unused) == (1 if not waived and "repository" not in scope else 0)


def test_unused_exceptions_are_listed_and_ids_match_case_insensitively() -> None:
    policy = Policy(exceptions=(accept("cve-2023-44487", date(2027, 1, 1)), accept("CVE-2000-0001", date(2027, 1, 1))))
    verdict = decide(scan(HTTP2), policy, IMAGE, TODAY)
    assert verdict.reason is Reason.PASSED
    assert [a.id for a in verdict.unused] == ["CVE-2000-0001"]


def test_fixable_only_reads_basic_fixed_versions_and_enhanced_fix_available() -> None:
    policy = Policy(block_only_fixable=True)
    verdict = decide(scan(HTTP2, SSH), policy, IMAGE, TODAY)
    assert [f.id for f in verdict.blocking] == [HTTP2.id]
    assert [(w.finding.id, w.why) for w in verdict.waived] == [(SSH.id, "no fix available")]
    assert fixable(Finding("X", Severity.HIGH, fix_available="PARTIAL"))
    assert not fixable(Finding("X", Severity.HIGH, fixed_version="1.2", fix_available="NO"))
    assert fixable(Finding("X", Severity.HIGH, fixed_version="1.2"))


def test_min_cvss_blocks_at_or_above_and_an_unscored_finding_still_blocks() -> None:
    at = Finding("CVE-A", Severity.HIGH, cvss=7.0)
    below = Finding("CVE-B", Severity.HIGH, cvss=6.9)
    unscored = Finding("CVE-C", Severity.HIGH)
    verdict = decide(scan(at, below, unscored), Policy(min_cvss=7.0), IMAGE, TODAY)
    assert sorted(f.id for f in verdict.blocking) == ["CVE-A", "CVE-C"]
    assert [w.why for w in verdict.waived] == ["CVSS 6.9 is below 7"]


def test_cvss_and_fix_state_are_read_from_ecr_answers() -> None:
    basic = {
        "name": "CVE-2024-1",
        "severity": "HIGH",
        "attributes": [
            {"key": "package_name", "value": "openssl"},
            {"key": "CVSS2_SCORE", "value": "5.0"},
            {"key": "CVSS3_SCORE", "value": "9.8"},
        ],
    }
    enhanced = {
        "severity": "HIGH",
        "status": "ACTIVE",
        "fixAvailable": "NO",
        "score": 6.1,
        "packageVulnerabilityDetails": {"vulnerabilityId": "CVE-2024-2", "vulnerablePackages": [{"name": "glibc"}]},
    }
    answer = {
        "imageScanStatus": {"status": "COMPLETE"},
        "imageScanFindings": {
            "findings": [basic],
            "enhancedFindings": [enhanced],
            "findingSeverityCounts": {"HIGH": 2},
        },
    }
    result = classify_response(answer)
    by_id = {f.id: f for f in result.findings}
    assert (by_id["CVE-2024-1"].cvss, fixable(by_id["CVE-2024-1"])) == (9.8, False)
    assert (by_id["CVE-2024-2"].cvss, by_id["CVE-2024-2"].fix_available) == (6.1, "NO")


def test_new_mode_blocks_only_what_the_target_branch_did_not_have() -> None:
    baseline = Baseline("main", frozenset({"cve-2023-44487|nghttp2"}), pipeline_id=90)
    verdict = decide(
        scan(HTTP2, SSH), Policy(block=BlockMode.NEW, target_branch="main", baseline=baseline), IMAGE, TODAY
    )
    assert [f.id for f in verdict.blocking] == [SSH.id]
    assert [(w.finding.id, w.why) for w in verdict.waived] == [(HTTP2.id, "already on main")]
    assert verdict.baseline == "only findings new since main (pipeline 90) block"


def test_new_mode_without_a_baseline_counts_everything_and_says_so() -> None:
    verdict = decide(scan(HTTP2, SSH), Policy(block=BlockMode.NEW, target_branch="main"), IMAGE, TODAY)
    assert verdict.blocking_total == 2 and verdict.waived == ()
    assert verdict.baseline.startswith("no completed scan of main to compare with")


def test_counted_but_unlisted_findings_still_block_whatever_is_accepted() -> None:
    result = ScanResult(Phase.COMPLETE, counts={Severity.HIGH: 3}, findings=(HTTP2,))
    verdict = decide(result, Policy(exceptions=(accept(expires=date(2027, 1, 1)),)), IMAGE, TODAY)
    assert verdict.reason is Reason.BLOCKED and verdict.blocking_total == 2


def test_the_note_shows_accepted_expiring_expired_unused_and_why_not_blocking() -> None:
    policy = Policy(
        block_only_fixable=True,
        exceptions=(
            accept(expires=date(2026, 12, 8), by="@alice"),
            accept("CVE-2019-0001", expires=date(2026, 12, 1)),
            accept("CVE-2000-0001", expires=date(2027, 1, 1)),
        ),
    )
    old = Finding("CVE-2019-0001", Severity.HIGH, package="libc6", fixed_version="2.36")
    verdict = decide(scan(HTTP2, SSH, old), policy, IMAGE, TODAY)
    text = "\n\n".join(risk_blocks(verdict, 20))
    assert "`CVE-2019-0001` in `libc6`: exception expired on 2026\\-12\\-01, blocking again" in text
    assert "| `CVE-2023-44487` | `nghttp2` | HTTP\\/2 is off | `@alice` | 2026-12-08 ⚠ ends in 5 days |" in text
    assert "`CVE-2024-6387` `openssh-server`: no fix available" in text
    assert "CVE-2000-0001" not in text  # unused exceptions are listed once per note (unused_block)
    assert "`CVE-2000-0001` until 2027-01-01" in unused_block([verdict], 20)
    assert "@alice" not in text.replace("`@alice`", "")  # a mention only inside a code span


# --- MR commands --------------------------------------------------------------------------------------


def test_commands_parse() -> None:
    assert parse_command("ecr-scan-gate recheck") == Command(CommandKind.RECHECK)
    assert parse_command("Looks good") is None
    cmd = parse_command("ecr-scan-gate accept CVE-2023-44487 package nghttp2 until 2027-01-31 because HTTP/2 off")
    assert cmd == Command(CommandKind.ACCEPT, "CVE-2023-44487", "nghttp2", date(2027, 1, 31), "HTTP/2 off")
    assert parse_command("ecr-scan-gate accept CVE-1 until 2027-01-31 because x").package == ""  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("ecr-scan-gate approve everything", "unknown command"),
        ("ecr-scan-gate accept CVE-1 until tomorrow because x", "YYYY-MM-DD"),
        ("ecr-scan-gate accept CVE-1 until 2027-01-31", "use `accept"),
        ("ecr-scan-gate accept <script> until 2027-01-31 because x", "not a finding id"),
        ("ecr-scan-gate accept CVE-1 until 2027-01-31 because \u202e\x00", "say why"),
    ],
)
def test_broken_commands_say_why(line: str, words: str) -> None:
    with pytest.raises(CommandError, match=words):
        parse_command(line)


ACCEPT = Command(CommandKind.ACCEPT, "CVE-1", "", date(2027, 1, 31), "reason")


@pytest.mark.parametrize(
    ("command", "level", "author", "why"),
    [
        (Command(CommandKind.RECHECK), 30, True, None),
        (Command(CommandKind.RECHECK), 20, False, "recheck needs the Developer role or above"),
        (ACCEPT, 40, False, None),
        (ACCEPT, 30, False, "accept needs the Maintainer role or above"),
        (ACCEPT, 50, True, "the merge request's author cannot accept a risk for it"),
        (Command(CommandKind.ACCEPT, "CVE-1", "", date(2026, 12, 2), "r"), 40, False, "2026-12-02 is in the past"),
        (
            Command(CommandKind.ACCEPT, "CVE-1", "", date(2027, 3, 3), "r"),
            40,
            False,
            "2027-03-03 is more than 89 days ahead (latest 2027-03-02)",
        ),
    ],
)
def test_who_may_run_what(command: Command, level: int, author: bool, why: str | None) -> None:
    assert refusal(command, level, author, TODAY, 89) == why


def test_an_exception_one_image_used_is_not_unused_in_the_note() -> None:
    shared = accept(expires=date(2027, 1, 1))
    policy = Policy(exceptions=(shared,))
    used = decide(scan(HTTP2), policy, IMAGE, TODAY)
    other = decide(scan(SSH), policy, Image(repository="billing"), TODAY)
    assert other.unused == (shared,)  # for that image alone it matched nothing
    assert unused_block([used, other], 20) == ""
    assert "CVE-2023-44487" in unused_block([other], 20)
