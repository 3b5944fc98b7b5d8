"""The ECR double's timed scan timelines (for_s) and the EventBridge events it sends to SQS when they finish."""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from bot.core.scan_events import EventKind, RegistryEvent, Scanner, parse_message
from tests.fakes.ecr import (
    EVENT_FIXTURES_DIR,
    EcrControl,
    EcrDouble,
    EventSpec,
    basic_finding,
    ecr_image_action_event,
    ecr_image_scan_event,
    enhanced_finding,
    inspector2_scan_event,
    load_event_fixture,
    normalize_steps,
)
from tests.fakes.ecr.helpers import _post_json

OP = "DescribeImageScanFindings"
TICK = 0.3  # a timed step's length: long enough to be seen from both sides, short enough for a fast suite


@pytest.fixture(scope="module")
def double() -> Iterator[EcrDouble]:
    with EcrDouble() as running:
        yield running


@pytest.fixture()
def ecr_double(double: EcrDouble) -> Iterator[EcrDouble]:
    double.reset()  # scripts, call log, pending and sent events; each test has its own repository and queue
    yield double


def _name(request: pytest.FixtureRequest, prefix: str, limit: int) -> str:
    return (prefix + re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-"))[:limit].rstrip("-")


@pytest.fixture()
def repo(ecr_double: EcrDouble, request: pytest.FixtureRequest) -> str:
    name = _name(request, "timeline-", 200)
    ecr_double.create_repository(name)
    return name


@pytest.fixture()
def queue(ecr_double: EcrDouble, request: pytest.FixtureRequest) -> str:
    return ecr_double.create_queue(_name(request, "q-", 70))


def status_of(client: Any, repository: str, **image_id: str) -> str:
    answer = client.describe_image_scan_findings(repositoryName=repository, imageId=image_id)
    return str(answer["imageScanStatus"]["status"])


def parsed(body: str) -> RegistryEvent:
    event = parse_message(body)
    assert isinstance(event, RegistryEvent), event  # not Ignored: every event the double sends is acted on
    return event


def receive(double: EcrDouble | EcrControl, url: str, count: int, within: float = 3.0) -> list[dict[str, Any]]:
    """At least `count` messages (or what came by the deadline), long-polling in 1 s turns."""
    found: list[dict[str, Any]] = []
    deadline = time.monotonic() + within
    while len(found) < count and time.monotonic() < deadline:
        found.extend(double.queue_messages(url, wait_s=1))
    return found


# --- timelines ---------------------------------------------------------------------------------------


def test_timed_step_answers_every_call_until_its_time_is_up(ecr_double: EcrDouble, repo: str) -> None:
    digest = ecr_double.push_image(repo, "v1")
    before = time.time()
    ecr_double.script(repo, tag="v1", steps=[{"status": "IN_PROGRESS", "for_s": TICK}, {"status": "COMPLETE"}])
    after = time.time()
    client = ecr_double.client()

    early = [status_of(client, repo, imageTag="v1") for _ in range(3)]
    time.sleep(TICK + 0.05)
    late = [status_of(client, repo, imageTag="v1"), status_of(client, repo, imageDigest=digest)]

    assert early == ["IN_PROGRESS"] * 3  # a timed step is not consumed by calls
    assert late == ["COMPLETE", "COMPLETE"]
    assert [c.step for c in ecr_double.calls(op=OP)] == [0, 0, 0, 1, 1]
    completed_at = ecr_double.completion_time(repo, tag="v1")
    assert completed_at is not None and before + TICK <= completed_at <= after + TICK
    assert ecr_double.completion_time(repo, digest=digest) == completed_at  # the same script by digest


def test_completion_comes_from_the_timeline_not_from_when_someone_asks(ecr_double: EcrDouble, repo: str) -> None:
    ecr_double.push_image(repo, "v1")
    before = time.time()
    ecr_double.script(
        repo,
        tag="v1",
        steps=[{"status": "IN_PROGRESS", "for_s": 0.1, "repeat": 2}, {"status": "PENDING", "for_s": 0.1}]
        + [{"status": "COMPLETE", "findings": [basic_finding("CVE-2024-1", "HIGH", "p", "1")]}],
    )
    after = time.time()
    projected = ecr_double.completion_time(repo, tag="v1")

    time.sleep(0.45)  # nobody calls while the timeline runs
    first = status_of(ecr_double.client(), repo, imageTag="v1")

    assert projected is not None and before + 0.3 <= projected <= after + 0.3  # known ahead of time
    assert first == "COMPLETE"
    assert ecr_double.completion_time(repo, tag="v1") == projected
    assert [c.step for c in ecr_double.calls(op=OP)] == [3]  # the timed steps passed without a call


def test_per_call_steps_mix_with_timed_ones(ecr_double: EcrDouble, repo: str) -> None:
    ecr_double.push_image(repo, "v1")
    ecr_double.script(
        repo,
        tag="v1",
        steps=[
            {"error": "ScanNotFoundException"},  # per call, and not final: the scan has not started yet
            {"status": "IN_PROGRESS", "for_s": TICK},
            {"status": "COMPLETE"},
        ],
    )
    client = ecr_double.client()
    assert ecr_double.completion_time(repo, tag="v1") is None  # a call must consume the first step

    with pytest.raises(Exception, match="ScanNotFoundException"):
        status_of(client, repo, imageTag="v1")
    consumed_at = ecr_double.calls(op=OP)[0].time
    completed_at = ecr_double.completion_time(repo, tag="v1")
    middle = status_of(client, repo, imageTag="v1")
    time.sleep(TICK + 0.05)

    assert completed_at is not None and completed_at - consumed_at == pytest.approx(TICK, abs=0.05)
    assert middle == "IN_PROGRESS"
    assert status_of(client, repo, imageTag="v1") == "COMPLETE"
    assert [c.step for c in ecr_double.calls(op=OP)] == [0, 1, 2]


@pytest.mark.parametrize(
    ("steps", "final_after"),
    [
        ([{"status": "COMPLETE"}], 0.0),  # final from the start
        ([{"status": "IN_PROGRESS", "for_s": 0.2}, {"status": "FAILED"}], 0.2),
        ([{"status": "IN_PROGRESS", "for_s": 0.2}, {"status": "UNSUPPORTED_IMAGE"}], 0.2),
        ([{"status": "PENDING", "for_s": 0.2}, {"status": "ACTIVE", "enhanced_findings": []}], 0.2),
        ([{"status": "IN_PROGRESS", "for_s": 0.2}, {"error": "AccessDeniedException"}], 0.2),  # last: stands
        ([{"status": "IN_PROGRESS", "for_s": 0.2}, {"fixture": "basic_complete_medium.json"}], 0.2),
        ([{"status": "IN_PROGRESS"}], None),  # never final
        ([{"status": "IN_PROGRESS", "for_s": 0.2}, {"status": "ACTIVE"}], None),  # ACTIVE without findings
        ([{"status": "IN_PROGRESS", "for_s": 0.2}, {"moto": True}], None),  # moto decides, not the script
    ],
)
def test_which_steps_are_final(ecr_double: EcrDouble, repo: str, steps: list, final_after: float | None) -> None:
    before = time.time()
    ecr_double.script(repo, tag="v1", steps=steps)
    after = time.time()  # registration is somewhere in between (script() looks the digest up in moto first)

    completed_at = ecr_double.completion_time(repo, tag="v1")

    if final_after is None:
        assert completed_at is None
    else:
        assert completed_at is not None and before + final_after <= completed_at <= after + final_after


def test_a_throttle_before_the_result_is_not_the_end(ecr_double: EcrDouble, repo: str) -> None:
    ecr_double.script(repo, tag="v1", steps=[{"error": "ThrottlingException"}, {"status": "COMPLETE"}])
    assert ecr_double.completion_time(repo, tag="v1") is None

    with pytest.raises(Exception, match="ThrottlingException"):
        status_of(ecr_double.client(), repo, imageTag="v1")

    # Consumed by that call: COMPLETE is current from its arrival on.
    assert ecr_double.completion_time(repo, tag="v1") == pytest.approx(ecr_double.calls(op=OP)[0].time, abs=0.05)
    assert ecr_double.completion_time(repo, tag="other") is None and ecr_double.completion_time("nope") is None


@pytest.mark.parametrize("bad", [0, -1, "1", True, None, math.nan, math.inf, [1]])
def test_bad_for_s_fails_loudly(bad: object) -> None:
    with pytest.raises(ValueError, match=r"step 1: for_s must be a number of seconds > 0"):
        normalize_steps([{"status": "IN_PROGRESS"}, {"status": "IN_PROGRESS", "for_s": bad}])


def test_for_s_goes_with_any_step_kind_and_repeats() -> None:
    steps = normalize_steps(
        [
            {"status": "IN_PROGRESS", "for_s": 1, "repeat": 2},
            {"error": "ThrottlingException", "for_s": 0.5},
            {"moto": True, "for_s": 2},
            {"fixture": "in_progress.json", "for_s": 0.1},
        ]
    )
    assert [s["for_s"] for s in steps] == [1, 1, 0.5, 2, 0.1]


# --- events ------------------------------------------------------------------------------------------


def test_scan_event_arrives_when_the_timeline_completes(ecr_double: EcrDouble, repo: str, queue: str) -> None:
    ecr_double.push_image(repo, "v1")
    findings = [basic_finding("CVE-2024-1", "HIGH", "p", "1"), basic_finding("CVE-2024-2", "LOW", "q", "1")]
    ecr_double.script(
        repo,
        tag="v1",
        steps=[{"status": "IN_PROGRESS", "for_s": TICK}, {"status": "COMPLETE", "findings": findings}],
        events=EventSpec(queue_url=queue),
    )
    completed_at = ecr_double.completion_time(repo, tag="v1")
    assert completed_at is not None
    assert ecr_double.queue_messages(queue) == []  # nothing before the scan is done

    messages = receive(ecr_double, queue, 1)
    arrived = time.time()
    answer = ecr_double.client().describe_image_scan_findings(repositoryName=repo, imageId={"imageTag": "v1"})

    assert len(messages) == 1
    assert completed_at <= arrived < completed_at + 1.0
    (sent,) = ecr_double.events_sent()
    assert sent.due_at == completed_at and sent.error is None and sent.sent_at - completed_at < 0.2
    raw = json.loads(messages[0]["Body"])
    assert raw["detail"]["finding-severity-counts"] == {"HIGH": 1, "LOW": 1}
    assert raw["time"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(completed_at))
    event = parsed(messages[0]["Body"])
    assert event.kind is EventKind.SCAN and event.scanner is Scanner.BASIC
    assert (event.account, event.region, event.repository) == ("123456789012", "us-east-1", repo)
    assert event.digest == answer["imageId"]["imageDigest"]  # the digest the script answers with
    assert event.tags == ("v1",) and event.status == "COMPLETE"
    assert answer["imageScanStatus"]["status"] == "COMPLETE"  # an event means a read now sees the result


def test_duplicates_share_one_eventbridge_id(ecr_double: EcrDouble, repo: str, queue: str) -> None:
    ecr_double.script(repo, tag="v1", steps=[{"status": "COMPLETE"}], events=EventSpec(queue, copies=2))

    messages = receive(ecr_double, queue, 2)

    assert len(messages) == 2
    assert len({m["MessageId"] for m in messages}) == 2  # two SQS messages ...
    assert len({json.loads(m["Body"])["id"] for m in messages}) == 1  # ... of one event


def test_no_events_is_a_lost_event(ecr_double: EcrDouble, repo: str, queue: str) -> None:
    ecr_double.script(repo, tag="v1", steps=[{"status": "IN_PROGRESS", "for_s": 0.1}, {"status": "COMPLETE"}])
    time.sleep(0.25)

    assert ecr_double.completion_time(repo, tag="v1") is not None  # the scan finished ...
    assert ecr_double.events_sent() == [] and ecr_double.queue_messages(queue) == []  # ... and nobody heard


def test_push_event_goes_out_at_registration(ecr_double: EcrDouble, repo: str, queue: str) -> None:
    digest = ecr_double.push_image(repo, "v1")
    ecr_double.script(
        repo,
        tag="v1",
        steps=[{"status": "IN_PROGRESS", "for_s": TICK}, {"status": "COMPLETE"}],
        events=EventSpec(queue, push=True),
    )

    first = receive(ecr_double, queue, 1, within=TICK * 0.8)
    second = receive(ecr_double, queue, 1)

    assert [json.loads(m["Body"])["detail-type"] for m in first + second] == ["ECR Image Action", "ECR Image Scan"]
    push = parsed(first[0]["Body"])
    assert push.kind is EventKind.PUSH and push.digest == digest and push.tags == ("v1",)
    assert push.status == "SUCCESS" and push.id != parsed(second[0]["Body"]).id


def test_enhanced_event_names_the_repository_by_arn(ecr_double: EcrDouble, repo: str, queue: str) -> None:
    findings = [
        enhanced_finding("CVE-2024-1", "CRITICAL", "p", "1"),
        enhanced_finding("CVE-2024-2", "HIGH", "p", "1"),
        enhanced_finding("CVE-2024-3", "LOW", "p", "1"),
        enhanced_finding("CVE-2024-4", "UNTRIAGED", "p", "1"),
    ]
    ecr_double.script(
        repo,
        tag="v1",
        steps=[{"status": "PENDING", "for_s": 0.1}, {"status": "ACTIVE", "enhanced_findings": findings}],
        events=EventSpec(queue, scanner="enhanced"),
    )

    (message,) = receive(ecr_double, queue, 1)

    raw = json.loads(message["Body"])
    assert (raw["source"], raw["detail-type"]) == ("aws.inspector2", "Inspector2 Scan")
    assert raw["detail"]["repository-name"] == f"arn:aws:ecr:us-east-1:123456789012:repository/{repo}"
    assert raw["detail"]["finding-severity-counts"] == {"CRITICAL": 1, "HIGH": 1, "MEDIUM": 0, "TOTAL": 4}
    event = parsed(message["Body"])
    assert event.scanner is Scanner.ENHANCED and event.status == "INITIAL_SCAN_COMPLETE"
    assert event.repository == repo and event.account == "123456789012"


def test_failed_scan_event_and_a_digest_moto_never_saw(ecr_double: EcrDouble, repo: str, queue: str) -> None:
    # No image pushed: the event must carry the derived digest the script answers with.
    ecr_double.script(
        repo,
        tag="ghost",
        steps=[{"status": "IN_PROGRESS", "for_s": 0.1}, {"status": "FAILED", "description": "layer unreadable"}],
        events=EventSpec(queue, delay_s=0.2),
    )

    (message,) = receive(ecr_double, queue, 1)
    answer = ecr_double.client().describe_image_scan_findings(repositoryName=repo, imageId={"imageTag": "ghost"})

    raw = json.loads(message["Body"])
    assert raw["detail"]["scan-status"] == "FAILED" and "finding-severity-counts" not in raw["detail"]
    assert raw["detail"]["image-digest"] == answer["imageId"]["imageDigest"]
    (sent,) = ecr_double.events_sent()
    completed_at = ecr_double.completion_time(repo, tag="ghost")
    assert completed_at is not None and sent.due_at == pytest.approx(completed_at + 0.2)
    assert sent.sent_at >= sent.due_at


# The event is due a second after scripting: the cancelling call (which may ask moto for the digest) always
# comes first, even on a loaded CI machine. At 0.1 s it once came after, and the event had gone out.
DUE_S = 1.0


def test_reset_cancels_pending_events(ecr_double: EcrDouble, repo: str, queue: str) -> None:
    scripted = time.monotonic()
    ecr_double.script(
        repo,
        tag="v1",
        steps=[{"status": "IN_PROGRESS", "for_s": DUE_S}, {"status": "COMPLETE"}],
        events={"queue_url": queue},
    )
    ecr_double.reset()
    assert time.monotonic() - scripted < DUE_S, "cancelled too late to show anything"
    time.sleep(DUE_S + 0.3)

    assert ecr_double.queue_messages(queue) == [] and ecr_double.events_sent() == []


def test_scripting_the_image_again_drops_the_old_timelines_event(ecr_double: EcrDouble, repo: str, queue: str) -> None:
    scripted = time.monotonic()
    steps = [{"status": "IN_PROGRESS", "for_s": DUE_S}, {"status": "COMPLETE"}]
    ecr_double.script(repo, tag="v1", steps=steps, events=EventSpec(queue))
    ecr_double.script(repo, tag="v1", steps=[{"status": "IN_PROGRESS", "for_s": 0.2}, {"status": "FAILED"}])
    assert time.monotonic() - scripted < DUE_S, "scripted again too late to show anything"
    time.sleep(DUE_S + 0.3)

    assert ecr_double.events_sent() == [] and ecr_double.queue_messages(queue) == []


def test_an_event_to_a_missing_queue_is_recorded_not_raised(ecr_double: EcrDouble, repo: str) -> None:
    missing = f"{ecr_double.endpoint_url}/123456789012/no-such-queue"
    ecr_double.script(repo, tag="v1", steps=[{"status": "COMPLETE"}], events=EventSpec(missing))
    deadline = time.monotonic() + 3
    while not ecr_double.events_sent() and time.monotonic() < deadline:
        time.sleep(0.02)

    (sent,) = ecr_double.events_sent()
    assert sent.error is not None and "NonExistentQueue" in sent.error


@pytest.mark.parametrize(
    ("events", "error"),
    [
        ({"queue_url": "q"}, "queue_url must be an SQS queue URL"),
        ({"queue_url": "http://q", "scanner": "inspector"}, "scanner must be one of"),
        ({"queue_url": "http://q", "copies": 0}, "copies must be an integer"),
        ({"queue_url": "http://q", "delay_s": -1}, "delay_s must be a number >= 0"),
        ({"queue_url": "http://q", "push": "yes"}, "push must be true or false"),
        ({"queue_url": "http://q", "colour": "red"}, "unknown keys"),
        ({"scanner": "basic"}, "missing 'queue_url'"),
        ("http://q", "events must be an object"),
    ],
)
def test_bad_event_specs_fail_loudly(ecr_double: EcrDouble, events: object, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        ecr_double.script("app", tag="v1", steps=[{"status": "COMPLETE"}], events=events)  # type: ignore[arg-type]


def test_events_need_one_image_and_the_scan_operation(ecr_double: EcrDouble) -> None:
    spec = EventSpec("http://q")
    with pytest.raises(ValueError, match="give tag or digest"):
        ecr_double.script("app", steps=[{"status": "COMPLETE"}], events=spec)
    with pytest.raises(ValueError, match="events go with DescribeImageScanFindings"):
        ecr_double.script("app", tag="v1", op="StartImageScan", steps=[{"status": "COMPLETE"}], events=spec)


# --- recorded shapes and the parser ------------------------------------------------------------------


def _shape(value: object) -> object:
    """Keys and value types, recursively: what the builders must share with AWS's recorded events."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items() if k != "finding-severity-counts"}
    if isinstance(value, list):
        return [_shape(value[0])] if value else []
    return type(value).__name__


@pytest.mark.parametrize(
    ("name", "kind", "scanner", "status"),
    [
        ("ecr_image_scan.json", EventKind.SCAN, Scanner.BASIC, "COMPLETE"),
        ("inspector2_scan.json", EventKind.SCAN, Scanner.ENHANCED, "INITIAL_SCAN_COMPLETE"),
        ("ecr_image_action_push.json", EventKind.PUSH, None, "SUCCESS"),
    ],
)
def test_the_parser_reads_every_recorded_event(
    name: str, kind: EventKind, scanner: Scanner | None, status: str
) -> None:
    event = parsed((EVENT_FIXTURES_DIR / name).read_text())

    assert (event.kind, event.scanner, event.status) == (kind, scanner, status)
    assert (event.account, event.region, event.repository) == ("123456789012", "eu-west-1", "team/app")
    assert event.digest == "sha256:01730cce157d9e268fd86c08dc980d8a37252d71069e8dda3a66ceec3c22cb88"
    assert event.tags == ("a1b2c3d4",)


def test_every_event_fixture_is_tested() -> None:
    assert sorted(p.name for p in EVENT_FIXTURES_DIR.glob("*.json")) == [
        "ecr_image_action_push.json",
        "ecr_image_scan.json",
        "inspector2_scan.json",
    ]


def test_builders_make_the_recorded_shapes() -> None:
    account, region, digest = "123456789012", "eu-west-1", "sha256:" + "0" * 64
    built = {
        "ecr_image_scan.json": ecr_image_scan_event(
            "team/app", digest, ["a1b2c3d4"], counts={"HIGH": 2}, account=account, region=region
        ),
        "inspector2_scan.json": inspector2_scan_event(
            "team/app", digest, ["a1b2c3d4"], counts={"LOW": 3}, account=account, region=region
        ),
        "ecr_image_action_push.json": ecr_image_action_event(
            "team/app", digest, "a1b2c3d4", account=account, region=region
        ),
    }
    for name, event in built.items():
        recorded = load_event_fixture(name)
        assert _shape(event) == _shape(recorded), name
        assert list(event["detail"]) == list(recorded["detail"]), name  # same keys, same order
        assert parsed(json.dumps(event)).repository == "team/app"
    assert built["inspector2_scan.json"]["detail"]["finding-severity-counts"] == {
        "CRITICAL": 0,
        "HIGH": 0,
        "MEDIUM": 0,
        "TOTAL": 3,
    }
    assert built["ecr_image_scan.json"]["resources"] == ["arn:aws:ecr:eu-west-1:123456789012:repository/team/app"]


# --- queues ------------------------------------------------------------------------------------------


def test_dead_letter_queue_takes_a_message_after_max_receives(ecr_double: EcrDouble) -> None:
    url = ecr_double.create_queue("redrive-test", max_receives=2)
    dlq = ecr_double.queue_url("redrive-test-dlq")
    ecr_double.send_event(url, "not json: a poison message")

    peeks = [ecr_double.queue_messages(url, delete=False) for _ in range(2)]
    after = ecr_double.queue_messages(url)  # the third receive finds it over its limit: moved

    assert [len(p) for p in peeks] == [1, 1] and after == []
    (dead,) = ecr_double.queue_messages(dlq)
    assert dead["Body"] == "not json: a poison message"
    policy = json.loads(
        ecr_double._sqs_setup_client(None).get_queue_attributes(QueueUrl=url, AttributeNames=["RedrivePolicy"])[
            "Attributes"
        ]["RedrivePolicy"]
    )
    assert policy["maxReceiveCount"] in (2, "2") and policy["deadLetterTargetArn"].endswith(":redrive-test-dlq")
    assert ecr_double.calls() == []  # set-up went straight to moto: no traffic logged


def test_long_poll_through_the_proxy_returns_as_a_message_lands(ecr_double: EcrDouble, queue: str) -> None:
    # The events process long-polls with AWS_ENDPOINT_URL set to the proxy, which forwards SQS to moto.
    sqs = boto3.client(
        "sqs",
        region_name="us-east-1",
        endpoint_url=ecr_double.endpoint_url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    sent_at: list[float] = []

    def send_later() -> None:
        time.sleep(0.3)
        sent_at.append(time.monotonic())
        ecr_double.send_event(queue, ecr_image_scan_event("app", "sha256:" + "1" * 64))

    sender = threading.Thread(target=send_later)
    sender.start()
    answer = sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=10, MaxNumberOfMessages=10)
    returned = time.monotonic()
    sender.join()

    assert len(answer["Messages"]) == 1
    assert returned - sent_at[0] < 0.3  # measured ~15 ms: moto wakes its waiters on a send
    assert [c.op for c in ecr_double.calls()] == ["AmazonSQS.ReceiveMessage"]


# --- from another process ----------------------------------------------------------------------------


def test_control_routes_script_events_and_queues(ecr_double: EcrDouble, repo: str) -> None:
    control = EcrControl(ecr_double.endpoint_url)
    url = control.create_queue("control-events", dead_letter=True)
    assert control.queue_url("control-events-dlq").endswith("/123456789012/control-events-dlq")
    digest = ecr_double.push_image(repo, "v1")

    returned = control.script(
        repo,
        tag="v1",
        steps=[{"status": "IN_PROGRESS", "for_s": 0.1}, {"status": "COMPLETE"}],
        events=EventSpec(url, copies=2, push=True),
    )
    completed_at = control.completion_time(repo, tag="v1")
    messages = receive(control, url, 3)
    control.send_event(url, {"hello": "world"})
    (extra,) = control.queue_messages(url, wait_s=1)

    assert returned == digest
    assert completed_at == ecr_double.completion_time(repo, tag="v1") and completed_at is not None
    assert (
        sorted(json.loads(m["Body"])["detail-type"] for m in messages) == ["ECR Image Action"] + ["ECR Image Scan"] * 2
    )
    assert json.loads(extra["Body"]) == {"hello": "world"}
    assert [e.detail_type for e in control.events_sent()] == ["ECR Image Action", "ECR Image Scan", "ECR Image Scan"]
    assert control.completion_time(repo, tag="nope") is None

    with pytest.raises(ValueError, match="HTTP 400.*copies must be an integer"):
        _post_json(
            f"{ecr_double.endpoint_url}/_ecr/script",
            {
                "repository": repo,
                "tag": "v1",
                "steps": [{"status": "COMPLETE"}],
                "events": {"queue_url": url, "copies": 0},
            },
        )
    with pytest.raises(ValueError, match="HTTP 400.*NonExistentQueue"):
        control.queue_messages(f"{ecr_double.endpoint_url}/123456789012/no-such-queue")
    with pytest.raises(ValueError, match="HTTP 400.*missing 'repository'"):
        control._get("/_ecr/completion")


def test_stop_cancels_pending_events() -> None:
    double = EcrDouble()  # never started: stop() must still drop what the timer holds
    ran: list[str] = []
    double._timer.schedule(time.time() + 30, lambda: ran.append("late"))
    assert double._timer.pending() == 1

    double.stop()

    assert double._timer.pending() == 0 and double._timer._thread is None and ran == []
    double._timer.schedule(time.time(), lambda: ran.append("after a restart"))  # a started-again double
    deadline = time.monotonic() + 2
    while not ran and time.monotonic() < deadline:
        time.sleep(0.01)
    double._timer.close()
    assert ran == ["after a restart"]
