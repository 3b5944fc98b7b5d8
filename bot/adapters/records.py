"""Records beside the gates in Redis: delivery inbox, pipeline plans, repo-file cache, exceptions, baselines, audit."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, cast

import redis
from pydantic import TypeAdapter

from bot.adapters.task_message import task_message
from bot.core.commands import AuditEntry
from bot.core.models import Acceptance

INBOX = "inbox"  # sorted set of accepted, unprocessed deliveries, scored by when they were last queued
# A repo file's text never changes for a blob id, nor a commit's blob id for a path: cache both long.
BLOB_TTL_S = 7 * 24 * 3600
NO_FILE = "-"  # cached "this commit has no repo file"
CLAIM_AND_ACCEPT = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  redis.call('HSET', KEYS[2], 'task', ARGV[2], 'payload', ARGV[3], 'at', ARGV[4], 'replays', '0')
  redis.call('EXPIRE', KEYS[2], ARGV[5])
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[6])
  return 1
end
return 0
"""
# The same, and the task's message pushed onto Celery's queue (KEYS[4], ARGV[7]): the receiver's one round trip.
ACCEPT_AND_QUEUE = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  redis.call('HSET', KEYS[2], 'task', ARGV[2], 'payload', ARGV[3], 'at', ARGV[4], 'replays', '0')
  redis.call('EXPIRE', KEYS[2], ARGV[5])
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[6])
  redis.call('LPUSH', KEYS[4], ARGV[7])
  return 1
