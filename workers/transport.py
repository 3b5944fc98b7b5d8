"""Celery's Redis transport, hardened so a Redis outage cannot crash the worker."""

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
            log.warning("Redis unreachable while closing: unacked messages left for redelivery (%s)",
                        type(exc).__name__)
            return None


class Channel(kombu_redis.Channel):
    QoS = QoS


class Transport(kombu_redis.Transport):
    Channel = Channel
