"""`check --gitlab-report/--sarif`: both reports against the schemas in docs/schemas, from the core and the CLI."""

from __future__ import annotations

import json
import os
import unicodedata
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft7Validator

from bot.adapters.ecr import EcrApi
from bot.core import gitlab_report, sarif
from bot.core.models import Acceptance, Image, Reason, ScanResult, Severity
from bot.core.policy import Policy, decide, failed_verdict
from bot.core.scan import classify_error, classify_response
from bot.core.security_report import DESCRIPTION_LIMIT, GateRun
from tests import test_cli
from tests.fakes.ecr import DEFAULT_ACCOUNT, basic_finding, enhanced_finding, load_fixture, scan_body
from tests.test_cli import REPO, FakeClock, check
from tests.test_doctor import restricted_credentials

# test_cli's fixtures, used here by name: the same ECR double (its own moto process and region), the fake clock.
double, ecr, clock = test_cli.double, test_cli.ecr, test_cli.clock
ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "docs" / "schemas"
GITLAB_SCHEMA = "container-scanning-report-format-15.x.json"
SARIF_SCHEMA = "sarif-2.1.0.json"
DIGEST = "sha256:" + "ab" * 32
IMAGE = Image(REPO, tag="v1", registry_id=DEFAULT_ACCOUNT, region="eu-west-3")
TODAY = date(2026, 12, 4)
START = datetime(2026, 12, 4, 10, 0, 0, tzinfo=UTC)
BASIC = [
    basic_finding("CVE-2024-6387", "CRITICAL", "openssh-server", "1:9.2p1-2", "1:9.2p1-2+deb12u3", cvss2_score=8.1),
    basic_finding("CVE-2023-44487", "HIGH", "nghttp2", "1.43.0-1", "1.43.0-1+deb11u1"),
    basic_finding("CVE-2024-0003", "MEDIUM", "zlib", "1.2.11"),
    basic_finding("CVE-2024-0004", "LOW", "bash", "5.1"),
    basic_finding("CVE-2024-0005", "INFORMATIONAL", "tar", "1.34"),
    basic_finding("CVE-2024-0006", "UNDEFINED", "gzip", "1.10"),
]
ENHANCED = [
    enhanced_finding("CVE-2024-1001", "CRITICAL", "openssl", "3.0.1", "3.0.13", score=9.8),
    enhanced_finding("CVE-2024-1002", "HIGH", "curl", "7.88.1", status="SUPPRESSED", score=7.5),
    enhanced_finding("CVE-2024-1003", "MEDIUM", "libxml2", "2.9.14", "2.9.14+deb12u1"),
    enhanced_finding("GHSA-abcd-efgh-ijkl", "UNTRIAGED", "requests", "2.0.0"),
]


def schema(name: str) -> Draft7Validator:
    return Draft7Validator(json.loads((SCHEMAS / name).read_text()), format_checker=Draft7Validator.FORMAT_CHECKER)


def errors(document: object, name: str) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in schema(name).iter_errors(document)]


def assert_valid(gitlab: dict[str, Any], log: dict[str, Any]) -> None:
    assert errors(gitlab, GITLAB_SCHEMA) == []
    assert errors(log, SARIF_SCHEMA) == []
    assert_declared(gitlab, json.loads((SCHEMAS / GITLAB_SCHEMA).read_text()))


def assert_declared(document: object, node: dict[str, Any], root: dict[str, Any] | None = None) -> None:
    """GitLab's schema is open (extra keys pass): every key we emit must still be one it declares (no typos)."""
    root = root or node
    if "$ref" in node:
        node = root["definitions"][node["$ref"].rsplit("/", 1)[1]]
    if isinstance(document, dict):
        for key, value in document.items():
            assert key in node.get("properties", {}), f"{key!r} is not declared by the schema"
            assert_declared(value, node["properties"][key], root)
    elif isinstance(document, list):
        for item in document:
            assert_declared(item, node.get("items", {}), root)


