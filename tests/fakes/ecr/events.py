"""EventBridge events about ECR images (scan done, Inspector scan, push) and their delivery to SQS."""

from __future__ import annotations

import heapq
import itertools
import json
import math
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .builders import FIXTURES_DIR, severity_counts
from .constants import DEFAULT_ACCOUNT, DEFAULT_REGION

# Shapes follow the AWS examples recorded in tests/fixtures/events/ (see NOTES.md there).
SCAN_DETAIL_TYPE = "ECR Image Scan"
INSPECTOR_DETAIL_TYPE = "Inspector2 Scan"
FINDING_DETAIL_TYPE = "Inspector2 Finding"
ACTION_DETAIL_TYPE = "ECR Image Action"
SCANNERS = frozenset({"basic", "enhanced"})
_MAX_COPIES = 100
_INSPECTOR_LISTED = ("CRITICAL", "HIGH", "MEDIUM")  # the keys Inspector's examples always carry, zeros too
EVENT_FIXTURES_DIR: Path = FIXTURES_DIR.parent / "events"


def load_event_fixture(name: str) -> dict[str, Any]:
    """A recorded event from tests/fixtures/events/ (see NOTES.md there)."""
    path = EVENT_FIXTURES_DIR / name
    if not path.is_file():
        raise ValueError(f"no event fixture {name!r} in {EVENT_FIXTURES_DIR}")
    event: dict[str, Any] = json.loads(path.read_text())
    return event


def _event_time(when: float | None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if when is None else when))


def repository_arn(repository: str, account: str = DEFAULT_ACCOUNT, region: str = DEFAULT_REGION) -> str:
    return f"arn:aws:ecr:{region}:{account}:repository/{repository}"


def _envelope(
    detail_type: str,
    source: str,
    account: str,
    region: str,
    resources: list[str],
    event_id: str | None,
    when: float | None,
) -> dict[str, Any]:
    return {
        "version": "0",
        "id": event_id or str(uuid.uuid4()),
        "detail-type": detail_type,
        "source": source,
        "account": account,
        "time": _event_time(when),
        "region": region,
        "resources": resources,
    }


def ecr_image_scan_event(
    repository: str,
    digest: str,
    tags: Sequence[str] = (),
    *,
    status: str = "COMPLETE",
    counts: Mapping[str, int] | None = None,
    account: str = DEFAULT_ACCOUNT,
    region: str = DEFAULT_REGION,
    event_id: str | None = None,
    when: float | None = None,
) -> dict[str, Any]:
    """An "ECR Image Scan" event (basic scanning). Counts keep ECR's rule: a zero count is an absent key;
    counts None leaves finding-severity-counts out."""
    event = _envelope(
        SCAN_DETAIL_TYPE, "aws.ecr", account, region, [repository_arn(repository, account, region)], event_id, when
    )
    detail: dict[str, Any] = {"scan-status": status, "repository-name": repository}
    if counts is not None:
        detail["finding-severity-counts"] = {k: v for k, v in counts.items() if v}
    detail["image-digest"] = digest
    detail["image-tags"] = list(tags)
    event["detail"] = detail
    return event


def inspector2_scan_event(
    repository: str,
    digest: str,
    tags: Sequence[str] = (),
    *,
    status: str = "INITIAL_SCAN_COMPLETE",
    counts: Mapping[str, int] | None = None,
    account: str = DEFAULT_ACCOUNT,
    region: str = DEFAULT_REGION,
    event_id: str | None = None,
    when: float | None = None,
) -> dict[str, Any]:
    """An "Inspector2 Scan" event (enhanced scanning): repository-name is the repository's ARN, and the
    counts are CRITICAL, HIGH, MEDIUM (zeros included) and TOTAL over every severity, as Inspector sends them."""
    arn = repository_arn(repository, account, region)
    event = _envelope(INSPECTOR_DETAIL_TYPE, "aws.inspector2", account, region, [arn], event_id, when)
    given = dict(counts or {})
    total = given.pop("TOTAL", None)
    shown = {key: given.get(key, 0) for key in _INSPECTOR_LISTED}
    shown["TOTAL"] = sum(given.values()) if total is None else total
    event["detail"] = {
        "scan-status": status,
        "repository-name": arn,
        "finding-severity-counts": shown,
        "image-digest": digest,
        "image-tags": list(tags),
        "version": "1.0",
    }
    return event


