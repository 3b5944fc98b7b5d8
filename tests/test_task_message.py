"""The receiver's hand-built Celery message equals what send_task writes, and the receiver queues it atomically."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from bot.adapters.queue import producer
from bot.adapters.store import Store
from bot.adapters.task_message import queue_key, task_message
from bot.core.settings import Settings
from bot.web.app import create_app
from tests import harness
from tests.fakes.payloads import pipeline_payload, webhook_headers
from tests.harness import WEBHOOK_SECRET

# Differ per message or per process by design: ids, the reply queue (results are ignored) and the origin.
PER_MESSAGE = {("headers", "id"), ("headers", "root_id"), ("headers", "origin")}
PER_MESSAGE |= {("properties", k) for k in ("correlation_id", "reply_to", "delivery_tag")}


@pytest.fixture
def mine(settings: Settings, redis_url: str) -> Iterator[Settings]:
    prefix = f"esgtest-msg-{secrets.token_hex(4)}"
    yield settings.model_copy(update={"redis": settings.redis.model_copy(update={"key_prefix": prefix})})
    harness.drop_prefix(redis_url, prefix)


def queued(redis_url: str, settings: Settings) -> list[dict[str, Any]]:
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    messages = [json.loads(m) for m in reversed(r.lrange(queue_key(settings.redis.key_prefix), 0, -1))]
    for m in messages:
        m["body"] = json.loads(base64.b64decode(m["body"]))
    return messages


def without_ids(message: dict[str, Any]) -> dict[str, Any]:
    return {
        part: ({k: v for k, v in value.items() if (part, k) not in PER_MESSAGE} if isinstance(value, dict) else value)
        for part, value in message.items()
    }


def test_the_message_is_the_one_celery_sends(mine: Settings, redis_url: str) -> None:
    payload = {"kind": "pipeline", "project_id": 5, "text": "ünïcode ✓", "builds": [["push", "push", "created", 1]]}
    producer(mine)("gate.pipeline_event", payload, "inbox-1")
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    _, ours = task_message("gate.pipeline_event", json.dumps(payload, ensure_ascii=False), "inbox-1")
    r.lpush(queue_key(mine.redis.key_prefix), ours)
    celery_sent, hand_built = queued(redis_url, mine)
    assert without_ids(hand_built) == without_ids(celery_sent)
    assert hand_built["body"] == [[payload], {"inbox": "inbox-1"}, celery_sent["body"][2]]
    assert hand_built["headers"]["root_id"] == hand_built["headers"]["id"] == hand_built["properties"]["correlation_id"]


def test_the_receiver_claims_records_and_queues_in_one_step(mine: Settings, redis_url: str) -> None:
    store = Store.from_url(redis_url, mine.redis.gate_ttl_s, prefix=mine.redis.key_prefix)
    web = create_app(mine, store=store).test_client()  # no enqueue given: the Procfile's receiver
    body = json.dumps(pipeline_payload(project_id=5001, project_path="e2e/web", pipeline_id=424242))
    headers = webhook_headers("Pipeline Hook", WEBHOOK_SECRET, "delivery-one-step")
    first = web.post("/webhook", data=body, headers=headers)
    again = web.post("/webhook", data=body, headers=headers)
    assert first.status_code == 202 and again.get_json()["status"] == "duplicate"
    [message] = queued(redis_url, mine)
    assert message["headers"]["task"] == "gate.pipeline_event"
    assert message["headers"]["id"] == first.get_json()["task_id"]
    [args, kwargs, _] = message["body"]
    assert args[0]["pipeline_id"] == 424242
    [delivery] = store.stale_deliveries(older_than=1e12)  # the inbox holds it for the sweep, under that id
    assert delivery.id == kwargs["inbox"] and delivery.payload == args[0]


def test_with_redis_down_nothing_is_accepted(mine: Settings) -> None:
    dead = Store.from_url("redis://127.0.0.1:1/0", mine.redis.gate_ttl_s, socket_timeout_s=0.5)
    web = create_app(mine, store=dead).test_client()
    body = json.dumps(pipeline_payload(project_id=5001, project_path="e2e/web"))
    assert web.post("/webhook", data=body, headers=webhook_headers("Pipeline Hook", WEBHOOK_SECRET)).status_code == 503
