"""Thin boto3 adapter for ECR: read scan findings (all pages), repository and registry settings; errors become types."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from bot.adapters import metrics
from bot.core.coverage import RegistryScanning, ScanningRule
from bot.core.errors import PermanentError, TransientError
from bot.core.models import Image, Reason, ScanResult
from bot.core.scan import TRANSIENT_CODES, classify_error, classify_response, merge_pages
from bot.core.settings import EcrSettings

DESCRIBE_FINDINGS = "ecr:DescribeImageScanFindings"
DESCRIBE_IMAGES = "ecr:DescribeImages"
DESCRIBE_REPOSITORIES = "ecr:DescribeRepositories"
GET_REGISTRY_SCANNING = "ecr:GetRegistryScanningConfiguration"
START_SCAN = "ecr:StartImageScan"

T = TypeVar("T")


def _image_id(image: Image) -> dict[str, str]:
    # Once known, the digest wins: a mutable tag can be re-pointed mid-pipeline.
    return {"imageDigest": image.digest} if image.digest else {"imageTag": image.tag}


def _request(image: Image) -> dict[str, Any]:
    args: dict[str, Any] = {"repositoryName": image.repository, "imageId": _image_id(image)}
    if image.registry_id:
        args["registryId"] = image.registry_id
    return args


class _RoleCache:
    """Assumed-role sessions per role ARN, refreshed five minutes before they expire."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sessions: dict[tuple[str, str], tuple[boto3.Session, float]] = {}

    def session(self, role_arn: str, region: str, config: Config | None = None) -> boto3.Session:
        key = (role_arn, region)
        with self._lock:
            cached = self._sessions.get(key)
            if cached and cached[1] - 300 > time.time():
                return cached[0]
            # The ECR client's config: bounded timeouts and no sleeping retries inside a worker.
            creds = boto3.client("sts", region_name=region, config=config).assume_role(
                RoleArn=role_arn, RoleSessionName="ecr-scan-gate"
            )["Credentials"]
            session = boto3.Session(
                aws_access_key_id=creds["AccessKeyId"],
                aws_secret_access_key=creds["SecretAccessKey"],
                aws_session_token=creds["SessionToken"],
                region_name=region,
            )
            self._sessions[key] = (session, creds["Expiration"].timestamp())
            return session


_roles = _RoleCache()


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "")) or "Unknown"


def _count(action: str, outcome: str) -> None:
    metrics.ECR_CALLS.labels(operation=action.removeprefix("ecr:"), outcome=outcome).inc()


def _client_error(exc: ClientError, action: str) -> ScanResult:
    error = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return classify_error(str(error.get("Code", "")), str(error.get("Message", "")), status, action)