def strings(document: object) -> Iterator[str]:
    if isinstance(document, str):
        yield document
    elif isinstance(document, dict):
        for key, value in document.items():
            yield key
            yield from strings(value)
    elif isinstance(document, list):
        for item in document:
            yield from strings(item)


def answer(findings: list[dict[str, Any]], *, enhanced: bool = False, **step: Any) -> ScanResult:
    """The classified answer the ECR double serves for a COMPLETE step with these findings."""
    body = scan_body(
        {"status": "COMPLETE", "enhanced_findings" if enhanced else "findings": findings, **step},
        registry_id=DEFAULT_ACCOUNT,
        repository=REPO,
        image_id={"imageDigest": DIGEST, "imageTag": "v1"},
    )
    return classify_response(body)


def gate_run(scan: ScanResult | None, policy: Policy | None = None, *, reason: Reason | None = None) -> GateRun:
    policy = policy or Policy()
    if reason is None:
        assert scan is not None
        verdict = decide(scan, policy, IMAGE, TODAY)
    else:
        verdict = failed_verdict(reason, IMAGE, detail="what ECR said", status="x")
    return GateRun(IMAGE, verdict, policy, START, START + timedelta(seconds=31), "0.1.0", scan)


def reports(run: GateRun) -> tuple[dict[str, Any], dict[str, Any]]:
    gitlab, log = gitlab_report.render(run), sarif.render(run)
    # What the CLI writes: the documents survive a JSON round trip unchanged.
    assert json.loads(json.dumps(gitlab)) == gitlab and json.loads(json.dumps(log)) == log
    return gitlab, log


# -- the core: what each report says ---------------------------------------------------------------------


def test_the_shipped_schemas_are_valid_draft_07() -> None:
    for name in (GITLAB_SCHEMA, SARIF_SCHEMA):
        Draft7Validator.check_schema(json.loads((SCHEMAS / name).read_text()))


def test_blocked_basic_scan_lists_every_finding_with_gitlab_severities() -> None:
    gitlab, log = reports(gate_run(answer(BASIC)))

    assert_valid(gitlab, log)
    scan = gitlab["scan"]
    assert (scan["status"], scan["type"], scan["scanner"]["id"]) == (
        "success",
        "container_scanning",
        "amazon_ecr_basic",
    )
    assert (scan["start_time"], scan["end_time"]) == ("2026-12-04T10:00:00", "2026-12-04T10:00:31")
    assert scan["messages"][0]["level"] == "info" and scan["messages"][0]["value"].startswith("blocked: 2 blocking")
    vulns = gitlab["vulnerabilities"]
    assert [v["identifiers"][0]["value"] for v in vulns] == [f["name"] for f in BASIC]  # every finding, not 2
    assert [v["severity"] for v in vulns] == ["Critical", "High", "Medium", "Low", "Info", "Unknown"]
    assert len({v["id"] for v in vulns}) == len(vulns)
    first = vulns[0]
    assert first["name"] == "CVE-2024-6387 in openssh-server"
    assert first["solution"] == "Upgrade openssh-server to 1:9.2p1-2+deb12u3"
    assert first["identifiers"][0] == {
        "type": "cve",
        "name": "CVE-2024-6387",
        "value": "CVE-2024-6387",
        "url": "https://cve.mitre.org/cgi-bin/cvename.cgi?name=CVE-2024-6387",
    }
    assert first["location"] == {
        "image": f"{DEFAULT_ACCOUNT}.dkr.ecr.eu-west-3.amazonaws.com/{REPO}:v1",
        "operating_system": "unknown",  # basic findings carry no OS
        "dependency": {"package": {"name": "openssh-server"}, "version": "1:9.2p1-2"},
    }
    assert "solution" not in vulns[2]  # no fixed version named: no advice invented
    assert first["description"].endswith("It blocks the gate.")

    results = log["runs"][0]["results"]
    assert [r["level"] for r in results] == ["error", "error", "note", "note", "note", "note"]
    assert [r["ruleId"] for r in results] == [f["name"] for f in BASIC]
    rules = log["runs"][0]["tool"]["driver"]["rules"]
    assert [rules[r["ruleIndex"]]["id"] for r in results] == [r["ruleId"] for r in results]
    assert rules[0]["properties"]["security-severity"] == "8.1"
    assert "security-severity" not in rules[1]["properties"]  # no CVSS from ECR: none guessed
    assert log["runs"][0]["invocations"][0]["executionSuccessful"] is True


