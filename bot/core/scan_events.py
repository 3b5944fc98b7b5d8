"""Pure: EventBridge events about ECR images (scan done, push) from an SQS message body, and which gates they name."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from bot.core.models import Image


class EventKind(StrEnum):
    SCAN = "scan"  # a scan finished (or failed): read the findings now
    PUSH = "push"  # an image was pushed: its gate may start
    # Inspector created, updated or closed a finding of an image it keeps scanning (a CVE published after
    # the merge): a watched digest is read again soon, not at tomorrow's rescan.
    FINDING = "finding"


class Scanner(StrEnum):
    BASIC = "basic"
    ENHANCED = "enhanced"


# detail-type -> (source, kind, scanner): every event the rule in docs/events.md sends, and nothing else.
DETAIL_TYPES: dict[str, tuple[str, EventKind, Scanner | None]] = {
    "ECR Image Scan": ("aws.ecr", EventKind.SCAN, Scanner.BASIC),
    "Inspector2 Scan": ("aws.inspector2", EventKind.SCAN, Scanner.ENHANCED),
    "ECR Image Action": ("aws.ecr", EventKind.PUSH, None),
    "Inspector2 Finding": ("aws.inspector2", EventKind.FINDING, Scanner.ENHANCED),
}
ECR_IMAGE = "AWS_ECR_CONTAINER_IMAGE"  # the resource type of an Inspector finding about an ECR image
MAX_MESSAGE_BYTES = 256 * 1024  # SQS's own limit: anything larger did not come from SQS
_ARN = re.compile(r"^arn:aws[a-z-]*:ecr:([a-z0-9-]+):(\d{12}):repository/(.+)$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_REPOSITORY = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$")
_ACCOUNT = re.compile(r"^\d{12}$")
_REGION = re.compile(r"^[a-z]{2}(?:-[a-z]+)+-\d$")


class PoisonMessage(ValueError):
    """A message that is not an event this product knows: it goes to the dead-letter queue, never retried."""


@dataclass(frozen=True)
class RegistryEvent:
    """One ECR image event. Its counts are kept for logs only: a verdict always comes from a findings read."""

    id: str
    kind: EventKind
    account: str
    region: str
    repository: str
    digest: str
    tags: tuple[str, ...] = ()
    scanner: Scanner | None = None
    status: str = ""  # scan-status (COMPLETE, FAILED, INITIAL_SCAN_COMPLETE, …) or a push's result
    time: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    finding: str = ""  # a finding event's vulnerability (CVE id or title), for logs

    @property
    def where(self) -> str:
        return f"{self.account}/{self.region}/{self.repository}@{self.digest[:19]}"


@dataclass(frozen=True)
class Ignored:
    """An event we know and need not act on (a failed push, a DELETE); the message is deleted."""

    reason: str


def parse_message(body: str | bytes) -> RegistryEvent | Ignored:
    """The event in an SQS message body (EventBridge delivers the event JSON as the body). Raises PoisonMessage."""
    if len(body) > MAX_MESSAGE_BYTES:
        raise PoisonMessage(f"message of {len(body)} bytes: larger than SQS allows")
    try:
        raw = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise PoisonMessage("message body is not JSON") from None
    if not isinstance(raw, Mapping):
        raise PoisonMessage("message body is not a JSON object")
    detail_type = raw.get("detail-type")
    if detail_type not in DETAIL_TYPES:
        raise PoisonMessage(f"not an event this product reads: detail-type {_shown(detail_type)}")
    source, kind, scanner = DETAIL_TYPES[detail_type]
    if raw.get("source") != source:
        raise PoisonMessage(f"{detail_type} from source {_shown(raw.get('source'))}, expected {source}")
    detail = raw.get("detail")
    if not isinstance(detail, Mapping):
        raise PoisonMessage(f"{detail_type} without a detail object")
    event_id = _text(raw, "id", 128)
    if kind is EventKind.FINDING:
        return _finding(raw, detail, event_id)
    account, region, repository = _where(raw, detail)
    digest = _text(detail, "image-digest", 100)
    if not _DIGEST.match(digest):
        raise PoisonMessage(f"{detail_type}: image-digest {_shown(digest)} is not a sha256 digest")
    if kind is EventKind.PUSH:
        action, result = detail.get("action-type"), detail.get("result")
        if action != "PUSH":
            return Ignored(f"image action {_shown(action)}, not a push")
        if result != "SUCCESS":
            return Ignored(f"push result {_shown(result)}")
        tag = detail.get("image-tag")
        tags: tuple[str, ...] = (tag,) if isinstance(tag, str) and tag else ()
        status = "SUCCESS"
    else:
        raw_tags = detail.get("image-tags") or []
        if not isinstance(raw_tags, list):
            raise PoisonMessage(f"{detail_type}: image-tags is not a list")
        tags = tuple(t for t in raw_tags if isinstance(t, str) and t)
        status = _text(detail, "scan-status", 64)
    return RegistryEvent(
        id=event_id,
        kind=kind,
        account=account,
        region=region,
        repository=repository,
        digest=digest,
        tags=tags,
        scanner=scanner,
        status=status,
        time=str(raw.get("time") or "")[:40],
        counts=_counts(detail.get("finding-severity-counts")),
    )


def _finding(raw: Mapping[str, Any], detail: Mapping[str, Any], event_id: str) -> RegistryEvent | Ignored:
    """An Inspector2 Finding: the image is the finding's AWS_ECR_CONTAINER_IMAGE resource (the Inspector Finding
    object: resources[].details.awsEcrContainerImage with registry, repositoryName, imageHash, imageTags)."""
    resources = detail.get("resources")
    if not isinstance(resources, list):
        raise PoisonMessage("Inspector2 Finding: resources is not a list")
    resource = next((r for r in resources if isinstance(r, Mapping) and r.get("type") == ECR_IMAGE), None)
    if resource is None:
        kinds = sorted({str(r.get("type"))[:40] for r in resources if isinstance(r, Mapping)})
        return Ignored(f"a finding about {', '.join(kinds) or 'no resource'}, not an ECR image")
    details = resource.get("details")
    image = details.get("awsEcrContainerImage") if isinstance(details, Mapping) else None
    if not isinstance(image, Mapping):
        raise PoisonMessage("Inspector2 Finding: an ECR image resource without awsEcrContainerImage details")
    region = resource.get("region") if isinstance(resource.get("region"), str) else raw.get("region")
    account, region, repository = _checked(
        _text(image, "registry", 12), str(region or ""), _text(image, "repositoryName", 2048)
    )
    digest = _text(image, "imageHash", 100)
    if not _DIGEST.match(digest):
        raise PoisonMessage(f"Inspector2 Finding: imageHash {_shown(digest)} is not a sha256 digest")
    raw_tags = image.get("imageTags") or []
    if not isinstance(raw_tags, list):
        raise PoisonMessage("Inspector2 Finding: imageTags is not a list")
    vulnerability = detail.get("packageVulnerabilityDetails")
    named = vulnerability.get("vulnerabilityId") if isinstance(vulnerability, Mapping) else None
    named = named if isinstance(named, str) and named else detail.get("title")
    return RegistryEvent(
        id=event_id,
        kind=EventKind.FINDING,
        account=account,
        region=region,
        repository=repository,
        digest=digest,
        tags=tuple(t for t in raw_tags if isinstance(t, str) and t),
        scanner=Scanner.ENHANCED,
        status=_text(detail, "status", 32) if isinstance(detail.get("status"), str) and detail["status"] else "",
        time=str(raw.get("time") or "")[:40],
        finding=named[:100] if isinstance(named, str) else "",
    )


def _where(raw: Mapping[str, Any], detail: Mapping[str, Any]) -> tuple[str, str, str]:
    """(account, region, repository): Inspector names the repository by ARN, which then wins over the envelope."""
    name = _text(detail, "repository-name", 2048)
    arn = _ARN.match(name)
    if arn:
        region, account, repository = arn.groups()
    else:
        account, region, repository = _text(raw, "account", 12), _text(raw, "region", 32), name
    return _checked(account, region, repository)


def _checked(account: str, region: str, repository: str) -> tuple[str, str, str]:
    """The three, each checked for its AWS form (a PoisonMessage otherwise)."""
    if not _ACCOUNT.match(account):
        raise PoisonMessage(f"account {_shown(account)} is not a 12-digit AWS account")
    if not _REGION.match(region):
        raise PoisonMessage(f"region {_shown(region)} is not an AWS region")
    if len(repository) > 256 or not _REPOSITORY.match(repository):
        raise PoisonMessage(f"repository-name {_shown(repository)} is not an ECR repository name")
    return account, region, repository


def _text(obj: Mapping[str, Any], key: str, limit: int) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise PoisonMessage(f"{key} missing or not a string")
    if len(value) > limit:
        raise PoisonMessage(f"{key} longer than {limit} characters")
    return value


def _counts(raw: object) -> dict[str, int]:
    if not isinstance(raw, Mapping):
        return {}
    return {str(k)[:20]: v for k, v in raw.items() if isinstance(v, int) and not isinstance(v, bool)}


def _shown(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value)[:60]
    return repr(text[:60])


def age_s(event: RegistryEvent, now: float) -> float | None:
    """Seconds since the event happened (its EventBridge `time`), None when it carries no readable time."""
    try:
        when = datetime.strptime(event.time, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None
    return now - when.timestamp()


def names(event: RegistryEvent, image: Image) -> bool:
    """True when `event` is about this gate's image: same region, repository and registry (an image of the
    bot's own account has registry_id ""), and its digest once ECR named one, else its tag. An event with no
    tags names an unpinned image of its repository too: reading ECR early costs one call and decides nothing."""
    if image.region != event.region or image.repository != event.repository:
        return False
    if image.registry_id and image.registry_id != event.account:
        return False
    if image.digest:
        return image.digest == event.digest
    return not event.tags or image.tag in event.tags


def event_to_dict(event: RegistryEvent) -> dict[str, Any]:
    return asdict(event)


def event_from_dict(data: Mapping[str, Any]) -> RegistryEvent:
    scanner = data.get("scanner")
    return RegistryEvent(
        id=str(data["id"]),
        kind=EventKind(data["kind"]),
        account=str(data["account"]),
        region=str(data["region"]),
        repository=str(data["repository"]),
        digest=str(data["digest"]),
        tags=tuple(data.get("tags") or ()),
        scanner=Scanner(scanner) if scanner else None,
        status=str(data.get("status") or ""),
        time=str(data.get("time") or ""),
        counts=dict(data.get("counts") or {}),
        finding=str(data.get("finding") or ""),
    )