class EcrApi:
    """One call per method; botocore's own sleeping retries are off so a worker never waits inside."""

    def __init__(self, settings: EcrSettings) -> None:
        self._config = Config(
            connect_timeout=settings.connect_timeout_s,
            read_timeout=settings.read_timeout_s,
            # One attempt: throttling and 5xx are retried by the caller's scheduler, not by sleeping here.
            retries={"total_max_attempts": 1, "mode": "standard"},
        )
        self._lock = threading.Lock()
        self._clients: dict[tuple[str, str], tuple[boto3.Session | None, Any]] = {}

    def client(self, image: Image) -> Any:
        """A client per region (and assumed role), kept: making one costs more CPU than the call it makes
        (py-spy, 1,000 polling gates: a fifth of a worker's busy time). boto3 clients are thread-safe."""
        try:
            if image.role_arn:
                session = _roles.session(image.role_arn, image.region, self._config)
            else:
                session = None
            key = (image.role_arn, image.region)
            with self._lock:
                cached = self._clients.get(key)
                if cached is not None and cached[0] is session:
                    return cached[1]
            made = (session or boto3).client("ecr", region_name=image.region, config=self._config)
            with self._lock:
                self._clients[key] = (session, made)  # a refreshed role session replaces its client
            return made
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            if code in TRANSIENT_CODES or status >= 500:
                # STS throttled or failed: asking again can help, so this is no verdict yet.
                raise TransientError(f"sts:AssumeRole on {image.role_arn}: {code or status}") from None
            # AssumeRole refused: the bot's identity cannot reach this account.
            raise _AssumeRoleDenied(f"sts:AssumeRole on {image.role_arn} refused ({code})") from None

    def scan_findings(self, image: Image, page_size: int = 1000) -> ScanResult:
        """Read every page of DescribeImageScanFindings and classify it. Raises TransientError."""
        try:
            paginator = self.client(image).get_paginator("describe_image_scan_findings")
            pages = list(paginator.paginate(**_request(image), PaginationConfig={"PageSize": page_size}))
        except _AssumeRoleDenied as exc:
            _count(DESCRIBE_FINDINGS, "denied")
            return classify_error("AccessDenied", str(exc), 403, "sts:AssumeRole")
        except ClientError as exc:
            _count(DESCRIBE_FINDINGS, metrics.ecr_outcome(_code(exc)))
            return _client_error(exc, DESCRIBE_FINDINGS)
        except NoCredentialsError:
            _count(DESCRIBE_FINDINGS, "denied")
            return classify_error("NoCredentials", "no AWS credentials found", None, DESCRIBE_FINDINGS)
        except BotoCoreError as exc:
            _count(DESCRIBE_FINDINGS, "unreachable")
            raise TransientError(f"ECR unreachable: {type(exc).__name__}") from None
        except TransientError:
            _count(DESCRIBE_FINDINGS, "throttled")  # STS throttled or failed while assuming the role
            raise
        _count(DESCRIBE_FINDINGS, "ok")
        return classify_response(merge_pages(pages))

    def _call(self, image: Image, action: str, fn: Callable[[Any], T]) -> T:
        """One boto3 call; final refusals raise EcrCallError, throttling and 5xx TransientError."""
        try:
            answer = fn(self.client(image))
        except _AssumeRoleDenied as exc:
            _count(action, "denied")
            raise EcrCallError(classify_error("AccessDenied", str(exc), 403, "sts:AssumeRole")) from None
        except ClientError as exc:
            _count(action, metrics.ecr_outcome(_code(exc)))
            raise EcrCallError(_client_error(exc, action)) from None
        except NoCredentialsError:
            _count(action, "denied")
            raise EcrCallError(classify_error("NoCredentials", "no AWS credentials found", None, action)) from None
        except BotoCoreError as exc:
            _count(action, "unreachable")
            raise TransientError(f"ECR unreachable: {type(exc).__name__}") from None
        except TransientError:
            _count(action, "throttled")
            raise
        _count(action, "ok")
        return answer

    def describe_repository(self, image: Image) -> RepositoryInfo:
        """DescribeRepositories for the image's repository."""
        args: dict[str, Any] = {"repositoryNames": [image.repository]}
        if image.registry_id:
            args["registryId"] = image.registry_id
        repo = self._call(image, DESCRIBE_REPOSITORIES, lambda c: c.describe_repositories(**args))["repositories"][0]
        return RepositoryInfo(
            name=str(repo.get("repositoryName") or image.repository),
            arn=str(repo.get("repositoryArn") or ""),
            registry_id=str(repo.get("registryId") or ""),
            # An absent setting is ECR's default: off.
            scan_on_push=bool((repo.get("imageScanningConfiguration") or {}).get("scanOnPush", False)),
            tag_mutability=str(repo.get("imageTagMutability") or "MUTABLE"),
        )

    def registry_scanning(self, image: Image) -> RegistryScanning:
        """The registry scanning configuration of the calling account in the image's region."""
        answer = self._call(image, GET_REGISTRY_SCANNING, lambda c: c.get_registry_scanning_configuration())
        config = answer.get("scanningConfiguration") or {}
        rules = tuple(
            ScanningRule(
                frequency=str(rule.get("scanFrequency") or ""),
                filters=tuple(str(f.get("filter") or "") for f in rule.get("repositoryFilters") or ()),
            )
            for rule in config.get("rules") or ()
        )
        # No configuration defined means BASIC (botocore's model documentation).
        return RegistryScanning(str(answer.get("registryId") or ""), str(config.get("scanType") or "BASIC"), rules)

    def describe_image(self, image: Image) -> ImageInfo:
        """DescribeImages for one image (by digest once known, else by tag)."""
        args = {"repositoryName": image.repository, "imageIds": [_image_id(image)]}
        if image.registry_id:
            args["registryId"] = image.registry_id
        detail = self._call(image, DESCRIBE_IMAGES, lambda c: c.describe_images(**args))["imageDetails"][0]
        return ImageInfo(
            digest=str(detail.get("imageDigest") or ""),
            tags=tuple(str(t) for t in detail.get("imageTags") or ()),
            scan_status=str((detail.get("imageScanStatus") or {}).get("status") or ""),
        )

    def caller_arn(self, region: str) -> str:
        """sts:GetCallerIdentity: who the default credential chain is. EcrCallError when there are none."""
        try:
            return str(boto3.client("sts", region_name=region, config=self._config).get_caller_identity()["Arn"])
        except NoCredentialsError:
            raise EcrCallError(
                classify_error("NoCredentials", "no AWS credentials found", None, "sts:GetCallerIdentity")
            ) from None
        except (ClientError, BotoCoreError) as exc:
            raise TransientError(f"sts:GetCallerIdentity failed: {type(exc).__name__}") from None

    def start_scan(self, image: Image) -> str:
        """StartImageScan; returns the scan status ECR answers (basic scanning only, one per image per day)."""
        answer = self._call(image, START_SCAN, lambda c: c.start_image_scan(**_request(image)))
        return str((answer.get("imageScanStatus") or {}).get("status") or "")


class _AssumeRoleDenied(Exception):
    pass


class EcrCallError(PermanentError):
    """A final ECR refusal of a non-scan call (not found, access denied, …), classified like a scan answer."""

    def __init__(self, result: ScanResult) -> None:
        super().__init__(f"{result.ecr_status}: {result.detail}"[:300])
        self.result = result

    @property
    def reason(self) -> Reason:
        return self.result.reason or Reason.ERROR


@dataclass(frozen=True)
class RepositoryInfo:
    """The repository settings that decide whether a gate can work: scan on push and tag mutability."""

    name: str
    arn: str
    registry_id: str
    scan_on_push: bool
    tag_mutability: str  # MUTABLE, IMMUTABLE, or the *_WITH_EXCLUSION variants


@dataclass(frozen=True)
class ImageInfo:
    digest: str
    tags: tuple[str, ...]
    scan_status: str = ""  # imageScanStatus.status as DescribeImages reports it, if any