def inspector2_finding_event(
    repository: str,
    digest: str,
    tags: Sequence[str] = (),
    *,
    cve: str = "CVE-2026-0001",
    severity: str = "HIGH",
    status: str = "ACTIVE",
    resource_type: str = "AWS_ECR_CONTAINER_IMAGE",
    account: str = DEFAULT_ACCOUNT,
    region: str = DEFAULT_REGION,
    event_id: str | None = None,
    when: float | None = None,
) -> dict[str, Any]:
    """An "Inspector2 Finding" event: its detail is Inspector's Finding object, the image in
    resources[].details.awsEcrContainerImage (see tests/fixtures/events/NOTES.md for where the shape is from).
    Another resource_type (AWS_EC2_INSTANCE, AWS_LAMBDA_FUNCTION) makes a finding about something else."""
    stamp = _event_time(when)
    ecr = resource_type == "AWS_ECR_CONTAINER_IMAGE"
    resource_id = f"{repository_arn(repository, account, region)}/{digest}" if ecr else f"i-{uuid.uuid4().hex[:17]}"
    details = (
        {
            "awsEcrContainerImage": {
                "architecture": "amd64",
                "imageHash": digest,
                "imageTags": list(tags),
                "platform": "DEBIAN_12",
                "pushedAt": stamp,
                "registry": account,
                "repositoryName": repository,
            }
        }
        if ecr
        else {"awsEc2Instance": {"platform": "AMAZON_LINUX_2", "type": "t3.micro"}}
    )
    event = _envelope(FINDING_DETAIL_TYPE, "aws.inspector2", account, region, [], event_id, when)
    event["detail"] = {
        "awsAccountId": account,
        "description": f"{cve}: a vulnerability in a package of the image.",
        "findingArn": f"arn:aws:inspector2:{region}:{account}:finding/{uuid.uuid4().hex}",
        "firstObservedAt": stamp,
        "lastObservedAt": stamp,
        "packageVulnerabilityDetails": {"source": "NVD", "vulnerabilityId": cve, "vulnerablePackages": []},
        "remediation": {"recommendation": {"text": "None Provided"}},
        "resources": [
            {"details": details, "id": resource_id, "partition": "aws", "region": region, "type": resource_type}
        ],
        "severity": severity,
        "status": status,
        "title": f"{cve} - a package",
        "type": "PACKAGE_VULNERABILITY",
        "updatedAt": stamp,
    }
    return event


def ecr_image_action_event(
    repository: str,
    digest: str,
    tag: str | None = None,
    *,
    action: str = "PUSH",
    result: str = "SUCCESS",
    account: str = DEFAULT_ACCOUNT,
    region: str = DEFAULT_REGION,
    event_id: str | None = None,
    when: float | None = None,
) -> dict[str, Any]:
    """An "ECR Image Action" event (a push by default). AWS's example has no resources; a push by digest
    only has no image-tag."""
    event = _envelope(ACTION_DETAIL_TYPE, "aws.ecr", account, region, [], event_id, when)
    detail: dict[str, Any] = {
        "result": result,
        "repository-name": repository,
        "image-digest": digest,
        "action-type": action,
    }
    if tag:
        detail["image-tag"] = tag
    event["detail"] = detail
    return event