def test_enhanced_findings_suppressed_ones_and_other_ids() -> None:
    gitlab, log = reports(gate_run(answer(ENHANCED, enhanced=True)))

    assert_valid(gitlab, log)
    assert gitlab["scan"]["scanner"]["id"] == "amazon_inspector"
    vulns = gitlab["vulnerabilities"]
    assert [v["severity"] for v in vulns] == ["Critical", "High", "Medium", "Unknown"]  # UNTRIAGED is Unknown
    assert "Amazon Inspector marks it SUPPRESSED: it never blocks." in vulns[1]["description"]
    assert vulns[3]["identifiers"][0]["type"] == "ghsa"
    assert vulns[0]["solution"] == "Upgrade openssl to 3.0.13"
    levels = {r["ruleId"]: r["level"] for r in log["runs"][0]["results"]}
    assert levels == {"CVE-2024-1001": "error", "CVE-2024-1002": "note", "CVE-2024-1003": "note",
                      "GHSA-abcd-efgh-ijkl": "note"}  # fmt: skip


def test_recorded_enhanced_answer_says_no_fix_for_not_available() -> None:
    scan = classify_response(load_fixture("enhanced_complete_high.json"))
    gitlab, log = reports(gate_run(scan))

    assert_valid(gitlab, log)
    (vuln,) = gitlab["vulnerabilities"]
    assert "solution" not in vuln  # fixedInVersion "NotAvailable" is not a version to upgrade to
    assert vuln["location"]["dependency"] == {"package": {"name": "libxml2"}, "version": "2.9.14+dfsg"}
    assert vuln["location"]["operating_system"] == "DEBIAN_12"  # Inspector's resources[].details platform
    assert vuln["links"] == [{"url": "https://security-tracker.debian.org/tracker/CVE-2022-49043"}]
    (result,) = log["runs"][0]["results"]
    assert "no fix listed" in result["message"]["text"] and result["properties"]["standing"] == "blocking"


def test_accepted_risk_is_a_warning_not_an_error() -> None:
    accepted = Acceptance("CVE-2023-44487", "HTTP/2 is off", TODAY + timedelta(days=30), by="@sec")
    policy = Policy(exceptions=(accepted,))
    gitlab, log = reports(gate_run(answer(BASIC[:2]), policy))

    assert_valid(gitlab, log)
    assert [r["level"] for r in log["runs"][0]["results"]] == ["error", "warning"]
    assert log["runs"][0]["results"][1]["message"]["text"].endswith("It does not block the gate: accepted.")
    assert gitlab["vulnerabilities"][1]["description"].endswith("It does not block the gate: accepted.")


def test_a_passed_image_with_no_findings_is_a_successful_scan_of_nothing() -> None:
    gitlab, log = reports(gate_run(answer([])))

    assert_valid(gitlab, log)
    assert gitlab["scan"]["status"] == "success" and gitlab["vulnerabilities"] == []
    assert gitlab["scan"]["messages"][0]["value"].startswith("passed: scan complete")
    run = log["runs"][0]
    assert run["results"] == [] and run["tool"]["driver"]["rules"] == []  # present and empty: analysed, clean
    assert run["invocations"][0] == {
        "executionSuccessful": True,
        "exitCode": 0,
        "exitCodeDescription": "passed",
        "startTimeUtc": "2026-12-04T10:00:00Z",
        "endTimeUtc": "2026-12-04T10:00:31Z",
    }


