"""Pure core: ECR answers and errors → ScanResult → Verdict, for every verdict reason (README: "Verdicts")."""

from __future__ import annotations

from datetime import date

import pytest

from bot.core.errors import TransientError
from bot.core.models import Acceptance, Image, Phase, Reason, Severity
from bot.core.policy import Policy, decide, failed_verdict
from bot.core.poll import within_grace
from bot.core.scan import classify_error, classify_response, merge_pages

DIGEST = "sha256:" + "ab" * 32
TARGET = Image(repository="app", tag="a1b2c3d4", region="us-east-1", registry_id="123456789012")
POLICY = Policy()


def answer(status: str, findings: dict | None = None, description: str = "") -> dict:
    body = {
        "repositoryName": "app",
        "imageId": {"imageDigest": DIGEST, "imageTag": "a1b2c3d4"},
        "imageScanStatus": {"status": status, "description": description},
    }
    if findings is not None:
        body["imageScanFindings"] = findings
    return body


def basic(name: str, severity: str, package: str = "openssl") -> dict:
    return {
        "name": name,
        "severity": severity,
        "uri": f"https://nvd.nist.gov/vuln/detail/{name}",
        "attributes": [
            {"key": "package_name", "value": package},
            {"key": "package_version", "value": "1.0"},
            {"key": "fixed_in_version", "value": "1.1"},
        ],
    }


def enhanced(vuln: str, severity: str, status: str = "ACTIVE") -> dict:
    return {
        "severity": severity,
        "status": status,
        "packageVulnerabilityDetails": {
            "vulnerabilityId": vuln,
            "vulnerablePackages": [{"name": "glibc", "version": "2.31", "fixedInVersion": "2.32"}],
            "sourceUrl": f"https://nvd.nist.gov/vuln/detail/{vuln}",
        },
    }


def verdict_for(body: dict, policy: Policy = POLICY):
    return decide(classify_response(body), policy, TARGET)


def test_runbook_example_is_blocked_on_high_and_absent_keys_are_zero():
    body = answer(
        "COMPLETE",
        {
            "findings": [basic("CVE-2023-44487", "HIGH", "nghttp2")],
            "findingSeverityCounts": {"HIGH": 1, "INFORMATIONAL": 4, "LOW": 2, "MEDIUM": 3},
        },
    )
    verdict = verdict_for(body)
    assert verdict.reason is Reason.BLOCKED
    assert verdict.blocking_total == 1
    assert verdict.blocking[0].package == "nghttp2"
    assert verdict.counts.get(Severity.CRITICAL, 0) == 0
    assert verdict.digest == DIGEST
    assert verdict.reason.commit_state == "failed"


def test_complete_with_empty_counts_passes():
    verdict = verdict_for(answer("COMPLETE", {"findings": [], "findingSeverityCounts": {}}))
    assert verdict.reason is Reason.PASSED
    assert verdict.reason.commit_state == "success"


def test_complete_without_findings_object_is_error_never_pass():
    result = classify_response(answer("COMPLETE"))
    assert result.phase is Phase.FINAL and result.reason is Reason.ERROR
    assert verdict_for(answer("COMPLETE")).reason is Reason.ERROR


def test_counted_but_unlisted_blocking_findings_still_block():
    # ECR counted a CRITICAL that no page listed (e.g. a truncated read): fail closed.
    verdict = verdict_for(answer("COMPLETE", {"findings": [], "findingSeverityCounts": {"CRITICAL": 2}}))
    assert verdict.reason is Reason.BLOCKED
    assert verdict.blocking_total == 2


def test_accepted_cve_does_not_block_but_others_do():
    body = answer(
        "COMPLETE",
        {
            "findings": [basic("CVE-2024-0001", "CRITICAL"), basic("CVE-2024-0002", "HIGH")],
            "findingSeverityCounts": {"CRITICAL": 1, "HIGH": 1},
        },
    )

    def accept(*ids: str) -> Policy:
        return Policy(exceptions=tuple(Acceptance(i, "accepted", date(2099, 1, 1)) for i in ids))

    only_accepted = verdict_for(body, accept("CVE-2024-0001", "CVE-2024-0002"))
    assert only_accepted.reason is Reason.PASSED
    assert [w.finding.id for w in only_accepted.waived] == ["CVE-2024-0001", "CVE-2024-0002"]
    one = verdict_for(body, accept("CVE-2024-0001"))
    assert one.reason is Reason.BLOCKED and [f.id for f in one.blocking] == ["CVE-2024-0002"]


def test_blocking_sorted_most_severe_first():
    body = answer(
        "COMPLETE",
        {
            "findings": [
                basic("CVE-2024-0003", "HIGH"),
                basic("CVE-2024-0009", "CRITICAL"),
                basic("CVE-2024-0001", "HIGH"),
            ],
            "findingSeverityCounts": {"CRITICAL": 1, "HIGH": 2},
        },
    )
    assert [f.id for f in verdict_for(body).blocking] == ["CVE-2024-0009", "CVE-2024-0001", "CVE-2024-0003"]


def test_enhanced_suppressed_and_closed_do_not_block_untriaged_only_when_listed():
    body = answer(
        "COMPLETE",
        {
            "enhancedFindings": [
                enhanced("CVE-2024-1000", "CRITICAL", "SUPPRESSED"),
                enhanced("CVE-2024-1001", "HIGH", "CLOSED"),
                enhanced("CVE-2024-1002", "UNTRIAGED"),
            ],
            "findingSeverityCounts": {"CRITICAL": 1, "HIGH": 1, "UNTRIAGED": 1},
        },
    )
    default = verdict_for(body)
    assert default.reason is Reason.PASSED and default.enhanced
    strict = verdict_for(body, Policy(fail_on=(Severity.CRITICAL, Severity.UNTRIAGED)))
    assert strict.reason is Reason.BLOCKED and [f.id for f in strict.blocking] == ["CVE-2024-1002"]


