"""Thin boto3 adapter for the events queue: SQS receive/delete/send, and the queue and rule reads of `doctor`."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    NoCredentialsError,
    NoRegionError,
    ParamValidationError,
    ReadTimeoutError,
)

from bot.core.errors import PermanentError, TransientError
from bot.core.scan import TRANSIENT_CODES
from bot.core.settings import EventsSettings, Settings

RECEIVE = "sqs:ReceiveMessage"
DELETE = "sqs:DeleteMessage"  # DeleteMessageBatch is authorised as DeleteMessage
CHANGE_VISIBILITY = "sqs:ChangeMessageVisibility"
GET_ATTRIBUTES = "sqs:GetQueueAttributes"
SEND = "sqs:SendMessage"
LIST_RULES_BY_TARGET = "events:ListRuleNamesByTarget"
DESCRIBE_RULE = "events:DescribeRule"

MAX_WAIT_S = 20  # SQS's longest long poll
MAX_BATCH = 10  # SQS's largest receive and delete batch
_RULE_PAGES = 20  # ListRuleNamesByTarget pages of 100: far more rules than one queue has targets
# JSON-protocol SQS answers the modelled name, query-compatible clients the legacy code; both mean the same.
_MISSING = frozenset({"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist", "ResourceNotFoundException"})
_DENIED = frozenset({"AccessDenied", "AccessDeniedException"})
_TRANSIENT = TRANSIENT_CODES | {
    "RequestThrottled",
    "KmsThrottled",
    "InternalError",
    "InternalException",
    "OverLimit",  # too many messages in flight: frees up as the process deletes them
}

T = TypeVar("T")


class AwsCallError(PermanentError):
    """A final refusal of one SQS or EventBridge call; `code` is AWS's error code, `action` the IAM action."""

    def __init__(self, action: str, code: str, message: str, status: int = 0) -> None:
        super().__init__(f"{action}: {code}: {message}"[:300], status)
        self.action, self.code = action, code

    @property
    def denied(self) -> bool:
        # moto (and a proxy) can answer a bare 403; KMS refusals are 4xx with their own Kms* codes.
        return self.code in _DENIED or (self.status == 403 and not self.code.startswith("Kms"))

    @property
    def missing(self) -> bool:
        return self.code in _MISSING


def _client_error(exc: ClientError, action: str) -> Exception:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    message = str(error.get("Message", ""))[:200]
    if code in _TRANSIENT or status >= 500:
        return TransientError(f"{action}: {code or status}: {message}"[:300])
    return AwsCallError(action, code or str(status), message, status)


def _delete_batch(client: Any, queue_url: str, entries: list[dict[str, str]]) -> Any:
    return client.delete_message_batch(QueueUrl=queue_url, Entries=entries)


def _list_rules(client: Any, args: dict[str, Any]) -> Any:
    return client.list_rule_names_by_target(**args)