@pytest.mark.parametrize(
    "scan",
    [
        classify_error("ScanNotFoundException", "Image scan does not exist", 400, "ecr:DescribeImageScanFindings"),
        classify_error("AccessDeniedException", "not authorized to perform: ecr:DescribeImageScanFindings", 400, ""),
        None,  # a timeout: the last answer was IN_PROGRESS
    ],
    ids=["scan_not_found", "access_denied", "timeout"],
)
def test_failure_verdicts_are_failed_scans_never_empty_ones(scan: ScanResult | None) -> None:
    reason = scan.reason if scan is not None and scan.reason else Reason.TIMEOUT
    run = gate_run(scan, reason=reason)
    gitlab, log = reports(run)

    assert_valid(gitlab, log)
    assert gitlab["scan"]["status"] == "failure" and gitlab["vulnerabilities"] == []
    assert gitlab["scan"]["scanner"]["id"] == "amazon_ecr"
    (message,) = gitlab["scan"]["messages"]
    assert message["level"] == "fatal" and message["value"].startswith(f"{reason.value}: ")
    assert "what to do: " in message["value"]
    sarif_run = log["runs"][0]
    assert "results" not in sarif_run  # absent, not []: no code-scanning UI may read it as "all fixed"
    (invocation,) = sarif_run["invocations"]
    assert invocation["executionSuccessful"] is False and invocation["exitCode"] == reason.exit_code
    (note,) = invocation["toolExecutionNotifications"]
    assert note["level"] == "error" and note["descriptor"] == {"id": reason.value}
    assert note["message"]["text"] == message["value"]


def test_ids_and_fingerprints_are_stable_across_runs_and_differ_per_image() -> None:
    first = gate_run(answer(ENHANCED, enhanced=True))  # the builder gives each finding a new ARN and time
    again = gate_run(answer(ENHANCED, enhanced=True))
    later = GateRun(IMAGE, again.verdict, again.policy, START + timedelta(days=1), START + timedelta(days=1),
                    "0.2.0", again.scan)  # fmt: skip
    ids = [v["id"] for v in gitlab_report.render(first)["vulnerabilities"]]
    assert ids == [v["id"] for v in gitlab_report.render(later)["vulnerabilities"]]

    def prints(run: GateRun) -> list[dict[str, str]]:
        return [r["partialFingerprints"] for r in sarif.render(run)["runs"][0]["results"]]

    assert prints(first) == prints(later)
    other = GateRun(Image(REPO, tag="v2", registry_id=DEFAULT_ACCOUNT, region="eu-west-3"), *(
        first.verdict, first.policy, START, START, "0.1.0", first.scan))  # fmt: skip
    assert not set(ids) & {v["id"] for v in gitlab_report.render(other)["vulnerabilities"]}
    assert prints(other) == prints(first)  # the next build's same finding is the same code-scanning alert


def test_a_finding_listed_twice_keeps_unique_ids() -> None:
    twice = [BASIC[1], BASIC[1], basic_finding("CVE-2023-44487", "HIGH", "nghttp2", "1.52.0")]
    gitlab, log = reports(gate_run(answer(twice)))

    assert_valid(gitlab, log)
    ids = [v["id"] for v in gitlab["vulnerabilities"]]
    assert len(ids) == 3 == len(set(ids))
    assert len(log["runs"][0]["tool"]["driver"]["rules"]) == 1  # one rule per distinct finding id


