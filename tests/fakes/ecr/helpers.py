"""Set-up helpers shared by the in-process double and the remote control, and their HTTP/boto3 clients."""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from .builders import scan_body
from .constants import SCAN_OP
from .steps import normalize_steps


class _Helpers:
    """Set-up (repositories, images, scans, injected results) through some boto3 client."""

    region: str
    account_id: str

    def _setup_client(self, region: str | None) -> Any:
        raise NotImplementedError

    def _moto_api(self, path: str, payload: Mapping[str, Any]) -> None:
        raise NotImplementedError

    def digest_of(self, repository: str, tag: str, region: str | None = None) -> str | None:
        """The digest moto holds for repository:tag, or None."""
        return self._lookup_digest(region or self.region, self.account_id, repository, tag)

    def _lookup_digest(self, region: str, registry_id: str, repository: str, tag: str) -> str | None:
        try:
            answer = self._setup_client(region).describe_images(
                registryId=registry_id, repositoryName=repository, imageIds=[{"imageTag": tag}]
            )
        except ClientError:
            return None
        details = answer.get("imageDetails") or []
        return details[0].get("imageDigest") if details else None

    def create_repository(
        self, name: str, scan_on_push: bool = False, mutability: str = "MUTABLE", region: str | None = None
    ) -> dict[str, Any]:
        """Create a repository in moto; returns ECR's repository object."""
        return self._setup_client(region).create_repository(
            repositoryName=name,
            imageTagMutability=mutability,
            imageScanningConfiguration={"scanOnPush": scan_on_push},
        )["repository"]

    def push_image(self, repository: str, tag: str, region: str | None = None) -> str:
        """Put an image with a unique, valid manifest; returns its digest. moto starts no scan for it."""
        nonce = uuid.uuid4().hex
        layer = "sha256:" + hashlib.sha256(f"layer:{repository}:{tag}:{nonce}".encode()).hexdigest()
        config = "sha256:" + hashlib.sha256(f"config:{nonce}".encode()).hexdigest()
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 1469, "digest": config},
            "layers": [
                {"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 2811478, "digest": layer}
            ],
        }
        answer = self._setup_client(region).put_image(
            repositoryName=repository, imageManifest=json.dumps(manifest), imageTag=tag
        )
        return answer["image"]["imageId"]["imageDigest"]

    def start_scan(
        self, repository: str, tag: str | None = None, digest: str | None = None, region: str | None = None
    ) -> dict[str, Any]:
        """moto's StartImageScan: afterwards moto answers COMPLETE (its canned or injected result)."""
        return self._setup_client(region).start_image_scan(repositoryName=repository, imageId=_image_id(tag, digest))

    def inject_results(
        self,
        repository: str,
        step: Mapping[str, Any],
        *,
        tag: str | None = None,
        digest: str | None = None,
        region: str | None = None,
    ) -> dict[str, Any]:
        """Give moto the answer a status step stands for (moto binds it to the first image that asks).

        Unlike a script it is moto's own behaviour: fixed once bound, ScanNotFound until a scan starts.
        """
        checked = normalize_steps([step], SCAN_OP)[0]
        if "status" not in checked:
            raise ValueError("inject_results takes a status step")
        if tag and not digest:
            digest = self.digest_of(repository, tag, region)  # as ECR would answer a call by tag
        image_id = _image_id(tag, digest)
        body = scan_body(checked, registry_id=self.account_id, repository=repository, image_id=image_id)
        self._moto_api(
            "/moto-api/static/ecr/scan-finding-results",
            {"results": [body], "region": region or self.region, "account_id": self.account_id},
        )
        return body


def _image_id(tag: str | None, digest: str | None) -> dict[str, str]:
    if not tag and not digest:
        raise ValueError("name the image by tag or digest")
    return {k: v for k, v in (("imageTag", tag), ("imageDigest", digest)) if v}


def _dummy_client(endpoint_url: str, region: str, attempts: int = 1, **config: Any) -> Any:
    return boto3.client(
        "ecr",
        region_name=region,
        endpoint_url=endpoint_url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # moto's dummy credentials
        config=Config(retries={"total_max_attempts": attempts}, **config),
    )


def _sqs_client(endpoint_url: str, region: str) -> Any:
    return boto3.client(
        "sqs",
        region_name=region,
        endpoint_url=endpoint_url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def _post_json(url: str, payload: Mapping[str, Any], method: str = "POST") -> Any:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            data = response.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        raise ValueError(f"{method} {url} -> HTTP {exc.code}: {detail}") from None
    return json.loads(data) if data else None
