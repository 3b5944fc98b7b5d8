"""EcrControl: drives a double running in another process through its proxy's /_ecr/ routes."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

from .book import Call
from .constants import DEFAULT_ACCOUNT, DEFAULT_REGION, SCAN_OP
from .events import EventSpec, SentEvent
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
        events: EventSpec | Mapping[str, Any] | None = None,
    ) -> str | None:
        spec = EventSpec.coerce(events)  # checked here too, so a bad spec fails where it was written
        payload = {
            "repository": repository,
            "steps": list(steps),
            "tag": tag,
            "digest": digest,
            "op": op,
            "registry_id": registry_id,
            "events": None if spec is None else spec.to_dict(),
        }
        return _post_json(f"{self.endpoint_url}/_ecr/script", payload)["digest"]

    def completion_time(
        self,
        repository: str,
        tag: str | None = None,
        digest: str | None = None,
        op: str = SCAN_OP,
        registry_id: str | None = None,
    ) -> float | None:
        asked = {"repository": repository, "tag": tag, "digest": digest, "op": op, "registry_id": registry_id}
        query = urlencode({k: v for k, v in asked.items() if v is not None})
        return self._get(f"/_ecr/completion?{query}")["completed_at"]

    def events_sent(self) -> list[SentEvent]:
        return [SentEvent(**e) for e in self._get("/_ecr/events_sent")["events"]]

    def create_queue(
        self,
        name: str,
        dead_letter: bool = False,
        max_receives: int | None = None,
        visibility_timeout: int | None = None,
    ) -> str:
        payload = {
            "name": name,
            "dead_letter": dead_letter,
            "max_receives": max_receives,
            "visibility_timeout": visibility_timeout,
        }
        return _post_json(f"{self.endpoint_url}/_ecr/queues", payload)["queue_url"]

    def queue_url(self, name: str) -> str:
        return self._get(f"/_ecr/queues?{urlencode({'name': name})}")["queue_url"]

    def send_event(self, queue_url: str, body: Mapping[str, Any] | str) -> str:
        payload = {"queue_url": queue_url, "body": body}
        return _post_json(f"{self.endpoint_url}/_ecr/send_event", payload)["message_id"]

    def queue_messages(
        self, queue_url: str, *, wait_s: int = 0, delete: bool = True, max_messages: int = 100
    ) -> list[dict[str, Any]]:
        payload = {"queue_url": queue_url, "wait_s": wait_s, "delete": delete, "max_messages": max_messages}
        return _post_json(f"{self.endpoint_url}/_ecr/queue_messages", payload)["messages"]

    def calls(self, op: str | None = None, repository: str | None = None) -> list[Call]:
        query = urlencode({k: v for k, v in (("op", op), ("repository", repository)) if v is not None})
        return [Call(**c) for c in self._get("/_ecr/calls" + (f"?{query}" if query else ""))["calls"]]

    def clear_calls(self) -> int:
        return _post_json(f"{self.endpoint_url}/_ecr/calls", {}, method="DELETE")["cleared"]

    def reset(self, moto: bool = False) -> None:
        _post_json(f"{self.endpoint_url}/_ecr/reset", {"moto": moto})

    def client(self, region: str | None = None, attempts: int = 1, **config: Any) -> Any:
        return _dummy_client(self.endpoint_url, region or self.region, attempts, **config)

    def _get(self, path: str) -> Any:
        try:
            with urllib.request.urlopen(f"{self.endpoint_url}{path}", timeout=30) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            raise ValueError(f"GET {self.endpoint_url}{path} -> HTTP {exc.code}: {detail}") from None

    def _setup_client(self, region: str | None) -> Any:
        return self.client(region)

    def _moto_api(self, path: str, payload: Mapping[str, Any]) -> None:
        _post_json(f"{self.endpoint_url}{path}", payload)  # the proxy forwards /moto-api/ to moto