@pytest.mark.parametrize(
    ("severity", "expected"),
    [("CRITICAL", "Critical"), ("HIGH", "High"), ("MEDIUM", "Medium"), ("LOW", "Low"),
     ("INFORMATIONAL", "Info"), ("UNTRIAGED", "Unknown"), ("UNDEFINED", "Unknown"), ("SEVERE", "Unknown")],
)  # fmt: skip
def test_every_ecr_severity_maps_to_a_gitlab_one(severity: str, expected: str) -> None:
    finding = {**basic_finding("CVE-2024-0001", "LOW", "zlib", "1"), "severity": severity}
    gitlab, _ = reports(gate_run(answer([finding])))
    assert gitlab["vulnerabilities"][0]["severity"] == expected
    assert set(gitlab_report.SEVERITY) == set(Severity)


def test_untrusted_ecr_text_is_bounded_and_the_json_stays_valid() -> None:
    hostile = "\x1b[31mred\x00 \u202eevil\u200b\r\n/unassign @all " + "A" * 2_000_000
    findings = [
        basic_finding("CVE-2024-0007\x07" + "9" * 500, "CRITICAL", "pkg\x1b" + "p" * 100_000, "1\x00" * 1000,
                      description=hostile, uri="javascript:alert(1)"),
        enhanced_finding("CVE-2024-0008", "HIGH", "lib", "1", description=hostile),
    ]  # fmt: skip
    basic, enhanced = answer(findings[:1]), answer(findings[1:], enhanced=True)
    for scan in (basic, enhanced):
        gitlab, log = reports(gate_run(scan))
        assert_valid(gitlab, log)
        text = json.dumps(gitlab) + json.dumps(log)
        assert len(text) < 60_000  # megabytes in, a few kilobytes out
        for value in [*strings(gitlab), *strings(log)]:
            bad = [c for c in value if unicodedata.category(c) in ("Cc", "Cf") and c != "\n"]
            assert not bad, f"control or format characters {bad[:3]} in {value[:60]!r}"
        vuln = gitlab["vulnerabilities"][0]
        assert len(vuln["description"]) <= DESCRIPTION_LIMIT + 100 and len(vuln["name"]) <= 255
        assert "javascript" not in text  # only allow-listed advisory URLs become links


def test_counted_but_unlisted_findings_are_a_warning_in_both() -> None:
    scan = classify_response(load_fixture("basic_complete_high.json"))  # counts 10 findings, lists 1
    gitlab, log = reports(gate_run(scan))

    assert_valid(gitlab, log)
    assert gitlab["scan"]["messages"][1] == {
        "level": "warn",
        "value": "ECR counted 9 findings it did not list; they are not in this report",
    }
    (note,) = log["runs"][0]["invocations"][0]["toolExecutionNotifications"]
    assert note["level"] == "warning" and "9 findings" in note["message"]["text"]


def test_the_sarif_path_is_the_physical_location_and_the_image_the_logical_one() -> None:
    log = sarif.render(gate_run(answer(BASIC[:1])), "docker/app one/Dockerfile")
    (location,) = log["runs"][0]["results"][0]["locations"]
    assert location["physicalLocation"] == {
        "artifactLocation": {"uri": "docker/app%20one/Dockerfile"},
        "region": {"startLine": 1},
    }
    name = f"{DEFAULT_ACCOUNT}.dkr.ecr.eu-west-3.amazonaws.com/{REPO}:v1"
    assert location["logicalLocations"] == [{"name": name, "fullyQualifiedName": f"{name}@{DIGEST}", "kind": "module"}]


# -- the schemas can say no ------------------------------------------------------------------------------


def without(document: dict[str, Any], *path: str | int) -> dict[str, Any]:
    copy = json.loads(json.dumps(document))
    node: Any = copy
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return copy


def with_value(document: dict[str, Any], value: object, *path: str | int) -> dict[str, Any]:
    copy = json.loads(json.dumps(document))
    node: Any = copy
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return copy


