"""EcrControl: drives a double running in another process through its proxy's /_ecr/ routes."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

from .book import Call
from .constants import DEFAULT_ACCOUNT, DEFAULT_REGION, SCAN_OP
from .helpers import _dummy_client, _Helpers, _post_json


class EcrControl(_Helpers):
    """The same control, from another process, through the proxy's /_ecr/ routes."""

    def __init__(self, endpoint_url: str, region: str = DEFAULT_REGION, account_id: str = DEFAULT_ACCOUNT) -> None:
        self.endpoint_url, self.region, self.account_id = endpoint_url.rstrip("/"), region, account_id

    def script(
        self,
        repository: str,
        *,
        steps: Sequence[Mapping[str, Any]],
        tag: str | None = None,
        digest: str | None = None,
        op: str = SCAN_OP,
        registry_id: str | None = None,
    ) -> str | None:
        payload = {
            "repository": repository,
            "steps": list(steps),
            "tag": tag,
            "digest": digest,
            "op": op,
            "registry_id": registry_id,
        }
        return _post_json(f"{self.endpoint_url}/_ecr/script", payload)["digest"]

    def calls(self, op: str | None = None, repository: str | None = None) -> list[Call]:
        query = urlencode({k: v for k, v in (("op", op), ("repository", repository)) if v is not None})
        url = f"{self.endpoint_url}/_ecr/calls" + (f"?{query}" if query else "")
        with urllib.request.urlopen(url, timeout=30) as response:
            return [Call(**c) for c in json.loads(response.read())["calls"]]

    def clear_calls(self) -> int:
        return _post_json(f"{self.endpoint_url}/_ecr/calls", {}, method="DELETE")["cleared"]

    def reset(self, moto: bool = False) -> None:
        _post_json(f"{self.endpoint_url}/_ecr/reset", {"moto": moto})

    def client(self, region: str | None = None, attempts: int = 1, **config: Any) -> Any:
        return _dummy_client(self.endpoint_url, region or self.region, attempts, **config)

    def _setup_client(self, region: str | None) -> Any:
        return self.client(region)

    def _moto_api(self, path: str, payload: Mapping[str, Any]) -> None:
        _post_json(f"{self.endpoint_url}{path}", payload)  # the proxy forwards /moto-api/ to moto
