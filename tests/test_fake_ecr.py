"""The ECR double answers real boto3 over HTTP the way ECR would: timelines, errors, pages, moto underneath."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.exceptions import ClientError, ReadTimeoutError

from tests.fakes.ecr import (
    FIXTURES_DIR,
    EcrControl,
    EcrDouble,
    basic_finding,
    enhanced_finding,
    load_fixture,
    normalize_steps,
)

OP = "DescribeImageScanFindings"
REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def double() -> Iterator[EcrDouble]:
    # Its own double, not conftest's session one: a Celery worker polling that one would add calls here.
    with EcrDouble() as running:
        yield running


@pytest.fixture()
def ecr_double(double: EcrDouble) -> Iterator[EcrDouble]:
    double.reset()  # scripts and the call log; each test uses its own repository in moto
    yield double


@pytest.fixture()
def repo(ecr_double: EcrDouble, request: pytest.FixtureRequest) -> str:
    name = "fake-ecr-" + re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:200]
    ecr_double.create_repository(name)
    return name


def scan(client, repository: str, **image_id: str) -> dict:
    answer = client.describe_image_scan_findings(repositoryName=repository, imageId=image_id)
    answer.pop("ResponseMetadata")
    return answer


def error_of(call) -> tuple[str, str, int]:
    with pytest.raises(ClientError) as raised:
        call()
    response = raised.value.response
    return response["Error"]["Code"], response["Error"]["Message"], response["ResponseMetadata"]["HTTPStatusCode"]


def test_timeline_in_progress_three_times_then_complete(ecr_double: EcrDouble, repo: str) -> None:
    digest = ecr_double.push_image(repo, "v1")
    returned = ecr_double.script(
        repo,
        tag="v1",
        steps=[
            {"status": "IN_PROGRESS", "repeat": 3},
            {"status": "COMPLETE", "findings": [basic_finding("CVE-2023-44487", "HIGH", "nghttp2", "1.43.0-1")]},
        ],
    )
    assert returned == digest
    client = ecr_double.client()

    answers = [scan(client, repo, imageTag="v1") for _ in range(5)]

    assert [a["imageScanStatus"]["status"] for a in answers] == ["IN_PROGRESS"] * 3 + ["COMPLETE"] * 2
    for answer in answers[:3]:
        assert "imageScanFindings" not in answer
        assert answer["imageId"] == {"imageDigest": digest, "imageTag": "v1"}
        assert answer["registryId"] == "123456789012" and answer["repositoryName"] == repo
    done = answers[3]
    assert done["imageScanStatus"]["description"] == "The scan was completed successfully."
    assert done["imageScanFindings"]["findingSeverityCounts"] == {"HIGH": 1}
    assert done["imageScanFindings"]["findings"][0]["name"] == "CVE-2023-44487"
    assert [c.step for c in ecr_double.calls(op=OP, repository=repo)] == [0, 1, 2, 3, 3]
    # A repeated COMPLETE is the same scan: its completion time does not move.
    assert answers[4]["imageScanFindings"]["imageScanCompletedAt"] == done["imageScanFindings"]["imageScanCompletedAt"]


def test_counts_are_computed_with_absent_keys_given_or_left_out(ecr_double: EcrDouble, repo: str) -> None:
    ecr_double.push_image(repo, "v1")
    findings = [
        basic_finding("CVE-1", "CRITICAL", "a", "1"),
        basic_finding("CVE-2", "LOW", "b", "1"),
        basic_finding("CVE-3", "LOW", "c", "1"),
    ]
    ecr_double.script(
        repo,
        tag="v1",
        steps=[
            {"status": "COMPLETE", "findings": findings},
            {"status": "COMPLETE", "findings": findings, "counts": {"MEDIUM": 7}},
            {"status": "COMPLETE", "findings": [], "counts": None},
            {"status": "COMPLETE"},
        ],
    )
    client = ecr_double.client()

    computed, given, omitted, clean = (scan(client, repo, imageTag="v1") for _ in range(4))

    assert computed["imageScanFindings"]["findingSeverityCounts"] == {"CRITICAL": 1, "LOW": 2}
    assert given["imageScanFindings"]["findingSeverityCounts"] == {"MEDIUM": 7}
    assert "findingSeverityCounts" not in omitted["imageScanFindings"]
    assert clean["imageScanFindings"]["findings"] == []
    assert clean["imageScanFindings"]["findingSeverityCounts"] == {}


def test_complete_without_a_findings_object(ecr_double: EcrDouble, repo: str) -> None:
    ecr_double.push_image(repo, "v1")
    ecr_double.script(repo, tag="v1", steps=[{"status": "COMPLETE", "no_findings_object": True}])

    answer = scan(ecr_double.client(), repo, imageTag="v1")

    assert answer["imageScanStatus"]["status"] == "COMPLETE"
    assert "imageScanFindings" not in answer


@pytest.mark.parametrize(
    ("status", "description"),
    [
        ("FAILED", "layer unreadable"),
        ("UNSUPPORTED_IMAGE", "UnsupportedImageError: The operating system and/or package manager are not supported."),
        ("ACTIVE", "Continuous scan is selected for image."),
        ("PENDING", None),
        ("SCAN_ELIGIBILITY_EXPIRED", None),
        ("FINDINGS_UNAVAILABLE", None),
        ("LIMIT_EXCEEDED", None),
        ("IMAGE_ARCHIVED", None),
    ],
)
def test_other_statuses(ecr_double: EcrDouble, repo: str, status: str, description: str | None) -> None:
    ecr_double.push_image(repo, "v1")
    step = {"status": status, **({"description": description} if status == "FAILED" else {})}
    ecr_double.script(repo, tag="v1", steps=[step])

    answer = scan(ecr_double.client(), repo, imageTag="v1")

    assert answer["imageScanStatus"].get("description") == description
    assert answer["imageScanStatus"]["status"] == status
    assert "imageScanFindings" not in answer


def test_enhanced_answer(ecr_double: EcrDouble, repo: str) -> None:
    ecr_double.push_image(repo, "v1")
    findings = [
        enhanced_finding("CVE-2022-49043", "HIGH", "libxml2", "2.9.14+dfsg", score=8.1),
        enhanced_finding("CVE-2024-0001", "CRITICAL", "openssl", "3.0.1", fixed="3.0.2", status="SUPPRESSED"),
        enhanced_finding("CVE-2024-0002", "UNTRIAGED", "zlib", "1.2"),
    ]
    ecr_double.script(repo, tag="v1", steps=[{"status": "ACTIVE", "enhanced_findings": findings}])

    answer = scan(ecr_double.client(), repo, imageTag="v1")

    result = answer["imageScanFindings"]
    assert "findings" not in result
    assert result["findingSeverityCounts"] == {"HIGH": 1, "CRITICAL": 1, "UNTRIAGED": 1}
    first, second, _ = result["enhancedFindings"]
    assert first["packageVulnerabilityDetails"]["vulnerablePackages"][0]["fixedInVersion"] == "NotAvailable"
    assert first["fixAvailable"] == "NO" and first["score"] == 8.1 and first["status"] == "ACTIVE"
    assert second["fixAvailable"] == "YES" and second["status"] == "SUPPRESSED"
    assert second["packageVulnerabilityDetails"]["vulnerabilityId"] == "CVE-2024-0001"
    assert second["packageVulnerabilityDetails"]["vulnerablePackages"][0]["fixedInVersion"] == "3.0.2"


def test_throttling_surfaces_as_its_code_then_the_timeline_goes_on(ecr_double: EcrDouble, repo: str) -> None:
    ecr_double.push_image(repo, "v1")
    ecr_double.script(
        repo,
        tag="v1",
        steps=[{"error": "ThrottlingException", "http": 400, "message": "Rate exceeded"}, {"status": "COMPLETE"}],
    )
    client = ecr_double.client()

    code, message, http = error_of(lambda: scan(client, repo, imageTag="v1"))

    assert (code, message, http) == ("ThrottlingException", "Rate exceeded", 400)
    assert scan(client, repo, imageTag="v1")["imageScanStatus"]["status"] == "COMPLETE"
    assert [c.error for c in ecr_double.calls(op=OP)] == ["ThrottlingException", None]


def test_access_denied_as_real_ecr_sends_it(ecr_double: EcrDouble, repo: str) -> None:
    ecr_double.push_image(repo, "v1")
    ecr_double.script(repo, steps=[{"error": "AccessDeniedException"}])  # no tag or digest: the whole repository

    code, message, http = error_of(lambda: scan(ecr_double.client(), repo, imageTag="v1"))

    assert (code, http) == ("AccessDeniedException", 400)
    assert message.startswith("User: arn:aws:sts::123456789012:assumed-role/ci/x is not authorized to perform: ")
    assert f"ecr:{OP} on resource: arn:aws:ecr:us-east-1:123456789012:repository/{repo} because" in message


@pytest.mark.parametrize(
    ("code", "http", "message_part"),
    [
        ("ServerException", 500, "An internal server error has occured"),
        (
            "ScanNotFoundException",
            400,
            "Image scan does not exist for the image with '{imageDigest:'null', imageTag:'v1'}'",
        ),
        ("ImageNotFoundException", 400, "The image with imageId {imageDigest:'null', imageTag:'v1'} does not exist"),
        ("RepositoryNotFoundException", 400, "does not exist in the registry with id '123456789012'"),
    ],
)
def test_error_steps_parse_to_their_codes(
    ecr_double: EcrDouble, repo: str, code: str, http: int, message_part: str
) -> None:
    ecr_double.script(repo, tag="v1", steps=[{"error": code}])

    got_code, message, got_http = error_of(lambda: scan(ecr_double.client(), repo, imageTag="v1"))

    assert (got_code, got_http) == (code, http)
    assert message_part in message


def test_tag_script_answers_calls_by_digest_on_one_timeline(ecr_double: EcrDouble, repo: str) -> None:
    digest = ecr_double.push_image(repo, "v1")
    ecr_double.script(repo, tag="v1", steps=[{"status": "IN_PROGRESS"}, {"status": "COMPLETE"}])
    client = ecr_double.client()

    by_tag = scan(client, repo, imageTag="v1")
    by_digest = scan(client, repo, imageDigest=by_tag["imageId"]["imageDigest"])

    assert by_tag["imageScanStatus"]["status"] == "IN_PROGRESS"
    assert by_digest["imageScanStatus"]["status"] == "COMPLETE"
    assert by_digest["imageId"] == {"imageDigest": digest}  # ECR echoes a digest-only ask
    assert [c.image for c in ecr_double.calls(op=OP)] == ["v1", digest]


def test_tag_script_registered_before_the_push_answers_by_digest(ecr_double: EcrDouble, repo: str) -> None:
    assert ecr_double.script(repo, tag="v1", steps=[{"status": "COMPLETE"}]) is None  # not pushed yet
    digest = ecr_double.push_image(repo, "v1")

    answer = scan(ecr_double.client(), repo, imageDigest=digest)

    assert answer["imageScanStatus"]["status"] == "COMPLETE"
    assert [c.answered_by for c in ecr_double.calls(op=OP)] == ["script"]


def test_image_moto_never_saw_gets_a_stable_digest(ecr_double: EcrDouble, repo: str) -> None:
    ecr_double.script(repo, tag="ghost", steps=[{"status": "IN_PROGRESS"}, {"status": "COMPLETE"}])
    client = ecr_double.client()

    first = scan(client, repo, imageTag="ghost")
    second = scan(client, repo, imageDigest=first["imageId"]["imageDigest"])

    assert first["imageId"]["imageDigest"].startswith("sha256:")
    assert second["imageScanStatus"]["status"] == "COMPLETE"


def test_pagination_with_the_boto3_paginator(ecr_double: EcrDouble, repo: str) -> None:
    ecr_double.push_image(repo, "v1")
    findings = [basic_finding(f"CVE-2024-000{i}", "MEDIUM", f"pkg{i}", "1.0") for i in range(5)]
    ecr_double.script(repo, tag="v1", steps=[{"status": "COMPLETE", "findings": findings}, {"status": "IN_PROGRESS"}])
    client = ecr_double.client()

    pages = list(
        client.get_paginator("describe_image_scan_findings").paginate(
            repositoryName=repo, imageId={"imageTag": "v1"}, PaginationConfig={"PageSize": 2}
        )
    )

    assert [len(p["imageScanFindings"]["findings"]) for p in pages] == [2, 2, 1]
    names = [f["name"] for p in pages for f in p["imageScanFindings"]["findings"]]
    assert names == [f["name"] for f in findings]
    assert pages[0]["imageScanFindings"]["findingSeverityCounts"] == {"MEDIUM": 5}
    assert "nextToken" not in pages[-1]
    calls = ecr_double.calls(op=OP)
    assert [(c.next_token, c.step) for c in calls] == [(False, 0), (True, 0), (True, 0)]
    # The paginated read was one poll: the next poll gets the next step.
    assert scan(client, repo, imageTag="v1")["imageScanStatus"]["status"] == "IN_PROGRESS"


def test_pages_of_100_by_default(ecr_double: EcrDouble, repo: str) -> None:
    ecr_double.push_image(repo, "v1")
    findings = [basic_finding(f"CVE-2024-{i:04}", "LOW", "p", "1") for i in range(150)]
    ecr_double.script(repo, tag="v1", steps=[{"status": "COMPLETE", "findings": findings}])
    client = ecr_double.client()

    first = scan(client, repo, imageTag="v1")
    merged = (
        client.get_paginator("describe_image_scan_findings")
        .paginate(repositoryName=repo, imageId={"imageTag": "v1"})
        .build_full_result()
    )

    assert len(first["imageScanFindings"]["findings"]) == 100 and first["nextToken"]
    assert len(merged["imageScanFindings"]["findings"]) == 150


def test_stale_next_token_and_bad_page_size_are_refused(ecr_double: EcrDouble, repo: str) -> None:
    ecr_double.push_image(repo, "v1")
    findings = [basic_finding(f"CVE-2024-000{i}", "LOW", "p", "1") for i in range(3)]
    ecr_double.script(repo, tag="v1", steps=[{"status": "COMPLETE", "findings": findings}])
    client = ecr_double.client()
    token = client.describe_image_scan_findings(repositoryName=repo, imageId={"imageTag": "v1"}, maxResults=1)[
        "nextToken"
    ]

    too_big = error_of(
        lambda: client.describe_image_scan_findings(repositoryName=repo, imageId={"imageTag": "v1"}, maxResults=1001)
    )
    ecr_double.reset()  # the answer the token points into is gone
    stale = error_of(
        lambda: client.describe_image_scan_findings(repositoryName=repo, imageId={"imageTag": "v1"}, nextToken=token)
    )

    assert too_big[0] == stale[0] == "InvalidParameterException"


def test_enhanced_findings_page_too(ecr_double: EcrDouble, repo: str) -> None:
    ecr_double.push_image(repo, "v1")
    findings = [enhanced_finding(f"CVE-2024-000{i}", "HIGH", "p", "1") for i in range(3)]
    ecr_double.script(repo, tag="v1", steps=[{"status": "COMPLETE", "enhanced_findings": findings}])

    merged = (
        ecr_double.client()
        .get_paginator("describe_image_scan_findings")
        .paginate(repositoryName=repo, imageId={"imageTag": "v1"}, PaginationConfig={"PageSize": 1})
        .build_full_result()
    )

    assert [
        f["packageVulnerabilityDetails"]["vulnerabilityId"] for f in merged["imageScanFindings"]["enhancedFindings"]
    ] == [f"CVE-2024-000{i}" for i in range(3)]


def test_unscripted_calls_fall_through_to_moto(ecr_double: EcrDouble, repo: str) -> None:
    ecr_double.push_image(repo, "v1")
    client = ecr_double.client()

    code, message, _ = error_of(lambda: scan(client, repo, imageTag="v1"))
    ecr_double.start_scan(repo, "v1")
    answer = scan(client, repo, imageTag="v1")

    assert code == "ScanNotFoundException" and "imageTag:'v1'" in message
    assert answer["imageScanStatus"]["status"] == "COMPLETE"
    assert answer["imageScanFindings"]["findings"][0]["name"] == "CVE-9999-9999"  # moto's canned result
    assert [(c.answered_by, c.error) for c in ecr_double.calls(op=OP)] == [
        ("moto", "ScanNotFoundException"),
        ("moto", None),
    ]


def test_moto_step_and_injected_results(ecr_double: EcrDouble, repo: str) -> None:
    digest = ecr_double.push_image(repo, "v1")
    ecr_double.start_scan(repo, "v1")
    ecr_double.inject_results(
        repo, {"status": "COMPLETE", "findings": [basic_finding("CVE-2020-1", "LOW", "x", "1")]}, tag="v1"
    )
    ecr_double.script(repo, tag="v1", steps=[{"status": "IN_PROGRESS"}, {"moto": True}])
    client = ecr_double.client()

    first, second = scan(client, repo, imageTag="v1"), scan(client, repo, imageTag="v1")

    assert first["imageScanStatus"]["status"] == "IN_PROGRESS"
    assert second["imageScanFindings"]["findings"][0]["name"] == "CVE-2020-1"
    assert second["imageId"] == {"imageTag": "v1", "imageDigest": digest}
    assert [(c.answered_by, c.step) for c in ecr_double.calls(op=OP)] == [("script", 0), ("moto", 1)]


def test_call_log_counts_by_operation_and_repository(ecr_double: EcrDouble, repo: str) -> None:
    ecr_double.create_repository(f"{repo}-other")
    ecr_double.push_image(repo, "v1")
    ecr_double.push_image(f"{repo}-other", "v1")
    ecr_double.script(repo, tag="v1", steps=[{"status": "IN_PROGRESS"}])
    client = ecr_double.client()
    for _ in range(3):
        scan(client, repo, imageTag="v1")
    client.describe_images(repositoryName=repo)
    error_of(lambda: scan(client, f"{repo}-other", imageTag="v1"))

    assert len(ecr_double.calls()) == 5  # the set-up helpers above went straight to moto, uncounted
    assert len(ecr_double.calls(op=OP)) == 4
    assert len(ecr_double.calls(op=OP, repository=repo)) == 3
    assert [c.op for c in ecr_double.calls(repository=repo)] == [OP, OP, OP, "DescribeImages"]
    times = [c.time for c in ecr_double.calls()]
    assert times == sorted(times)
    assert ecr_double.clear_calls() == 5 and ecr_double.calls() == []


def test_slow_step_times_the_client_out(ecr_double: EcrDouble, repo: str) -> None:
    ecr_double.script(repo, tag="v1", steps=[{"delay_s": 1.0, "status": "COMPLETE"}, {"status": "COMPLETE"}])
    client = ecr_double.client(read_timeout=0.2, connect_timeout=1)

    before = time.time()
    with pytest.raises(ReadTimeoutError):
        scan(client, repo, imageTag="v1")
    assert scan(client, repo, imageTag="v1")["imageScanStatus"]["status"] == "COMPLETE"
    deadline = time.monotonic() + 5
    while len(ecr_double.calls(op=OP)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)  # the slow call is logged once its late answer goes out
    slow, fast = ecr_double.calls(op=OP)
    assert slow.time - before < 0.2  # stamped on arrival, not after the delay
    assert slow.step == 0 and fast.step == 1


def test_other_operations_can_be_scripted(ecr_double: EcrDouble, repo: str) -> None:
    ecr_double.push_image(repo, "v1")
    ecr_double.script(repo, tag="v1", op="StartImageScan", steps=[{"error": "LimitExceededException"}])

    code, message, _ = error_of(
        lambda: ecr_double.client().start_image_scan(repositoryName=repo, imageId={"imageTag": "v1"})
    )

    assert code == "LimitExceededException" and "scan quota" in message


def test_registry_id_must_match_when_given(ecr_double: EcrDouble, repo: str) -> None:
    ecr_double.push_image(repo, "v1")
    ecr_double.script(repo, tag="v1", registry_id="111122223333", steps=[{"error": "AccessDeniedException"}])
    client = ecr_double.client()

    ours = error_of(lambda: scan(client, repo, imageTag="v1"))  # default registry: not scripted, moto
    code, message, _ = error_of(
        lambda: client.describe_image_scan_findings(
            registryId="111122223333", repositoryName=repo, imageId={"imageTag": "v1"}
        )
    )

    assert ours[0] == "ScanNotFoundException"
    assert code == "AccessDeniedException" and "arn:aws:ecr:us-east-1:111122223333:repository/" in message


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES_DIR.glob("*.json")))
def test_every_fixture_is_a_parseable_answer(ecr_double: EcrDouble, repo: str, name: str) -> None:
    digest = ecr_double.push_image(repo, "v1")
    recorded = load_fixture(name)
    ecr_double.script(repo, tag="v1", steps=[{"fixture": name}])
    client = ecr_double.client()

    if "__type" in recorded:
        code, message, http = error_of(lambda: scan(client, repo, imageTag="v1"))
        assert (code, message) == (recorded["__type"], recorded["message"])
        assert http == (500 if code == "ServerException" else 400)
        return
    answer = scan(client, repo, imageTag="v1")
    assert answer["imageId"] == {"imageDigest": digest, "imageTag": "v1"}  # retargeted to the asked image
    assert answer["repositoryName"] == repo
    assert answer["imageScanStatus"] == recorded["imageScanStatus"]
    if "imageScanFindings" in recorded:
        for key in ("findings", "enhancedFindings", "findingSeverityCounts"):
            assert (key in answer["imageScanFindings"]) == (key in recorded["imageScanFindings"])
        assert answer["imageScanFindings"].get("findingSeverityCounts") == recorded["imageScanFindings"].get(
            "findingSeverityCounts"
        )
    else:
        assert "imageScanFindings" not in answer


def test_runbook_fixture_keeps_its_counts(ecr_double: EcrDouble, repo: str) -> None:
    ecr_double.push_image(repo, "a1b2c3d4")
    ecr_double.script(repo, tag="a1b2c3d4", steps=[{"fixture": "basic_complete_high.json"}])

    answer = scan(ecr_double.client(), repo, imageTag="a1b2c3d4")

    assert answer["imageScanFindings"]["findingSeverityCounts"] == {
        "HIGH": 1,
        "INFORMATIONAL": 4,
        "LOW": 2,
        "MEDIUM": 3,
    }
    assert len(answer["imageScanFindings"]["findings"]) == 1


@pytest.mark.parametrize(
    ("steps", "error"),
    [
        ([], "non-empty list"),
        ([{"status": "DONE"}], "status must be one of"),
        ([{"status": "COMPLETE", "colour": "red"}], "unknown keys"),
        ([{"status": "COMPLETE", "error": "ThrottlingException"}], "one of status/error/moto/response"),
        ([{"status": "COMPLETE", "findings": [], "enhanced_findings": []}], "not both"),
        ([{"status": "COMPLETE", "no_findings_object": True, "findings": []}], "excludes findings"),
        ([{"error": "ServerException", "http": 200}], "4xx/5xx"),
        ([{"status": "IN_PROGRESS", "repeat": 0}], "repeat"),
        ([{"delay_s": -1}], "delay_s"),
        ([{"fixture": "nope.json"}], "no ECR fixture"),
    ],
)
def test_bad_steps_fail_loudly(steps: list, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        normalize_steps(steps)


def test_status_steps_only_for_scan_operations() -> None:
    with pytest.raises(ValueError, match="status steps answer"):
        normalize_steps([{"status": "COMPLETE"}], "DescribeImages")
    with pytest.raises(ValueError, match="carry no findings"):
        normalize_steps([{"status": "IN_PROGRESS", "findings": []}], "StartImageScan")


def test_builders_refuse_unknown_severities() -> None:
    with pytest.raises(ValueError):
        basic_finding("CVE-1", "UNTRIAGED", "p", "1")
    with pytest.raises(ValueError):
        enhanced_finding("CVE-1", "SEVERE", "p", "1")


def test_reset_forgets_scripts_and_log_and_optionally_moto() -> None:
    with EcrDouble() as double:
        double.create_repository("app")
        double.push_image("app", "v1")
        double.script("app", tag="v1", steps=[{"status": "IN_PROGRESS"}])
        client = double.client()
        scan(client, "app", imageTag="v1")

        double.reset()
        assert double.calls() == []
        assert error_of(lambda: scan(client, "app", imageTag="v1"))[0] == "ScanNotFoundException"  # moto again

        double.reset(moto=True)
        assert error_of(lambda: scan(client, "app", imageTag="v1"))[0] == "RepositoryNotFoundException"


def test_doubles_do_not_share_moto_state(double: EcrDouble) -> None:
    # conftest's session double and tests/stack.py's doubles all create "app" in one pytest process.
    double.create_repository("shared-name")
    with EcrDouble() as other:
        other.create_repository("shared-name")  # no RepositoryAlreadyExistsException
        other.reset(moto=True)
    assert [r["repositoryName"] for r in double.client().describe_repositories()["repositories"]].count(
        "shared-name"
    ) == 1
    double.client().delete_repository(repositoryName="shared-name")


def test_http_control_routes_from_another_process(ecr_double: EcrDouble, repo: str) -> None:
    control = EcrControl(ecr_double.endpoint_url)
    digest = control.push_image(repo, "v1")  # through the proxy: counted as PutImage

    assert (
        control.script(repo, tag="v1", steps=[{"status": "IN_PROGRESS", "repeat": 2}, {"status": "COMPLETE"}]) == digest
    )
    statuses = [scan(control.client(), repo, imageTag="v1")["imageScanStatus"]["status"] for _ in range(3)]
    calls = control.calls(op=OP, repository=repo)
    info = json.load(urllib.request.urlopen(f"{ecr_double.endpoint_url}/_ecr/info"))

    assert statuses == ["IN_PROGRESS", "IN_PROGRESS", "COMPLETE"]
    assert [(c.answered_by, c.step) for c in calls] == [("script", 0), ("script", 1), ("script", 2)]
    assert [c.op for c in control.calls()] == ["PutImage", OP, OP, OP]
    assert info == {
        "endpoint_url": ecr_double.endpoint_url,
        "moto_url": ecr_double.moto_url,
        "region": "us-east-1",
        "account_id": "123456789012",
    }
    assert control.clear_calls() == 4

    with pytest.raises(ValueError, match="HTTP 400.*status must be one of"):
        control.script(repo, tag="v1", steps=[{"status": "DONE"}])
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"{ecr_double.endpoint_url}/_ecr/nothing")
    assert missing.value.code == 404

    control.reset()
    assert control.calls() == []
    code, _, _ = error_of(lambda: scan(control.client(), repo, imageTag="v1"))
    assert code == "ScanNotFoundException"  # the script is gone: moto answers


def test_runs_standalone_and_prints_its_endpoint() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.ecr", "--port", "0"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = proc.stdout.readline().strip()
        assert first.startswith("AWS_ENDPOINT_URL=http://127.0.0.1:"), (
            first,
            proc.stderr.read() if proc.poll() else "",
        )
        control = EcrControl(first.split("=", 1)[1])
        control.create_repository("demo")
        control.script("demo", tag="v1", steps=[{"status": "COMPLETE"}])
        assert scan(control.client(), "demo", imageTag="v1")["imageScanStatus"]["status"] == "COMPLETE"
        control.reset(moto=True)  # through the HTTP route, moto's /moto-api/reset included
        assert error_of(lambda: scan(control.client(), "demo", imageTag="v1"))[0] == "RepositoryNotFoundException"
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