def test_the_gitlab_schema_rejects_a_missing_required_field_or_a_bad_value() -> None:
    gitlab, _ = reports(gate_run(answer(BASIC[:2])))
    assert errors(gitlab, GITLAB_SCHEMA) == []
    for path in [
        ("scan",),
        ("scan", "status"),
        ("scan", "analyzer", "vendor"),
        ("vulnerabilities", 0, "id"),
        ("vulnerabilities", 0, "identifiers"),
        ("vulnerabilities", 0, "location", "operating_system"),
    ]:
        assert errors(without(gitlab, *path), GITLAB_SCHEMA), f"{path} removed, still valid"
    for value, path in [
        ("HIGH", ("vulnerabilities", 0, "severity")),  # ECR's spelling is not GitLab's
        ("Severe", ("vulnerabilities", 1, "severity")),
        ("2026-12-04 10:00:00", ("scan", "start_time")),
        ("2026-12-04T10:00:00Z", ("scan", "end_time")),  # GitLab's format has no offset
        ("passed", ("scan", "status")),
        ("sast", ("scan", "type")),
        ("14.1.2", ("version",)),
        ([], ("vulnerabilities", 0, "identifiers")),
        ("x" * 256, ("vulnerabilities", 0, "name")),
    ]:
        assert errors(with_value(gitlab, value, *path), GITLAB_SCHEMA), f"{path} = {value!r}, still valid"


def test_the_sarif_schema_rejects_a_missing_required_field_or_a_bad_value() -> None:
    _, log = reports(gate_run(answer(BASIC[:2])))
    failed = sarif.render(gate_run(None, reason=Reason.TIMEOUT))
    assert errors(log, SARIF_SCHEMA) == [] and errors(failed, SARIF_SCHEMA) == []
    for document, path in [(log, ("runs",)), (log, ("version",)), (log, ("runs", 0, "tool")),
                           (log, ("runs", 0, "tool", "driver", "name")), (log, ("runs", 0, "results", 0, "message")),
                           (log, ("runs", 0, "tool", "driver", "rules", 0, "id")),
                           (failed, ("runs", 0, "invocations", 0, "executionSuccessful"))]:  # fmt: skip
        assert errors(without(document, *path), SARIF_SCHEMA), f"{path} removed, still valid"
    for document, value, path in [
        (log, "fatal", ("runs", 0, "results", 0, "level")),
        (log, "2.0.0", ("version",)),
        (log, -2, ("runs", 0, "results", 0, "ruleIndex")),
        (log, 0, ("runs", 0, "results", 0, "locations", 0, "physicalLocation", "region", "startLine")),
        (log, {"text": "t", "extra": 1}, ("runs", 0, "results", 0, "message")),  # closed objects
        (failed, "yes", ("runs", 0, "invocations", 0, "executionSuccessful")),
        (failed, "04/12/2026", ("runs", 0, "invocations", 0, "startTimeUtc")),
    ]:
        assert errors(with_value(document, value, *path), SARIF_SCHEMA), f"{path} = {value!r}, still valid"


# -- the CLI: the files, on every way `check` ends, and exit codes unchanged --------------------------------


def with_reports(tmp_path: Path, *extra: str) -> tuple[str, ...]:
    return ("--gitlab-report", str(tmp_path / "gl.json"), "--sarif", str(tmp_path / "out.sarif"), *extra)


