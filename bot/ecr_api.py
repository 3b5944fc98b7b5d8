"""Thin boto3 adapter for ECR: read scan findings (all pages) and image digests; errors become types."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from bot.config import EcrSettings
from bot.errors import TransientError
from bot.models import ScanResult
from bot.scan import classify_error, classify_response, merge_pages

DESCRIBE_FINDINGS = "ecr:DescribeImageScanFindings"


@dataclass(frozen=True)
class ImageRef:
    """Where an image lives in ECR. Built from config only, never from a webhook payload."""

    repository: str
    tag: str = ""
    digest: str = ""
    region: str = "us-east-1"
    registry_id: str | None = None
    role_arn: str | None = None

    def image_id(self) -> dict[str, str]:
        # Once known, the digest wins: a mutable tag can be re-pointed mid-pipeline.
        return {"imageDigest": self.digest} if self.digest else {"imageTag": self.tag}

    def request(self) -> dict[str, Any]:
        args: dict[str, Any] = {"repositoryName": self.repository, "imageId": self.image_id()}
        if self.registry_id:
            args["registryId"] = self.registry_id
        return args


class _RoleCache:
    """Assumed-role sessions per role ARN, refreshed five minutes before they expire."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sessions: dict[tuple[str, str], tuple[boto3.Session, float]] = {}

    def session(self, role_arn: str, region: str) -> boto3.Session:
        key = (role_arn, region)
        with self._lock:
            cached = self._sessions.get(key)
            if cached and cached[1] - 300 > time.time():
                return cached[0]
            creds = boto3.client("sts", region_name=region).assume_role(
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

    def client(self, image: ImageRef) -> Any:
        try:
            if image.role_arn:
                return _roles.session(image.role_arn, image.region).client("ecr", config=self._config)
            return boto3.client("ecr", region_name=image.region, config=self._config)
        except ClientError as exc:
            # AssumeRole refused: the bot's identity cannot reach this account.
            code = exc.response.get("Error", {}).get("Code", "")
            raise _AssumeRoleDenied(f"sts:AssumeRole on {image.role_arn} refused ({code})") from None

    def scan_findings(self, image: ImageRef, page_size: int = 1000) -> ScanResult:
        """Read every page of DescribeImageScanFindings and classify it. Raises TransientError."""
        try:
            paginator = self.client(image).get_paginator("describe_image_scan_findings")
            pages = list(paginator.paginate(**image.request(), PaginationConfig={"PageSize": page_size}))
        except _AssumeRoleDenied as exc:
            return classify_error("AccessDenied", str(exc), 403, "sts:AssumeRole")
        except ClientError as exc:
            return _client_error(exc, DESCRIBE_FINDINGS)
        except NoCredentialsError:
            return classify_error("NoCredentials", "no AWS credentials found", None, DESCRIBE_FINDINGS)
        except BotoCoreError as exc:
            raise TransientError(f"ECR unreachable: {type(exc).__name__}") from None
        return classify_response(merge_pages(pages))


class _AssumeRoleDenied(Exception):
    pass
