"""The registry-event parser, gate matching, the events process's batch handling and the backstop settings."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.core import poll as rule
from bot.core.models import Finding as F
from bot.core.models import Image, Phase, ScanResult, Severity
from bot.core.policy import Policy
from bot.core.scan_events import (
    EventKind,
    Ignored,
    PoisonMessage,
    RegistryEvent,
    Scanner,
    event_from_dict,
    event_to_dict,
    names,
    parse_message,
)
from bot.core.settings import EventsSettings, ImageSettings, ScanSettings, Settings
from tests.fakes.ecr import inspector2_finding_event
from workers.events import TASK, handle

DIGEST = "sha256:" + "ab" * 32
ACCOUNT = "123456789012"


def scan_event(**detail: Any) -> dict[str, Any]:
    return {
        "version": "0",
        "id": "85fc3613-e913-7fc4-a80c-a3753e4aa9ae",
        "detail-type": "ECR Image Scan",
        "source": "aws.ecr",
        "account": ACCOUNT,
        "time": "2026-12-04T02:36:48Z",
        "region": "us-east-1",
        "resources": [f"arn:aws:ecr:us-east-1:{ACCOUNT}:repository/app"],
        "detail": {
            "scan-status": "COMPLETE",
            "repository-name": "app",
            "finding-severity-counts": {"CRITICAL": 1, "MEDIUM": 9},
            "image-digest": DIGEST,
            "image-tags": ["abc12345"],
            **detail,
        },
    }


def inspector_event(**detail: Any) -> dict[str, Any]:
    return {
        "version": "0",
        "id": "inspector-1",
        "detail-type": "Inspector2 Scan",
        "source": "aws.inspector2",
        "account": "999999999999",  # the envelope's account; the ARN names the registry
        "time": "2026-12-04T02:36:48Z",
        "region": "eu-west-1",
        "resources": [],
        "detail": {
            "scan-status": "INITIAL_SCAN_COMPLETE",
            "repository-name": f"arn:aws:ecr:us-east-1:{ACCOUNT}:repository/team/app",
            "finding-severity-counts": {"CRITICAL": 7, "HIGH": 61, "TOTAL": 68},
            "image-digest": DIGEST,
            "image-tags": ["abc12345", "latest"],
            **detail,
        },
    }


def push_event(**detail: Any) -> dict[str, Any]:
    return {
        "version": "0",
        "id": "push-1",
        "detail-type": "ECR Image Action",
        "source": "aws.ecr",
        "account": ACCOUNT,
        "time": "2026-12-04T02:36:40Z",
        "region": "us-east-1",
        "resources": [],
        "detail": {
            "result": "SUCCESS",
            "repository-name": "app",
            "image-digest": DIGEST,
            "action-type": "PUSH",
            "image-tag": "abc12345",
            **detail,
        },
    }


def test_a_basic_scan_event_names_its_image() -> None:
    event = parse_message(json.dumps(scan_event()))
    assert isinstance(event, RegistryEvent)
    assert (event.kind, event.scanner, event.status) == (EventKind.SCAN, Scanner.BASIC, "COMPLETE")
    assert (event.account, event.region, event.repository, event.digest) == (ACCOUNT, "us-east-1", "app", DIGEST)
    assert event.tags == ("abc12345",)
    assert event.counts == {"CRITICAL": 1, "MEDIUM": 9}
    assert event_from_dict(json.loads(json.dumps(event_to_dict(event)))) == event


def test_inspector_names_the_repository_by_arn_and_the_arn_wins_over_the_envelope() -> None:
    event = parse_message(json.dumps(inspector_event()))
    assert isinstance(event, RegistryEvent)
    assert (event.account, event.region, event.repository) == (ACCOUNT, "us-east-1", "team/app")
    assert (event.scanner, event.status, event.tags) == (
        Scanner.ENHANCED,
        "INITIAL_SCAN_COMPLETE",
        ("abc12345", "latest"),
    )


def test_an_inspector_finding_names_its_ecr_image_and_its_vulnerability() -> None:
    raw = inspector2_finding_event(
        "team/app", DIGEST, ("a1", 7), cve="CVE-2026-4242", status="CLOSED", account=ACCOUNT, region="eu-west-1"
    )
    raw["region"] = "us-east-1"  # the resource's region wins over the envelope's
    event = parse_message(json.dumps(raw))
    assert isinstance(event, RegistryEvent) and event.kind is EventKind.FINDING
    assert (event.account, event.region, event.repository, event.digest) == (ACCOUNT, "eu-west-1", "team/app", DIGEST)
    assert event.tags == ("a1",) and event.scanner is Scanner.ENHANCED
    assert (event.status, event.finding) == ("CLOSED", "CVE-2026-4242")
    assert event_from_dict(event_to_dict(event)) == event
    without_cve = inspector2_finding_event("team/app", DIGEST)
    del without_cve["detail"]["packageVulnerabilityDetails"]
    named = parse_message(json.dumps(without_cve))
    assert isinstance(named, RegistryEvent) and named.finding == "CVE-2026-0001 - a package"  # its title


def test_a_finding_about_something_else_is_ignored_and_a_broken_one_is_poison() -> None:
    ec2 = parse_message(json.dumps(inspector2_finding_event("app", DIGEST, resource_type="AWS_EC2_INSTANCE")))
    assert ec2 == Ignored("a finding about AWS_EC2_INSTANCE, not an ECR image")

    def broken(change: Any) -> str:
        raw = inspector2_finding_event("app", DIGEST)
        change(raw["detail"])
        with pytest.raises(PoisonMessage) as caught:
            parse_message(json.dumps(raw))
        return str(caught.value)

    def image(d: dict[str, Any]) -> dict[str, Any]:
        found: dict[str, Any] = d["resources"][0]["details"]["awsEcrContainerImage"]
        return found

    assert "resources is not a list" in broken(lambda d: d.update(resources={"type": "AWS_ECR_CONTAINER_IMAGE"}))
    assert "without awsEcrContainerImage" in broken(lambda d: d["resources"][0].update(details={}))
    assert "imageHash" in broken(lambda d: image(d).update(imageHash="sha256:short"))
    assert "12-digit" in broken(lambda d: image(d).update(registry="1234"))
    assert "repositoryName" in broken(lambda d: image(d).pop("repositoryName"))
    assert "repository-name" in broken(lambda d: image(d).update(repositoryName="UPPER/case"))
    assert "imageTags is not a list" in broken(lambda d: image(d).update(imageTags="a1"))


def test_a_push_event_and_the_pushes_it_ignores() -> None:
    event = parse_message(json.dumps(push_event()))
    assert isinstance(event, RegistryEvent) and event.kind is EventKind.PUSH and event.tags == ("abc12345",)
    assert isinstance(parse_message(json.dumps(push_event(result="FAILURE"))), Ignored)
    assert isinstance(parse_message(json.dumps(push_event(**{"action-type": "DELETE"}))), Ignored)
    untagged = parse_message(json.dumps(push_event(**{"image-tag": ""})))
    assert isinstance(untagged, RegistryEvent) and untagged.tags == ()


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ("not json", "not JSON"),
        ("[1]", "not a JSON object"),
        (json.dumps({**scan_event(), "detail-type": "EC2 Instance State-change Notification"}), "detail-type"),
        (json.dumps({**scan_event(), "source": "aws.evil"}), "from source"),
        (json.dumps({**scan_event(), "detail": "x"}), "without a detail"),
        (json.dumps(scan_event(**{"image-digest": "sha256:short"})), "not a sha256 digest"),
        (json.dumps(scan_event(**{"repository-name": "Bad Name"})), "not an ECR repository name"),
        (json.dumps({**scan_event(), "account": "12"}), "12-digit"),
        (json.dumps({**scan_event(), "region": "mars"}), "not an AWS region"),
        (json.dumps(scan_event(**{"image-tags": "x"})), "not a list"),
        (json.dumps({k: v for k, v in scan_event().items() if k != "id"}), "id missing"),
        ("x" * (256 * 1024 + 1), "larger than SQS allows"),
    ],
)
def test_what_is_not_an_event_is_poison_with_its_reason(body: str, why: str) -> None:
    with pytest.raises(PoisonMessage, match=why):
        parse_message(body)


@given(st.binary(max_size=400) | st.text(max_size=400))
def test_no_body_crashes_the_parser(body: bytes | str) -> None:
    try:
        parse_message(body)
    except PoisonMessage:
        pass


def _event(**kw: Any) -> RegistryEvent:
    base: dict[str, Any] = {
        "id": "e",
        "kind": EventKind.SCAN,
        "account": ACCOUNT,
        "region": "us-east-1",
        "repository": "app",
        "digest": DIGEST,
        "tags": ("abc12345",),
    }
    return RegistryEvent(**{**base, **kw})


def test_an_event_names_a_gate_by_region_repository_registry_then_digest_or_tag() -> None:
    image = Image("app", tag="abc12345")
    assert names(_event(), image)
    assert names(_event(), Image("app", tag="abc12345", registry_id=ACCOUNT))
    assert not names(_event(), Image("app", tag="abc12345", registry_id="210987654321"))
    assert not names(_event(), Image("app", tag="abc12345", region="eu-west-1"))
    assert not names(_event(), Image("api", tag="abc12345"))
    assert not names(_event(tags=("other",)), image)
    assert names(_event(tags=()), image)  # no tags: an early read decides nothing, so it is allowed
    assert names(_event(tags=("other",)), image.pinned(DIGEST))  # pinned: the digest decides
    assert not names(_event(), image.pinned("sha256:" + "cd" * 32))


class FakeQueue:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []
        self.fail_send = False

    def receive(self, queue_url: str, max_messages: int, wait_s: int, visibility_timeout_s: int) -> list[dict]:
        return []

    def delete(self, queue_url: str, entries: list[tuple[str, str]]) -> list[str]:
        return []

    def send(self, queue_url: str, body: str) -> None:
        from bot.core.errors import TransientError

        if self.fail_send:
            raise TransientError("SQS down")
        self.sent.append((queue_url, body))


def _message(i: int, body: str) -> dict[str, str]:
    return {"MessageId": f"m{i}", "ReceiptHandle": f"r{i}", "Body": body}


def test_a_batch_deletes_only_what_was_queued_or_needs_nothing() -> None:
    queued: list[tuple[str, dict[str, Any]]] = []
    config = EventsSettings(queue_url="http://q/main", dead_letter_url="http://q/dead")
    queue = FakeQueue()
    messages = [
        _message(1, json.dumps(scan_event())),
        _message(2, "poison"),
        _message(3, json.dumps(push_event(result="FAILURE"))),
        _message(4, json.dumps(inspector_event())),
    ]
    batch = handle(messages, lambda task, payload, inbox: queued.append((task, payload)) or "id", queue, config)
    assert [e[0] for e in batch.delete] == ["m1", "m2", "m3", "m4"]
    assert (batch.queued, batch.dead, batch.ignored, batch.kept) == (2, 1, 1, 0)
    assert [t for t, _ in queued] == [TASK, TASK] and queued[1][1]["repository"] == "team/app"
    assert queue.sent == [("http://q/dead", "poison")]


def test_poison_stays_in_the_queue_when_it_cannot_be_dead_lettered_and_a_broker_failure_keeps_the_rest() -> None:
    queue = FakeQueue()
    queue.fail_send = True
    calls = []

    def broken(task: str, payload: dict[str, Any], inbox: str) -> str:
        calls.append(task)
        raise ConnectionError("redis down")

    config = EventsSettings(queue_url="http://q/main", dead_letter_url="http://q/dead")
    batch = handle(
        [_message(1, "poison"), _message(2, json.dumps(scan_event())), _message(3, json.dumps(push_event()))],
        broken,
        queue,
        config,
    )
    assert batch.delete == [] and batch.kept == 3 and batch.failed
    assert calls == [TASK]  # one failure, and the rest of the batch is not tried against a broken broker
    no_dlq = handle([_message(1, "poison")], broken, queue, EventsSettings(queue_url="http://q/main"))
    assert no_dlq.delete == [] and no_dlq.kept == 1  # left to the queue's redrive policy


GATE_SCAN = ScanSettings(poll_interval_s=15, timeout_s=600, not_found_grace_s=60, enhanced_settle_s=10)


def _enhanced(*ids: str) -> ScanResult:
    findings = tuple(F(i, Severity.HIGH, package="openssl") for i in ids)
    return ScanResult(
        Phase.COMPLETE, ecr_status="ACTIVE", counts={Severity.HIGH: len(ids)}, findings=findings, enhanced=True
    )


def test_enhanced_findings_are_decided_only_once_a_second_read_agrees() -> None:
    image, rng, policy = Image("app", tag="t"), random.Random(1), Policy()
    progress = rule.start(0.0, GATE_SCAN)
    first = rule.next_step(image, progress, _enhanced("CVE-1"), 1.0, GATE_SCAN, policy, rng)
    assert isinstance(first, rule.Wait) and first.after_s == 10
    grown = rule.next_step(image, first.progress, _enhanced("CVE-1", "CVE-2"), 11.0, GATE_SCAN, policy, rng)
    assert isinstance(grown, rule.Wait)  # Inspector was still adding findings: read again
    same = rule.next_step(image, grown.progress, _enhanced("CVE-1", "CVE-2"), 21.0, GATE_SCAN, policy, rng)
    assert isinstance(same, rule.Finish) and same.verdict.blocking_total == 2
    basic = ScanResult(Phase.COMPLETE, ecr_status="COMPLETE", counts={}, findings=())
    assert isinstance(rule.next_step(image, progress, basic, 1.0, GATE_SCAN, policy, rng), rule.Finish)
    late = rule.next_step(image, progress, _enhanced("CVE-1"), 600.0, GATE_SCAN, policy, rng)
    assert isinstance(late, rule.Finish)  # at the deadline, the complete read there is is decided


def test_with_events_on_polling_backs_off_to_the_backstop() -> None:
    base = {"gitlab": {"url": "https://g.example"}}
    assert Settings.model_validate(base).polling().poll_interval_s == 15
    on = Settings.model_validate({**base, "events": {"queue_url": "https://sqs.eu-west-1.amazonaws.com/1/q"}})
    assert on.polling().poll_interval_s == 120 and on.events.queue_region == "eu-west-1"
    with pytest.raises(ValueError, match="backstop_interval_s"):
        Settings.model_validate(
            {**base, "events": {"queue_url": "http://q", "backstop_interval_s": 400}, "sweep": {"stuck_after_s": 300}}
        )


def test_a_templated_repository_matches_pushes_of_any_project() -> None:
    image = ImageSettings(repository="{group}/{project_name}", push_job="push")
    assert image.matches_repository("team/app", "us-east-1")
    assert not image.matches_repository("team/app", "eu-west-1")
    assert not ImageSettings(repository="app", push_job="push").matches_repository("api", "us-east-1")