class SqsApi:
    """One call per method, no sleeping retries inside (the caller's loop retries): the events queue's edge."""

    def __init__(self, events: EventsSettings, connect_timeout_s: float = 5.0, read_timeout_s: float = 20.0) -> None:
        # [events] region, else the one in the queue URL, else "" = the default chain's (AWS_REGION, the profile).
        self.region = events.queue_region
        retries = {"total_max_attempts": 1, "mode": "standard"}
        self._config = Config(connect_timeout=connect_timeout_s, read_timeout=read_timeout_s, retries=retries)
        # A long poll holds the connection for up to 20 s by design: its read timeout must outlast it.
        self._long_config = Config(
            connect_timeout=connect_timeout_s, read_timeout=read_timeout_s + MAX_WAIT_S, retries=retries
        )
        self._lock = threading.Lock()
        self._clients: dict[str, Any] = {}

    @classmethod
    def for_settings(cls, settings: Settings) -> SqsApi:
        """The queue's region from [events], the call timeouts of [ecr] (same network, same limits)."""
        return cls(settings.events, settings.ecr.connect_timeout_s, settings.ecr.read_timeout_s)

    def _client(self, kind: str) -> Any:
        with self._lock:
            if kind not in self._clients:
                service, config = ("sqs", self._long_config) if kind == "sqs-long" else (kind, self._config)
                # No endpoint_url: boto3 itself honours AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_SQS (tests, LocalStack).
                self._clients[kind] = boto3.client(service, region_name=self.region or None, config=config)
            return self._clients[kind]

    def _call(self, action: str, kind: str, fn: Callable[[Any], T]) -> T:
        """One boto3 call; final refusals raise AwsCallError, throttling, 5xx and network errors TransientError."""
        try:
            return fn(self._client(kind))
        except ClientError as exc:
            raise _client_error(exc, action) from None
        except NoCredentialsError:
            raise AwsCallError(action, "NoCredentials", "no AWS credentials found") from None
        except NoRegionError:
            raise AwsCallError(action, "NoRegion", "no AWS region: set [events] region or AWS_REGION") from None
        except ParamValidationError as exc:
            raise AwsCallError(action, "InvalidParameter", str(exc).replace("\n", " ")[:200]) from None
        except (ReadTimeoutError, ConnectionClosedError) as exc:
            # The request went out: a send or delete may have been applied anyway.
            raise TransientError(f"{action}: {type(exc).__name__}", uncertain=True) from None
        except BotoCoreError as exc:
            raise TransientError(f"{action}: {type(exc).__name__}") from None

    # -- the events process ------------------------------------------------------------------------------

    def receive(
        self, queue_url: str, max_messages: int, wait_s: int, visibility_timeout_s: int
    ) -> list[dict[str, Any]]:
        """Up to `max_messages` messages (MessageId, ReceiptHandle, Body, Attributes), after a long poll of `wait_s`."""
        answer = self._call(
            RECEIVE,
            "sqs-long",
            lambda c: c.receive_message(
                QueueUrl=queue_url,
                MaxNumberOfMessages=max(1, min(MAX_BATCH, max_messages)),
                WaitTimeSeconds=max(0, min(MAX_WAIT_S, wait_s)),
                VisibilityTimeout=visibility_timeout_s,
                # The receive count tells a poison message from a slow one; SentTimestamp gives the event's lag.
                MessageSystemAttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
            ),
        )
        return [dict(m) for m in answer.get("Messages") or ()]

    def delete(self, queue_url: str, entries: Sequence[tuple[str, str]]) -> list[str]:
        """Delete (id, receipt handle) pairs in batches of 10; returns the ids not deleted.

        Throttling or a network error on a batch counts its ids as not deleted (they come back after the
        visibility timeout, and the event id dedupes them); a refusal such as AccessDenied raises AwsCallError.
        """
        failed: list[str] = []
        for start in range(0, len(entries), MAX_BATCH):
            chunk = entries[start : start + MAX_BATCH]
            batch = [{"Id": i, "ReceiptHandle": handle} for i, handle in chunk]
            try:
                answer = self._call(DELETE, "sqs", partial(_delete_batch, queue_url=queue_url, entries=batch))
            except TransientError:
                failed += [i for i, _ in chunk]
                continue
            failed += [str(f.get("Id", "")) for f in answer.get("Failed") or ()]
        return failed

    def change_visibility(self, queue_url: str, receipt_handle: str, timeout_s: int) -> None:
        """Hide a message longer (work still running) or show it again at once (timeout_s=0)."""
        self._call(
            CHANGE_VISIBILITY,
            "sqs",
            lambda c: c.change_message_visibility(
                QueueUrl=queue_url, ReceiptHandle=receipt_handle, VisibilityTimeout=timeout_s
            ),
        )

    def send(self, queue_url: str, body: str) -> None:
        """SendMessage: how the process moves a poison message to [events] dead_letter_url."""
        self._call(SEND, "sqs", lambda c: c.send_message(QueueUrl=queue_url, MessageBody=body))

    # -- doctor ------------------------------------------------------------------------------------------

    def queue_attributes(self, queue_url: str) -> dict[str, str]:
        """GetQueueAttributes All: QueueArn, VisibilityTimeout, RedrivePolicy, Policy, encryption, counts."""
        answer = self._call(
            GET_ATTRIBUTES, "sqs", lambda c: c.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])
        )
        return {str(k): str(v) for k, v in (answer.get("Attributes") or {}).items()}

    def rule_names_by_target(self, target_arn: str) -> list[str]:
        """Names of the rules on this account's default event bus that send to `target_arn`."""
        names: list[str] = []
        token = ""
        for _ in range(_RULE_PAGES):
            args: dict[str, Any] = {"TargetArn": target_arn, **({"NextToken": token} if token else {})}
            answer = self._call(LIST_RULES_BY_TARGET, "events", partial(_list_rules, args=args))
            names += [str(n) for n in answer.get("RuleNames") or ()]
            token = str(answer.get("NextToken") or "")
            if not token:
                break
        return names

    def describe_rule(self, name: str) -> dict[str, Any]:
        """DescribeRule on the default bus: Arn, State, EventPattern (a JSON string) and the rest."""
        answer = self._call(DESCRIBE_RULE, "events", lambda c: c.describe_rule(Name=name))
        return {k: v for k, v in answer.items() if k != "ResponseMetadata"}
