"""The ECR adapter against the double: every page read, errors typed, one HTTP call per attempt."""

from __future__ import annotations

import pytest

from bot.adapters.ecr import EcrApi
from bot.core.errors import TransientError
from bot.core.models import Image, Phase, Reason
from bot.core.settings import EcrSettings
from tests.fakes.ecr import EcrDouble, basic_finding
from tests.harness import point_boto3_at


@pytest.fixture
def api(ecr: EcrDouble, monkeypatch: pytest.MonkeyPatch) -> EcrApi:
    point_boto3_at(ecr.env(), monkeypatch)
    return EcrApi(EcrSettings())


def test_reads_every_page_of_findings(api: EcrApi, ecr: EcrDouble):
    ecr.push_image("app", "pages-1")
    findings = [basic_finding(f"CVE-2024-{i:04d}", "HIGH", f"pkg{i}", "1", "2") for i in range(7)]
    ecr.script("app", tag="pages-1", steps=[{"status": "COMPLETE", "findings": findings}])
    result = api.scan_findings(Image(repository="app", tag="pages-1"), page_size=2)
    assert result.phase is Phase.COMPLETE
    assert sorted(f.id for f in result.findings) == sorted(f["name"] for f in findings)
    pages = [c for c in ecr.calls("DescribeImageScanFindings", "app") if c.image == "pages-1"]
    assert len(pages) == 4 and sum(not c.next_token for c in pages) == 1  # one logical poll, four pages


def test_digest_is_used_once_known(api: EcrApi, ecr: EcrDouble):
    digest = ecr.push_image("app", "pin-1")
    ecr.script("app", tag="pin-1", steps=[{"status": "IN_PROGRESS"}])
    first = api.scan_findings(Image(repository="app", tag="pin-1"))
    assert first.digest == digest
    api.scan_findings(Image(repository="app", tag="pin-1", digest=first.digest))
    asked = [c.image for c in ecr.calls("DescribeImageScanFindings", "app") if c.image in ("pin-1", digest)]
    assert asked == ["pin-1", digest]


@pytest.mark.parametrize("step", [{"error": "ThrottlingException"}, {"error": "ServerException", "http": 500}])
def test_throttling_and_5xx_are_transient_and_not_retried_inside(api: EcrApi, ecr: EcrDouble, step):
    tag = f"slow-{step['error']}"
    ecr.push_image("app", tag)
    ecr.script("app", tag=tag, steps=[step, {"status": "COMPLETE", "findings": []}])
    before = len(ecr.calls("DescribeImageScanFindings", "app"))
    with pytest.raises(TransientError):
        api.scan_findings(Image(repository="app", tag=tag))
    # botocore's own sleeping retries are off: exactly one request was made.
    assert len(ecr.calls("DescribeImageScanFindings", "app")) == before + 1


def test_access_denied_as_ecr_sends_it(api: EcrApi, ecr: EcrDouble):
    ecr.push_image("app", "deny-1")
    ecr.script("app", tag="deny-1", steps=[{"error": "AccessDeniedException"}])
    result = api.scan_findings(Image(repository="app", tag="deny-1"))
    assert result.reason is Reason.ACCESS_DENIED
    assert result.detail.startswith("ecr:DescribeImageScanFindings")


def test_unreachable_ecr_is_transient(monkeypatch: pytest.MonkeyPatch):
    point_boto3_at(
        {"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y"}, monkeypatch
    )
    with pytest.raises(TransientError, match="unreachable"):
        EcrApi(EcrSettings(connect_timeout_s=0.5)).scan_findings(Image(repository="app", tag="x"))