end
return 0
"""
# The sweep gives a lost delivery up after an hour (workers/sweeper.py); its record need not outlive that.
INBOX_TTL_S = 2 * 3600


@dataclass(frozen=True)
class Delivery:
    """An accepted delivery whose task has not finished: replayed by the sweep if its task is lost."""

    id: str
    task: str
    payload: dict[str, Any]
    accepted_at: float
    replays: int


@dataclass(frozen=True)
class PipelinePlan:
    """What the bot decided for one pipeline, for the MR note: where it reports and what it did not gate."""

    project_id: int
    pipeline_id: int
    report_pipeline_id: int  # the parent for a child pipeline, else pipeline_id
    sha: str
    not_gated: tuple[tuple[str, str], ...] = ()  # (repository, push job)
    push_jobs: tuple[str, ...] = ()  # push jobs of the gated images (the receiver filters Job Hooks by them)


class PipelineRecords:
    """Mixin of Store: needs `r` (a decode_responses client), `ttl` and `_k`."""

    r: redis.Redis
    ttl: int

    def _k(self, key: str) -> str:  # pragma: no cover - Store defines it
        raise NotImplementedError

    # --- inbox -------------------------------------------------------------------------------------
    _claim_accept: Any  # Store's CLAIM_AND_ACCEPT script
    _accept_queue: Any  # Store's ACCEPT_AND_QUEUE script

    def claim_and_accept(
        self, delivery_key: str, dedupe_ttl_s: int, delivery_id: str, task: str, payload_json: str
    ) -> bool:
        """One round trip: claim the delivery (False: a duplicate) and record it in the inbox.

        The claim gets its full dedupe TTL at once: should queueing then fail without Redis being told, the
        inbox entry is there for the sweep to queue, so a resend taken as a duplicate loses nothing.
        """
        keys = [self._k(f"delivery:{delivery_key}"), self._k(f"{INBOX}:{delivery_id}"), self._k(INBOX)]
        args = [dedupe_ttl_s, task, payload_json, time.time(), INBOX_TTL_S, delivery_id]
        return bool(self._claim_accept(keys=keys, args=args))

    def accept_and_queue(
        self, delivery_key: str, dedupe_ttl_s: int, delivery_id: str, task: str, payload_json: str, queue_key: str
    ) -> str | None:
        """claim_and_accept and the task queued, atomically in one round trip: the task id, None for a duplicate.

        Nothing is half done: a Redis failure raises with nothing claimed, so GitLab's resend is accepted.
        """
        task_id, message = task_message(task, payload_json, delivery_id)
        keys = [self._k(f"delivery:{delivery_key}"), self._k(f"{INBOX}:{delivery_id}"), self._k(INBOX), queue_key]
        args = [dedupe_ttl_s, task, payload_json, time.time(), INBOX_TTL_S, delivery_id, message]
        return task_id if self._accept_queue(keys=keys, args=args) else None

    def release(self, delivery_key: str, delivery_id: str) -> None:
        """Undo claim_and_accept (the task could not be queued): GitLab's resend is then a new delivery."""
        pipe = self.r.pipeline()
        pipe.delete(self._k(f"delivery:{delivery_key}"), self._k(f"{INBOX}:{delivery_id}"))
        pipe.zrem(self._k(INBOX), delivery_id)
        pipe.execute()

    def processed(self, delivery_id: str) -> None:
        if delivery_id:
            self.r.delete(self._k(f"{INBOX}:{delivery_id}"))
            self.r.zrem(self._k(INBOX), delivery_id)

    def stale_deliveries(self, older_than: float, limit: int = 200) -> list[Delivery]:
        """Deliveries queued before `older_than` whose task never finished."""
        ids = cast(list[str], self.r.zrangebyscore(self._k(INBOX), "-inf", older_than, start=0, num=limit))
        out = []
        for delivery_id in ids:
            raw = cast(dict[str, str], self.r.hgetall(self._k(f"{INBOX}:{delivery_id}")))
            if not raw:
                self.r.zrem(self._k(INBOX), delivery_id)  # expired
                continue
            out.append(
                Delivery(delivery_id, raw["task"], json.loads(raw["payload"]), float(raw["at"]), int(raw["replays"]))
            )
        return out

    def requeued(self, delivery_id: str) -> None:
        self.r.hincrby(self._k(f"{INBOX}:{delivery_id}"), "replays", 1)
        self.r.zadd(self._k(INBOX), {delivery_id: time.time()})

    # --- pipeline plans ----------------------------------------------------------------------------
    def save_plan(self, plan: PipelinePlan) -> bool:
        """Record a pipeline's plan; True when it is new or differs from the one recorded."""
        data = json.dumps(
            {
                "report_pipeline_id": plan.report_pipeline_id,
                "sha": plan.sha,
                "not_gated": [list(x) for x in plan.not_gated],
                "push_jobs": list(plan.push_jobs),
            }
        )
        index = self._k(f"plans:{plan.project_id}:{plan.sha}")
        pipe = self.r.pipeline()
        pipe.set(self._k(f"plan:{plan.project_id}:{plan.pipeline_id}"), data, ex=self.ttl, get=True)
        pipe.sadd(index, str(plan.pipeline_id))
        pipe.expire(index, self.ttl)
        old = pipe.execute()[0]
        return bool(old != data)

    def plan(self, project_id: int, pipeline_id: int) -> PipelinePlan | None:
        raw = self.r.get(self._k(f"plan:{project_id}:{pipeline_id}"))
        if not raw:
            return None
        data = json.loads(cast(str, raw))
        return PipelinePlan(
            project_id=project_id,
            pipeline_id=pipeline_id,
            report_pipeline_id=int(data["report_pipeline_id"]),
            sha=str(data["sha"]),
            not_gated=tuple((str(r), str(j)) for r, j in data["not_gated"]),
            push_jobs=tuple(str(j) for j in data["push_jobs"]),
        )

    def plans_for_commit(self, project_id: int, sha: str) -> list[PipelinePlan]:
        ids = sorted(int(i) for i in cast(set[str], self.r.smembers(self._k(f"plans:{project_id}:{sha}"))))
        plans = [self.plan(project_id, i) for i in ids]
        return [p for p in plans if p is not None]

    # --- pipelines GitLab confirmed ------------------------------------------------------------------
    def know_pipeline(self, project_id: int, pipeline_id: int, sha: str) -> None:
        self.r.set(self._k(f"pipeline:{project_id}:{pipeline_id}"), sha, ex=BLOB_TTL_S)

    def pipeline_known(self, project_id: int, pipeline_id: int, sha: str) -> bool:
        return self.r.get(self._k(f"pipeline:{project_id}:{pipeline_id}")) == sha

    # --- child pipelines ---------------------------------------------------------------------------
    def set_report_pipeline(self, project_id: int, pipeline_id: int, report_to: int) -> None:
        self.r.set(self._k(f"parent:{project_id}:{pipeline_id}"), str(report_to), ex=self.ttl)

    def report_pipeline(self, project_id: int, pipeline_id: int) -> int:
        """Where a pipeline's statuses go: the root of its parent chain as far as the bot has seen it."""
        raw = self.r.get(self._k(f"parent:{project_id}:{pipeline_id}"))
        return int(cast(str, raw)) if raw else pipeline_id

    # --- repo-file cache ---------------------------------------------------------------------------
    def cached_blob_id(self, project_id: int, sha: str, path: str) -> str | None:
        """The file's blob id at that commit, NO_FILE if it has none, None if not known yet."""
        raw = self.r.get(self._k(f"repofile:{project_id}:{sha}:{path}"))
        return cast(str, raw) if raw else None

    def cache_blob_id(self, project_id: int, sha: str, path: str, blob_id: str) -> None:
        self.r.set(self._k(f"repofile:{project_id}:{sha}:{path}"), blob_id, ex=BLOB_TTL_S)

    def cached_blob(self, blob_id: str) -> str | None:
        raw = self.r.get(self._k(f"blob:{blob_id}"))
        return cast(str, raw) if raw is not None else None

    def cache_blob(self, blob_id: str, text: str) -> None:
        self.r.set(self._k(f"blob:{blob_id}"), text, ex=BLOB_TTL_S)