@pytest.mark.parametrize("status", ["ACTIVE", "PENDING"])
def test_enhanced_active_or_pending_without_findings_is_in_progress(status):
    assert classify_response(answer(status)).phase is Phase.IN_PROGRESS
    with_findings = classify_response(answer(status, {"enhancedFindings": [enhanced("CVE-2024-1", "HIGH")]}))
    assert with_findings.phase is Phase.COMPLETE


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        ("FAILED", Reason.SCAN_FAILED),
        ("UNSUPPORTED_IMAGE", Reason.UNSUPPORTED_IMAGE),
        ("FINDINGS_UNAVAILABLE", Reason.FINDINGS_UNAVAILABLE),
        ("SCAN_ELIGIBILITY_EXPIRED", Reason.FINDINGS_UNAVAILABLE),
        ("LIMIT_EXCEEDED", Reason.FINDINGS_UNAVAILABLE),
        ("IMAGE_ARCHIVED", Reason.FINDINGS_UNAVAILABLE),
        ("SOMETHING_NEW", Reason.ERROR),
        ("", Reason.ERROR),
    ],
)
def test_final_statuses(status, reason):
    verdict = verdict_for(answer(status, description="ECR says why"))
    assert verdict.reason is reason
    assert verdict.reason.commit_state == "failed"
    assert verdict.remediation


def test_in_progress_is_not_final_and_deciding_it_fails_closed():
    result = classify_response(answer("IN_PROGRESS"))
    assert result.phase is Phase.IN_PROGRESS and result.digest == DIGEST
    assert decide(result, POLICY, TARGET).reason is Reason.ERROR


@pytest.mark.parametrize(
    ("code", "http", "reason"),
    [
        ("ScanNotFoundException", 400, Reason.SCAN_NOT_FOUND),
        ("ImageNotFoundException", 400, Reason.IMAGE_NOT_FOUND),
        ("RepositoryNotFoundException", 400, Reason.REPOSITORY_NOT_FOUND),
        ("AccessDeniedException", 400, Reason.ACCESS_DENIED),
        ("403", 403, Reason.ACCESS_DENIED),
        ("ValidationException", 400, Reason.ERROR),
        ("InvalidParameterException", 400, Reason.ERROR),
        ("SomethingElse", 400, Reason.ERROR),
    ],
)
def test_error_codes(code, http, reason):
    result = classify_error(code, "message", http, "ecr:DescribeImageScanFindings")
    assert result.reason is reason
    assert decide(result, POLICY, TARGET).reason is reason


@pytest.mark.parametrize("code", ["ThrottlingException", "ServerException", "ServiceUnavailable"])
def test_transient_errors_raise(code):
    with pytest.raises(TransientError):
        classify_error(code, "slow down", 400, "ecr:DescribeImageScanFindings")
    with pytest.raises(TransientError):
        classify_error("Whatever", "boom", 503, "ecr:DescribeImageScanFindings")


def test_access_denied_names_the_missing_action():
    msg = (
        "User: arn:aws:sts::123456789012:assumed-role/ci/x is not authorized to perform: "
        "ecr:DescribeImages on resource: arn:aws:ecr:us-east-1:123456789012:repository/app"
    )
    verdict = decide(classify_error("AccessDeniedException", msg, 400, "ecr:DescribeImageScanFindings"), POLICY, TARGET)
    assert "ecr:DescribeImages" in verdict.remediation
    bare = decide(classify_error("403", "", 403, "ecr:DescribeImageScanFindings"), POLICY, TARGET)
    assert "ecr:DescribeImageScanFindings" in bare.remediation


def test_scan_not_found_remediation_is_the_command_that_fixes_it():
    verdict = failed_verdict(Reason.SCAN_NOT_FOUND, TARGET)
    assert "put-image-scanning-configuration --repository-name app" in verdict.remediation
    assert "scanOnPush=true" in verdict.remediation


def test_grace_only_for_not_found_and_only_early():
    not_found = classify_error("ImageNotFoundException", "", 400, "x")
    assert within_grace(not_found, 5, 60) and not within_grace(not_found, 61, 60)
    denied = classify_error("AccessDeniedException", "", 400, "x")
    assert not within_grace(denied, 0, 60)


def test_merge_pages_concatenates_findings_and_keeps_first_page_counts():
    p1 = answer("COMPLETE", {"findings": [basic("CVE-1", "HIGH")], "findingSeverityCounts": {"HIGH": 2}})
    p2 = answer("COMPLETE", {"findings": [basic("CVE-2", "HIGH")]})
    merged = classify_response(merge_pages([p1, p2]))
    assert [f.id for f in merged.findings] == ["CVE-1", "CVE-2"]
    assert decide(merged, POLICY, TARGET).blocking_total == 2


def test_every_reason_has_a_summary_and_failed_reasons_have_remediation():
    for reason in Reason:
        if reason in (Reason.PASSED, Reason.BLOCKED):
            continue
        verdict = failed_verdict(reason, TARGET, status="X")
        assert verdict.summary and verdict.remediation
        assert verdict.reason.commit_state != "success"


def test_refused_assume_role_says_so():
    result = classify_error("AccessDenied", "sts:AssumeRole on arn:aws:iam::1:role/x refused", 403, "sts:AssumeRole")
    verdict = decide(result, POLICY, TARGET)
    assert verdict.reason is Reason.ACCESS_DENIED
    assert "sts:AssumeRole" in verdict.remediation and "role_arn" in verdict.remediation
