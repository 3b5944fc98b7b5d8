"""The Celery app on Redis, for the producer (web) and the workers: reliability options, each with its reason."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery import Celery

from bot.core.settings import Settings

QUEUE = "ecr-scan-gate"


def celery_prefix(key_prefix: str) -> str:
    """Where kombu keeps the queues and its bookkeeping in Redis: under the deployment's own key prefix."""
    return f"{key_prefix}:celery:"


def make_celery(settings: Settings) -> Celery:
    """The app without any task code: the web process only sends tasks by name (workers/main.py adds them)."""
    app = Celery("ecr_scan_gate", broker=settings.redis.url)
    app.conf.update(
        # kombu's Redis transport, hardened so a Redis outage cannot kill the worker (see the module).
        broker_transport="bot.adapters.transport:Transport",
        # Ack only after the task ran: a worker killed mid-task leaves the message to be redelivered.
        task_acks_late=True,
        # ...and also when the child process dies (SIGKILL, OOM) rather than raising.
        task_reject_on_worker_lost=True,
        # One message at a time per process: a killed worker strands at most one prefetched task.
        worker_prefetch_multiplier=1,
        # Tasks are idempotent and finish through Redis state; results are never read.
        task_ignore_result=True,
        task_default_queue=QUEUE,
        task_serializer="json",
        accept_content=["json"],
        broker_transport_options={
            # Unacked messages (incl. countdown retries held by a worker) come back after this; every
            # countdown is capped at half of it (workers/tasks.py `capped`), so a waiting retry is never
            # delivered twice while a killed worker's tasks still return within the scan timeout.
            "visibility_timeout": settings.celery.visibility_timeout_s,
            # Look for abandoned messages every ~visibility/4 s instead of kombu's default 100 s.
            "unacked_restore_interval": max(1, settings.celery.visibility_timeout_s // 4),
            "unacked_restore_throttle": 1,
            # Queues and Celery's bookkeeping live under the same prefix as the gate records.
            "global_keyprefix": celery_prefix(settings.redis.key_prefix),
        },
        # The webhook must answer within GitLab's 10 s: publishing gives up after ~3 s and the
        # receiver answers 503 instead (GitLab records the failure; the delivery can be resent).
        broker_connection_timeout=2,
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 1},
        # Workers keep reconnecting to a restarted Redis by themselves.
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        # On connection loss, running acks_late tasks will be redelivered: stop them rather than
        # finishing twice.
        worker_cancel_long_running_tasks_on_connection_loss=True,
        # Hard stop for a hung task (all I/O has its own timeouts well under this).
        task_time_limit=120,
        task_soft_time_limit=100,
        beat_schedule={
            "sweep": {"task": "gate.sweep", "schedule": settings.sweep.interval_s},
            **(
                {"monitor": {"task": "monitor.rescan_all", "schedule": settings.monitor.interval_s}}
                if settings.monitor.enabled
                else {}
            ),
        },
        timezone="UTC",
    )
    return app


# (task name, JSON argument, inbox id of the delivery) -> task id
Enqueue = Callable[[str, dict[str, Any], str], str]


def producer(settings: Settings) -> Enqueue:
    """Send a task by name with one JSON argument and its delivery's inbox id. Loads no worker code."""
    app = make_celery(settings)

    def enqueue(task: str, payload: dict[str, Any], inbox: str = "") -> str:
        # Fixed reprs: Celery would otherwise saferepr() the whole event into the message headers, a second
        # copy of the payload in Redis and ~40% of the receiver's CPU per delivery (profiled).
        result = app.send_task(task, args=[payload], kwargs={"inbox": inbox}, argsrepr="(event)", kwargsrepr="{}")
        return str(result.id)

    return enqueue