def read_reports(tmp_path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    gitlab = json.loads((tmp_path / "gl.json").read_text())
    log = json.loads((tmp_path / "out.sarif").read_text())
    assert_valid(gitlab, log)
    assert not list(tmp_path.glob("*.tmp"))  # written whole, then renamed
    return gitlab, log


def same_exit_with_and_without_reports(clock: FakeClock, tmp_path: Path, *args: str) -> int:
    code = check(clock, *args)
    assert check(clock, *args, *with_reports(tmp_path)) == code
    return code


def test_cli_blocked_basic_image_writes_both_reports_with_every_finding(ecr, clock, tmp_path) -> None:
    digest = ecr.push_image(REPO, "r1")
    ecr.script(REPO, tag="r1", steps=[{"status": "IN_PROGRESS"}, {"status": "COMPLETE", "findings": BASIC}])

    code = check(clock, "--repository", REPO, "--tag", "r1", *with_reports(tmp_path, "--sarif-path", "app/Dockerfile"))

    assert code == 1
    gitlab, log = read_reports(tmp_path)
    assert gitlab["scan"]["status"] == "success"
    assert [v["identifiers"][0]["value"] for v in gitlab["vulnerabilities"]] == [f["name"] for f in BASIC]
    assert gitlab["vulnerabilities"][0]["location"]["image"] == f"{REPO}:r1"  # the caller's own registry
    assert gitlab["scan"]["analyzer"]["version"] == "0.1.0"
    run = log["runs"][0]
    assert [r["level"] for r in run["results"]].count("error") == 2
    assert {r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for r in run["results"]} == {
        "app/Dockerfile"
    }
    assert run["results"][0]["locations"][0]["logicalLocations"][0]["fullyQualifiedName"] == f"{REPO}:r1@{digest}"
    assert run["invocations"][0]["exitCode"] == code

    assert check(clock, "--repository", REPO, "--tag", "r1", *with_reports(tmp_path)) == 1
    again, _ = read_reports(tmp_path)
    assert [v["id"] for v in again["vulnerabilities"]] == [v["id"] for v in gitlab["vulnerabilities"]]


def test_cli_enhanced_image_and_exit_code_unchanged(ecr, clock, tmp_path) -> None:
    ecr.push_image(REPO, "r2")
    ecr.script(REPO, tag="r2", steps=[{"status": "COMPLETE", "enhanced_findings": ENHANCED}])

    assert same_exit_with_and_without_reports(clock, tmp_path, "--repository", REPO, "--tag", "r2") == 1
    gitlab, log = read_reports(tmp_path)
    assert gitlab["scan"]["scanner"]["id"] == "amazon_inspector"
    assert len(gitlab["vulnerabilities"]) == len(log["runs"][0]["results"]) == len(ENHANCED)


def test_cli_passed_image_with_zero_findings(ecr, clock, tmp_path, capsys) -> None:
    ecr.push_image(REPO, "r3")
    ecr.script(REPO, tag="r3", steps=[{"status": "COMPLETE", "findings": []}])

    assert same_exit_with_and_without_reports(clock, tmp_path, "--repository", REPO, "--tag", "r3", "--json") == 0
    gitlab, log = read_reports(tmp_path)
    assert gitlab["scan"]["status"] == "success" and gitlab["vulnerabilities"] == []
    assert log["runs"][0]["results"] == []
    outputs = capsys.readouterr().out.strip().splitlines()
    assert [json.loads(line)["reason"] for line in outputs] == ["passed", "passed"]  # stdout still one object a run


def scan_not_found(ecr) -> tuple[str, ...]:
    ecr.create_repository("noscan", scan_on_push=False)
    ecr.push_image("noscan", "r4")
    return ("--repository", "noscan", "--tag", "r4")


def access_denied(ecr) -> tuple[str, ...]:
    ecr.push_image(REPO, "r5")
    ecr.script(REPO, tag="r5", steps=[{"error": "AccessDeniedException"}])
    return ("--repository", REPO, "--tag", "r5")


def timeout(ecr) -> tuple[str, ...]:
    ecr.push_image(REPO, "r6")
    ecr.script(REPO, tag="r6", steps=[{"status": "IN_PROGRESS"}])
    return ("--repository", REPO, "--tag", "r6", "--timeout", "60")


@pytest.mark.parametrize(
    ("setup", "reason"),
    [(scan_not_found, Reason.SCAN_NOT_FOUND), (access_denied, Reason.ACCESS_DENIED), (timeout, Reason.TIMEOUT)],
    ids=["scan_not_found", "access_denied", "timeout"],
)
def test_cli_failure_verdicts_write_failed_reports(ecr, clock, tmp_path, setup, reason: Reason) -> None:
    args = setup(ecr)

    assert same_exit_with_and_without_reports(clock, tmp_path, *args) == reason.exit_code
    gitlab, log = read_reports(tmp_path)
    assert gitlab["scan"]["status"] == "failure" and gitlab["vulnerabilities"] == []
    assert gitlab["scan"]["messages"][0]["value"].startswith(f"{reason.value}: ")
    assert "results" not in log["runs"][0]
    assert log["runs"][0]["invocations"][0]["executionSuccessful"] is False


def test_cli_access_denied_by_moto_iam_writes_a_failed_report(ecr, clock, tmp_path, monkeypatch) -> None:
    ecr.push_image(REPO, "r7")
    with restricted_credentials(ecr, monkeypatch, ["ecr:DescribeImages"]):
        assert check(clock, "--repository", REPO, "--tag", "r7", *with_reports(tmp_path)) == 3
    gitlab, _ = read_reports(tmp_path)
    assert "ecr:DescribeImageScanFindings" in gitlab["scan"]["messages"][0]["value"]


def test_cli_crash_still_writes_failed_reports_without_the_error_text(ecr, clock, tmp_path, monkeypatch) -> None:
    def boom(self, image, page_size=1000):
        raise RuntimeError("kaput s3cr3t-token-value")

    monkeypatch.setattr(EcrApi, "scan_findings", boom)
    (tmp_path / "gl.json").write_text('{"stale": true}')  # a retried job's old file is replaced, not kept

    assert check(clock, "--repository", REPO, "--tag", "v1", *with_reports(tmp_path)) == 5
    gitlab, log = read_reports(tmp_path)
    assert gitlab["scan"]["status"] == "failure" and gitlab["vulnerabilities"] == []
    assert (
        "error: " in gitlab["scan"]["messages"][0]["value"] and "RuntimeError" in gitlab["scan"]["messages"][0]["value"]
    )
    for path in (tmp_path / "gl.json", tmp_path / "out.sarif"):
        assert "s3cr3t" not in path.read_text()
    assert log["runs"][0]["invocations"][0]["exitCode"] == 5


def test_cli_config_error_writes_failed_reports(ecr, clock, tmp_path, capsys) -> None:
    assert check(clock, "--repository", REPO, *with_reports(tmp_path)) == 3
    gitlab, log = read_reports(tmp_path)
    value = gitlab["scan"]["messages"][0]["value"]
    assert value.startswith("config_error: ") and "--tag (or IMAGE_TAG) or --digest is required" in value
    assert log["runs"][0]["invocations"][0]["exitCode"] == 3
    assert ecr.calls() == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sarif-path", "/etc/Dockerfile"], "--sarif-path '/etc/Dockerfile': give a file path relative"),
        (["--sarif-path", "../Dockerfile"], "--sarif-path '../Dockerfile'"),
        (["--sarif-path", "a\\b"], "--sarif-path 'a\\\\b'"),
        (["--sarif", "{tmp}/same.json", "--gitlab-report", "{tmp}/same.json"], "must name different files"),
    ],
)
def test_cli_bad_report_arguments_exit_3(ecr, clock, tmp_path, capsys, args: list[str], message: str) -> None:
    assert check(clock, "--repository", REPO, "--tag", "v1", *(a.format(tmp=tmp_path) for a in args)) == 3
    assert message in capsys.readouterr().err
    assert ecr.calls() == []


def test_cli_without_the_flags_writes_no_report(ecr, clock, tmp_path) -> None:
    ecr.push_image(REPO, "r8")
    ecr.script(REPO, tag="r8", steps=[{"status": "COMPLETE", "findings": BASIC[:1]}])
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert check(clock, "--repository", REPO, "--tag", "r8") == 1
    finally:
        os.chdir(cwd)
    assert list(tmp_path.iterdir()) == []