_ACCEPTANCE: TypeAdapter[Acceptance] = TypeAdapter(Acceptance)


class ProjectRecords:
    """Mixin of Store: exceptions accepted by MR command, target-branch baselines, MR command audit lines."""

    r: redis.Redis
    ttl: int
    _newest: Any  # Store's "newest pipeline wins" script

    def _k(self, key: str) -> str:  # pragma: no cover - Store defines it
        raise NotImplementedError

    def add_exception(self, project_id: int, acceptance: Acceptance) -> None:
        field = f"{acceptance.id.lower()}|{acceptance.package}|{acceptance.repository}"
        key = self._k(f"exceptions:{project_id}")
        self.r.hset(key, field, json.dumps(_ACCEPTANCE.dump_python(acceptance, mode="json")))
        # Kept past the longest exception (expired ones still explain "exception expired on DATE").
        self.r.expire(key, max(self.ttl, 4 * 365 * 24 * 3600))

    def project_exceptions(self, project_id: int) -> tuple[Acceptance, ...]:
        raw = cast(dict[str, str], self.r.hgetall(self._k(f"exceptions:{project_id}")))
        return tuple(_ACCEPTANCE.validate_python(json.loads(v)) for _, v in sorted(raw.items()))

    def save_baseline(self, project_id: int, branch: str, repository: str, pipeline_id: int, keys: list[str]) -> None:
        """The newest completed scan of a repository on a branch (an older pipeline's late result is ignored)."""
        key = self._k(f"baseline:{project_id}:{branch}:{repository}")
        self._newest(keys=[key], args=[pipeline_id, json.dumps(sorted(set(keys))), self.ttl, "keys"])

    def baseline(self, project_id: int, branch: str, repository: str) -> tuple[int, frozenset[str]] | None:
        raw = cast(
            list[str | None],
            self.r.hmget(self._k(f"baseline:{project_id}:{branch}:{repository}"), "pipeline_id", "keys"),
        )
        if not raw[0] or raw[1] is None:
            return None
        return int(raw[0]), frozenset(json.loads(raw[1]))

    def add_audit(self, project_id: int, iid: int, entry: AuditEntry) -> None:
        key = self._k(f"audit:{project_id}:{iid}")
        self.r.rpush(key, json.dumps(entry.__dict__))
        self.r.ltrim(key, -50, -1)  # the note shows the last 50 commands
        self.r.expire(key, self.ttl)

    def audit(self, project_id: int, iid: int) -> list[AuditEntry]:
        items = cast(list[str], self.r.lrange(self._k(f"audit:{project_id}:{iid}"), 0, -1))
        return [AuditEntry(**json.loads(i)) for i in items]