@dataclass(frozen=True)
class EventSpec:
    """What a script publishes to SQS, as an EventBridge rule with an SQS target would.

    The scan event goes out `delay_s` after the timeline reaches its final step, `copies` times with one
    EventBridge id (how at-least-once delivery duplicates look). With push, an "ECR Image Action" PUSH
    goes out when the script is registered. status overrides the scan-status sent (default: COMPLETE, or
    FAILED for a FAILED step, for basic; INITIAL_SCAN_COMPLETE for enhanced).
    """

    queue_url: str
    scanner: str = "basic"
    copies: int = 1
    delay_s: float = 0.0
    push: bool = False
    status: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.queue_url, str) or not self.queue_url.startswith(("http://", "https://")):
            raise ValueError(f"events: queue_url must be an SQS queue URL, got {self.queue_url!r}")
        if self.scanner not in SCANNERS:
            raise ValueError(f"events: scanner must be one of {sorted(SCANNERS)}, got {self.scanner!r}")
        copies = self.copies
        if isinstance(copies, bool) or not isinstance(copies, int) or not 1 <= copies <= _MAX_COPIES:
            raise ValueError(f"events: copies must be an integer 1..{_MAX_COPIES} (none: events=None), got {copies!r}")
        delay = self.delay_s
        if isinstance(delay, bool) or not isinstance(delay, int | float) or not math.isfinite(delay) or delay < 0:
            raise ValueError(f"events: delay_s must be a number >= 0, got {delay!r}")
        if not isinstance(self.push, bool):
            raise ValueError(f"events: push must be true or false, got {self.push!r}")
        if self.status is not None and (not isinstance(self.status, str) or not self.status):
            raise ValueError(f"events: status must be a scan-status string, got {self.status!r}")

    @classmethod
    def coerce(cls, value: EventSpec | Mapping[str, Any] | None) -> EventSpec | None:
        """An EventSpec from itself, a JSON object (the control route's), or None."""
        if value is None or isinstance(value, EventSpec):
            return value
        if not isinstance(value, Mapping):
            raise ValueError(f"events must be an object with queue_url, got {type(value).__name__}")
        unknown = set(value) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"events: unknown keys {sorted(unknown)}")
        if "queue_url" not in value:
            raise ValueError("events: missing 'queue_url'")
        return cls(**value)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SentEvent:
    """One event the double published (each copy is one), or tried to."""

    queue_url: str
    event_id: str
    detail_type: str
    due_at: float  # when the timeline said it should go out
    sent_at: float
    error: str | None = None


def step_counts(step: Mapping[str, Any]) -> dict[str, int] | None:
    """The finding-severity counts a normalized step answers with (as scan_body computes them), or None."""
    if "status" in step:
        if step.get("no_findings_object"):
            return None
        if "counts" in step:
            return None if step["counts"] is None else dict(step["counts"])
        return severity_counts(step.get("enhanced_findings", step.get("findings", [])))
    if "response" in step:
        findings = step["response"].get("imageScanFindings")
        counts = findings.get("findingSeverityCounts") if isinstance(findings, Mapping) else None
        return dict(counts) if isinstance(counts, Mapping) else None
    return None


def step_status(step: Mapping[str, Any]) -> str | None:
    if "status" in step:
        return str(step["status"])
    if "response" in step:
        scan_status = step["response"].get("imageScanStatus")
        return scan_status.get("status") if isinstance(scan_status, Mapping) else None
    return None


def scan_event_for(
    spec: EventSpec,
    step: Mapping[str, Any],
    *,
    repository: str,
    digest: str,
    tag: str | None,
    account: str,
    region: str,
    when: float,
) -> dict[str, Any]:
    """The event a finished timeline publishes: its final step's status and counts, its image."""
    counts, status = step_counts(step), step_status(step)
    tags = [tag] if tag else []
    if spec.scanner == "enhanced":
        return inspector2_scan_event(
            repository,
            digest,
            tags,
            status=spec.status or "INITIAL_SCAN_COMPLETE",
            counts=counts,
            account=account,
            region=region,
            when=when,
        )
    sent_status = spec.status or ("FAILED" if status == "FAILED" else "COMPLETE")
    return ecr_image_scan_event(
        repository,
        digest,
        tags,
        status=sent_status,
        counts=counts if sent_status == "COMPLETE" else None,  # a failed scan counted nothing
        account=account,
        region=region,
        when=when,
    )


# -- SQS, through whatever boto3 SQS client the caller gives (the double's goes straight to moto) ------


