"""Celery task messages built by hand for kombu's Redis transport, so the receiver claims, records and queues at once.

Celery's send_task costs ~0.7 ms a call in the web process (kombu builds a new Redis client per publish), more
than the rest of a delivery. The message is Celery's protocol 2 as kombu's Redis transport stores it: a JSON
envelope whose base64 body is [args, kwargs, embed]. tests/test_task_message.py checks it field by field
against what send_task writes, and every end-to-end suite has a real worker run these messages.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import uuid

from bot.adapters.queue import QUEUE, celery_prefix

_EMBED = '{"callbacks": null, "errbacks": null, "chain": null, "chord": null}'
_ORIGIN = f"gen{os.getpid()}@{socket.gethostname()}"


def queue_key(key_prefix: str) -> str:
    """The Redis list kombu's transport reads the queue from (priority 0; its global_keyprefix applied)."""
    return celery_prefix(key_prefix) + QUEUE


def task_message(task: str, payload_json: str, inbox: str) -> tuple[str, str]:
    """(task id, the message to LPUSH) for task(payload, inbox=inbox); payload_json is the payload's JSON text."""
    task_id = str(uuid.uuid4())
    body = f"[[{payload_json}], {json.dumps({'inbox': inbox})}, {_EMBED}]"
    headers: dict[str, object] = {
        "lang": "py",
        "task": task,
        "id": task_id,
        "shadow": None,
        "eta": None,
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": 0,
        "timelimit": [None, None],
        "root_id": task_id,
        "parent_id": None,
        # Fixed reprs, as queue.producer sends them: the payload is not copied into the headers.
        "argsrepr": "(event)",
        "kwargsrepr": "{}",
        "origin": _ORIGIN,
        "ignore_result": None,
        "replaced_task_nesting": 0,
        "stamped_headers": None,
        "stamps": {},
    }
    message = {
        "body": base64.b64encode(body.encode("utf-8")).decode("ascii"),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": {
            "correlation_id": task_id,
            "reply_to": str(uuid.uuid4()),  # results are ignored (task_ignore_result): never read
            "argsrepr": "(event)",
            "kwargsrepr": "{}",
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": QUEUE},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),  # the worker acks by it: unique per message
        },
    }
    return task_id, json.dumps(message)
