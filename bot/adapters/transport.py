"""Celery's Redis transport, hardened so a Redis outage cannot crash the worker (close, ack, reject)."""

from __future__ import annotations

import logging
from typing import Any

import redis
from kombu.transport import redis as kombu_redis

log = logging.getLogger(__name__)


class QoS(kombu_redis.QoS):
    def restore_unacked(self, client: Any = None) -> Any:
        # kombu closes the channel on connection loss and, on close, tries to push unacked messages
        # back to their queues; with Redis down that raises AttributeError out of the consumer and
        # kills the worker ("Unrecoverable error", celery/kombu issues #582, #970). Nothing is lost
        # by skipping it: the messages stay in Redis' unacked hash and the visibility-timeout sweep
        # returns them once Redis is back.
        try:
            return super().restore_unacked(client)
        except (AttributeError, OSError, redis.RedisError) as exc:
            log.warning(
                "Redis unreachable while closing: unacked messages left for redelivery (%s)", type(exc).__name__
            )
            return None

    def ack(self, delivery_tag: Any) -> None:
        # Acking on a channel whose connection was dropped (Redis restarted) raises AttributeError out
        # of the event loop and kills the worker. The message then simply stays in the unacked hash and
        # is redelivered after the visibility timeout; every task is idempotent, so that is harmless.
        try:
            super().ack(delivery_tag)
        except (AttributeError, OSError, redis.RedisError) as exc:
            log.warning("ack lost with the Redis connection (%s): the task will be redelivered", type(exc).__name__)

    def reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        try:
            super().reject(delivery_tag, requeue=requeue)
        except (AttributeError, OSError, redis.RedisError) as exc:
            log.warning("reject lost with the Redis connection (%s): the task will be redelivered", type(exc).__name__)


class Channel(kombu_redis.Channel):
    QoS = QoS


class Transport(kombu_redis.Transport):
    Channel = Channel