def create_queue(
    client: Any,
    name: str,
    *,
    dead_letter: bool = False,
    max_receives: int | None = None,
    visibility_timeout: int | None = None,
) -> str:
    """Create a queue; returns moto's URL. With dead_letter or max_receives, also "<name>-dlq" and a
    RedrivePolicy moving a message there after max_receives receives (default 3)."""
    if not isinstance(name, str) or not name:
        raise ValueError("name must be a non-empty queue name")
    if max_receives is not None and (
        isinstance(max_receives, bool) or not isinstance(max_receives, int) or not 1 <= max_receives <= 1000
    ):
        raise ValueError(f"max_receives must be an integer 1..1000 (SQS's maxReceiveCount), got {max_receives!r}")
    attributes: dict[str, str] = {}
    if visibility_timeout is not None:
        if isinstance(visibility_timeout, bool) or not isinstance(visibility_timeout, int):
            raise ValueError(f"visibility_timeout must be whole seconds, got {visibility_timeout!r}")
        attributes["VisibilityTimeout"] = str(visibility_timeout)
    if dead_letter or max_receives is not None:
        dlq_url = client.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
        arn = client.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        receives = str(max_receives or 3)
        attributes["RedrivePolicy"] = json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": receives})
    return str(client.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"])


def send_event(client: Any, queue_url: str, body: Mapping[str, Any] | str) -> str:
    """Send one message (an event object, or a raw string for a poison message); returns its MessageId."""
    text = body if isinstance(body, str) else json.dumps(body)
    return str(client.send_message(QueueUrl=queue_url, MessageBody=text)["MessageId"])


def receive_messages(
    client: Any, queue_url: str, *, wait_s: int = 0, delete: bool = True, max_messages: int = 100
) -> list[dict[str, Any]]:
    """Every message now visible (the first receive long-polls wait_s), as boto3 returns them.

    delete=False peeks: the messages are made visible again at once. Either way each one counts a receive,
    which a RedrivePolicy's maxReceiveCount sees.
    """
    if isinstance(wait_s, bool) or not isinstance(wait_s, int) or not 0 <= wait_s <= 20:
        raise ValueError(f"wait_s must be whole seconds 0..20 (SQS's WaitTimeSeconds), got {wait_s!r}")
    found: list[dict[str, Any]] = []
    wait = wait_s
    while len(found) < max_messages:
        answer = client.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=min(10, max_messages - len(found)),
            WaitTimeSeconds=wait,
            AttributeNames=["All"],
        )
        batch = answer.get("Messages") or []
        if not batch:
            break
        found.extend(batch)
        wait = 0  # later batches: whatever is there now
    for message in found:
        if delete:
            client.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        else:
            client.change_message_visibility(
                QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
            )
    return found


def public_queue_url(moto_url: str, endpoint_url: str) -> str:
    """The queue's URL on the proxy: what a process pointed at the double is configured with. moto names a
    queue by the URL's path, so either host reaches the same queue."""
    return endpoint_url.rstrip("/") + urlsplit(moto_url).path


# -- the timer ------------------------------------------------------------------------------------------


class _EventTimer:
    """One daemon thread running actions at their wall times; cancel_all drops what has not run yet."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()  # same time: first scheduled runs first (a push before its scan)
        self._thread: threading.Thread | None = None
        self._generation = 0  # close() bumps it: that thread exits even if a new one has started since

    def schedule(self, when: float, action: Callable[[], None]) -> None:
        with self._cond:
            heapq.heappush(self._heap, (when, next(self._order), action))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, args=(self._generation,), name="ecr-double-events", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()

    def pending(self) -> int:
        with self._cond:
            return len(self._heap)

    def cancel_all(self) -> None:
        with self._cond:
            self._heap.clear()
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._generation += 1
            self._heap.clear()
            thread, self._thread = self._thread, None
            self._cond.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def _run(self, generation: int) -> None:
        while True:
            with self._cond:
                while generation == self._generation:
                    wait = self._heap[0][0] - time.time() if self._heap else None
                    if wait is not None and wait <= 0:
                        break
                    self._cond.wait(timeout=wait)
                if generation != self._generation:
                    return
                _, _, action = heapq.heappop(self._heap)
            try:
                action()  # outside the lock: a slow send must not hold up scheduling
            except Exception:  # keep the timer alive for the other scripts; say what went wrong
                traceback.print_exc(file=sys.stderr)
