"""The `events` process: long-polls SQS for ECR scan and push events and queues one task per event, at least once."""

from __future__ import annotations

import logging
import random
import signal
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from bot.adapters import metrics
from bot.adapters.metrics_server import serve
from bot.adapters.queue import producer
from bot.adapters.sqs import SqsApi
from bot.config import load_settings
from bot.core.errors import ConfigError, GateError
from bot.core.ops_settings import LogFormat
from bot.core.scan_events import Ignored, PoisonMessage, event_to_dict, parse_message
from bot.core.settings import EventsSettings
from bot.logs import configure, hold

log = logging.getLogger("ecr_scan_gate.events")

TASK = "gate.registry_event"
# After SQS or Redis failed, wait 1 s doubling to 30 s (jittered): long enough not to spin on an outage,
# short enough that events resume within half a minute of it ending. This process only waits on I/O.
BACKOFF_START_S = 1.0
BACKOFF_MAX_S = 30.0


class Queue(Protocol):
    def receive(self, queue_url: str, max_messages: int, wait_s: int, visibility_timeout_s: int) -> list[dict]: ...

    def delete(self, queue_url: str, entries: list[tuple[str, str]]) -> list[str]: ...

    def send(self, queue_url: str, body: str) -> None: ...


Enqueue = Callable[[str, dict[str, Any], str], str]


@dataclass
class Batch:
    """What one received batch came to: messages to delete, and how many of each kind."""

    delete: list[tuple[str, str]] = field(default_factory=list)  # (message id, receipt handle)
    queued: int = 0
    ignored: int = 0
    dead: int = 0  # poison, moved to the dead-letter queue
    kept: int = 0  # left in the queue: they come back after the visibility timeout
    failed: bool = False  # queueing failed (Redis down): back off before receiving again


def handle(messages: Sequence[Mapping[str, Any]], enqueue: Enqueue, queue: Queue, config: EventsSettings) -> Batch:
    """Queue a task for each event; a message is deleted only once its task is queued (or it needs none)."""
    batch = Batch()
    for message in messages:
        entry = (str(message.get("MessageId", "")), str(message.get("ReceiptHandle", "")))
        body = message.get("Body")
        try:
            parsed = parse_message(body if isinstance(body, str) else "")
        except PoisonMessage as exc:
            if _dead_letter(queue, config, entry[0], body, str(exc)):
                batch.delete.append(entry)
                batch.dead += 1
            else:
                batch.kept += 1
            continue
        if isinstance(parsed, Ignored):
            log.info("message %s: %s: nothing to do", entry[0], parsed.reason)
            batch.delete.append(entry)
            batch.ignored += 1
            continue
        if batch.failed:
            batch.kept += 1  # Redis is failing: don't try every message of the batch against it
            continue
        try:
            enqueue(TASK, event_to_dict(parsed), "")
        except Exception as exc:  # noqa: BLE001 - any broker failure: the message stays for a later try
            log.warning("message %s: not queued (%s): it stays in SQS", entry[0], type(exc).__name__)
            batch.failed = True
            batch.kept += 1
            continue
        batch.delete.append(entry)
        batch.queued += 1
    return batch


def _dead_letter(queue: Queue, config: EventsSettings, message_id: str, body: object, why: str) -> bool:
    """Move a poison message to the dead-letter queue; True if moved (then it may be deleted)."""
    if not config.dead_letter_url:
        log.error("message %s is poison (%s): left to the queue's redrive policy", message_id, why)
        return False
    try:
        queue.send(config.dead_letter_url, body if isinstance(body, str) else "")
    except GateError as exc:
        log.error("message %s is poison (%s) and could not be dead-lettered: %s", message_id, why, exc)
        return False
    log.error("message %s is poison (%s): moved to the dead-letter queue", message_id, why)
    return True


@dataclass
class Stopping:
    """Set by SIGTERM: a process waiting in a long poll exits at once (whatever SQS hands it then comes back
    after the visibility timeout); one handling a batch exits after it."""

    stop: threading.Event = field(default_factory=threading.Event)
    receiving: bool = False

    def signal(self, *_: object) -> None:
        self.stop.set()
        if self.receiving:
            raise SystemExit(0)


def run(config: EventsSettings, queue: Queue, enqueue: Enqueue, state: Stopping, rng: random.Random) -> None:
    """Receive, queue, delete, until asked to stop."""
    delay = BACKOFF_START_S
    stop = state.stop
    while not stop.is_set():
        try:
            state.receiving = True
            try:
                messages = queue.receive(config.queue_url, config.batch, config.wait_s, config.visibility_timeout_s)
            finally:
                state.receiving = False
            batch = handle(messages, enqueue, queue, config)
            for outcome in ("queued", "ignored", "dead", "kept"):
                if getattr(batch, outcome):
                    metrics.REGISTRY_EVENTS.labels(outcome=outcome).inc(getattr(batch, outcome))
            if batch.delete:
                for failed in queue.delete(config.queue_url, batch.delete):
                    # Not deleted: it comes back and is queued again; the task drops the duplicate by event id.
                    log.warning("message %s queued but not deleted: it will be seen again", failed)
        except GateError as exc:
            log.warning("SQS: %s; retrying in %.0f s", exc, delay)
            stop.wait(rng.uniform(delay / 2, delay))
            delay = min(delay * 2, BACKOFF_MAX_S)
            continue
        if messages:
            log.info(
                "batch of %d: %d queued, %d ignored, %d dead-lettered, %d kept",
                len(messages),
                batch.queued,
                batch.ignored,
                batch.dead,
                batch.kept,
            )
        if batch.failed:
            stop.wait(rng.uniform(delay / 2, delay))
            delay = min(delay * 2, BACKOFF_MAX_S)
        else:
            delay = BACKOFF_START_S


def main() -> int:
    held = hold()  # the config's warnings come out once logging is set up, in its format
    try:
        settings = load_settings()
    except ConfigError as exc:
        held.replay()
        print(exc, file=sys.stderr)
        return 3
    held.detach()
    configure(settings.logging.format is LogFormat.JSON, settings.logging.level, settings.secret_values())
    held.replay()
    if not settings.events.enabled:
        log.error("[events] queue_url is not set: nothing to consume (events are off; verdicts come by polling)")
        return 2
    state = Stopping()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, state.signal)
    log.info(
        "consuming %s (long poll %d s, batches of %d)",
        settings.events.queue_url,
        settings.events.wait_s,
        settings.events.batch,
    )
    if settings.metrics.enabled and settings.metrics.events_port:
        serve(settings.metrics.bind, settings.metrics.events_port, "events", settings.metrics_token.get_secret_value())
    queue = SqsApi.for_settings(settings)
    run(settings.events, queue, producer(settings), state, random.Random())  # noqa: S311 - jitter only
    log.info("stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
