"""Gate records in Redis: atomic lifecycle transitions, delivery dedupe, the ECR rate limiter, note locks."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, fields, replace
from typing import cast

import redis
from pydantic import TypeAdapter
from redis.lock import Lock

from bot.adapters.history import RECENT, RECENT_KEPT, STATS_TTL_S, HistoryRecords, stats_key
from bot.adapters.logins import LoginRecords
from bot.adapters.monitor_records import MonitorRecords
from bot.adapters.records import ACCEPT_AND_QUEUE, CLAIM_AND_ACCEPT, PipelineRecords, ProjectRecords
from bot.adapters.watch import KNOWN_REPOSITORIES, WatchRecords, image_watch_key, watch_key
from bot.core.gate import Gate, commit_key, merge_gate_project
from bot.core.models import Image, Verdict, dump_verdict
from bot.core.poll import Progress
from bot.core.risk import utc_day

DEFAULT_PREFIX = "esg"
OPEN = "open"  # sorted set of unfinished gate keys, scored by creation time

_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[2], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[3])
redis.call('SADD', KEYS[4], ARGV[3])
redis.call('EXPIRE', KEYS[4], ARGV[1])
redis.call('SADD', KEYS[5], ARGV[4])
return 1
"""
# waiting -> polling, once. Returns the new poll generation, 0 if another writer got there first.
# ARGV: now, deadline, not_before (when a new scan was asked for; 0 = none).
_START = """
if redis.call('HGET', KEYS[1], 'state') ~= 'waiting' then return 0 end
local gen = redis.call('HINCRBY', KEYS[1], 'poll_gen', 1)
redis.call('HSET', KEYS[1], 'state', 'polling', 'polling_since', ARGV[1], 'deadline', ARGV[2],
           'last_progress', ARGV[1], 'not_before', ARGV[3])
return gen
"""
# A poll run claims its generation: the first copy of a task (original, redelivered, or re-sent by the
# sweep) to run moves the gate to gen+1 and goes on; every other copy of gen then stops. So the sweep
# never has to obsolete a queued task to restart a lost one, and a backlog cannot starve the gates.
_CLAIM = """
if redis.call('HGET', KEYS[1], 'state') ~= 'polling' then return 0 end
if redis.call('HGET', KEYS[1], 'poll_gen') ~= ARGV[1] then return 0 end
local gen = redis.call('HINCRBY', KEYS[1], 'poll_gen', 1)
redis.call('HSET', KEYS[1], 'last_progress', ARGV[2])
return gen
"""
# KEYS[2], when given: the watch set of the digest ECR named, so a scan event naming only the digest finds it.
_PROGRESS = """
if redis.call('HGET', KEYS[1], 'state') ~= 'polling' then return 0 end
if redis.call('HGET', KEYS[1], 'poll_gen') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
if KEYS[2] then
  redis.call('SADD', KEYS[2], ARGV[2])
  redis.call('EXPIRE', KEYS[2], redis.call('TTL', KEYS[1]))
end
return 1
"""
# Any state -> done, exactly once: the first verdict wins, later writers see 0. A merge gate's verdict is
# also counted, in the same step, for the dashboard: KEYS[2] the recent verdicts, KEYS[3] its project's day.
# ARGV: gate key, now, reason, stats ttl, then the fields.
_FINISH = """
if redis.call('HGET', KEYS[1], 'state') ~= 'done' and redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], 'state', 'done', unpack(ARGV, 5))
  if KEYS[2] then
    redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
    redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -(RECENT_KEPT + 1))
    redis.call('HINCRBY', KEYS[3], ARGV[3], 1)
    redis.call('EXPIRE', KEYS[3], ARGV[4])
  end
  return 1
end
return 0
""".replace("RECENT_KEPT", str(RECENT_KEPT))
# done -> polling again (an MR `recheck`, or an `accept` re-deciding a blocked gate): a new generation, a
# fresh deadline, the old verdict cleared; only from the reasons the caller allows. Returns the generation.
# ARGV: now, deadline, the gate's key, not_before (as _START), then the reasons allowed.
_RESTART = """
if redis.call('HGET', KEYS[1], 'state') ~= 'done' then return 0 end
local verdict = redis.call('HGET', KEYS[1], 'verdict')
local ok = false
for i = 5, #ARGV do
  if string.find(verdict, '"reason": "' .. ARGV[i] .. '"', 1, true) then ok = true end
end
if not ok then return 0 end
local gen = redis.call('HINCRBY', KEYS[1], 'poll_gen', 1)
redis.call('HSET', KEYS[1], 'state', 'polling', 'verdict', '', 'noted', '0', 'polling_since', ARGV[1],
           'deadline', ARGV[2], 'last_progress', ARGV[1], 'attempts', '0', 'failures', '0', 'ecr_status', '',
           'last_error', '', 'withheld', '', 'withheld_detail', '', 'settled', '', 'not_before', ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[3])
return gen
"""
# The newest pipeline's value wins: an older pipeline's late result leaves it alone (the MR's head pipeline
# and sha for its note; a branch's last completed scan for block = "new"). ARGV: pipeline, value, ttl, field.
_NEWEST = """
local cur = tonumber(redis.call('HGET', KEYS[1], 'pipeline_id') or '0')
if tonumber(ARGV[1]) >= cur then
  redis.call('HSET', KEYS[1], 'pipeline_id', ARGV[1], ARGV[4], ARGV[2])
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
return redis.call('HMGET', KEYS[1], 'pipeline_id', ARGV[4])
"""
# Token bucket on Redis' clock so every worker shares one rate. Returns ms to wait (0 = granted).
_TAKE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(b[1]) or burst
local ts = tonumber(b[2]) or now
tokens = math.min(burst, tokens + (now - ts) * rate / 1000)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = math.ceil((1 - tokens) * 1000 / rate) end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
return wait
"""


_GATE: TypeAdapter[Gate] = TypeAdapter(Gate)
# A gate is one Redis hash with flat fields (the Lua scripts above read and write some of them): the image's
# and the progress' fields sit beside the gate's own, the verdict and the policy are one JSON field each.
_NESTED = ("image", "progress")
_JSON = ("verdict", "policy")
_NESTED_FIELDS = {name: tuple(f.name for f in fields(cls)) for name, cls in (("image", Image), ("progress", Progress))}


def to_hash(gate: Gate) -> dict[str, str]:
    data = _GATE.dump_python(gate, mode="json")
    flat: dict[str, object] = {k: v for k, v in data.items() if k not in (*_NESTED, *_JSON)}
    for name in _NESTED:
        flat.update(data[name])
    for name in _JSON:
        flat[name] = json.dumps(data[name]) if data[name] else ""
    return {k: str(v) for k, v in flat.items()}


def _progress_fields(image: Image, progress: Progress) -> dict[str, str]:
    """What a poll changes: its progress and the digest it pinned."""
    return {"digest": image.digest, **{k: str(v) for k, v in asdict(progress).items()}}


def _pairs(values: Mapping[str, str]) -> list[str]:
    return [x for kv in values.items() for x in kv]


def from_hash(raw: Mapping[str, str]) -> Gate:
    nested = {name: {k: raw[k] for k in keys if k in raw} for name, keys in _NESTED_FIELDS.items()}
    own: dict[str, object] = {
        k: v for k, v in raw.items() if k not in _NESTED_FIELDS["image"] + _NESTED_FIELDS["progress"]
    }
    for name in _JSON:
        own[name] = json.loads(raw[name]) if raw.get(name) else None
    return _GATE.validate_python({**own, **nested})


class Store(PipelineRecords, ProjectRecords, WatchRecords, MonitorRecords, HistoryRecords, LoginRecords):
    """All Redis access of the bot goes through here (pipeline-level records: see records.py)."""

    def __init__(self, client: redis.Redis, gate_ttl_s: int, prefix: str = DEFAULT_PREFIX) -> None:
        self.r = client
        self.ttl = gate_ttl_s
        self.prefix = prefix
        self._create = client.register_script(_CREATE)
        self._start = client.register_script(_START)
        self._claim = client.register_script(_CLAIM)
        self._progress = client.register_script(_PROGRESS)
        self._finish = client.register_script(_FINISH)
        self._take = client.register_script(_TAKE)
        self._newest = client.register_script(_NEWEST)
        self._claim_accept = client.register_script(CLAIM_AND_ACCEPT)
        self._accept_queue = client.register_script(ACCEPT_AND_QUEUE)
        self._restart = client.register_script(_RESTART)

    @classmethod
    def from_url(cls, url: str, gate_ttl_s: int, socket_timeout_s: float = 5.0, prefix: str = DEFAULT_PREFIX) -> Store:
        # A short socket timeout: the webhook must answer 503 quickly when Redis is gone.
        client = redis.Redis.from_url(
            url, socket_timeout=socket_timeout_s, socket_connect_timeout=socket_timeout_s, decode_responses=True
        )
        return cls(client, gate_ttl_s, prefix)

    def _k(self, key: str) -> str:
        return f"{self.prefix}:{key}"

    # --- gates -------------------------------------------------------------------------------------
    def create(self, gate: Gate) -> bool:
        gate = gate if gate.created_at else replace(gate, created_at=time.time())
        flat = [x for kv in to_hash(gate).items() for x in kv]
        keys = [
            self._k(gate.key),
            self._k(commit_key(gate.project_id, gate.sha)),
            self._k(OPEN),
            self._k(image_watch_key(gate.image)),
            self._k(KNOWN_REPOSITORIES),
        ]
        # The commit, open and watch sets hold relative keys; ARGV carries the relative gate key too.
        known = f"{gate.image.region}/{gate.repository}"
        return bool(self._create(keys=keys, args=[self.ttl, gate.created_at, gate.key, known, *flat]))

    def get(self, key: str) -> Gate | None:
        raw = cast(dict[str, str], self.r.hgetall(self._k(key)))  # decode_responses: replies are str
        return from_hash(raw) if raw else None

    def get_many(self, keys: Sequence[str]) -> list[Gate | None]:
        """Gates in one round trip (a dashboard page reads hundreds); None where one has expired."""
        pipe = self.r.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(self._k(key))
        return [from_hash(raw) if raw else None for raw in cast(list[dict[str, str]], pipe.execute())]

    def open_count(self) -> int:
        """How many gates are open (unfinished, or done and not yet posted and noted)."""
        return int(self.r.zcard(self._k(OPEN)))

    def start_polling(self, key: str, now: float, deadline: float, not_before: float = 0.0) -> int:
        """waiting -> polling: the new generation, 0 if another writer got there first. `not_before`: when a
        new scan was asked for (Progress.not_before)."""
        return int(self._start(keys=[self._k(key)], args=[now, deadline, not_before]))

    def claim_poll(self, key: str, gen: int, now: float) -> int:
        """The new generation if this run is the one to poll now, else 0 (a duplicate or stale copy)."""
        return int(self._claim(keys=[self._k(key)], args=[gen, now]))

    def save_progress(self, key: str, gen: int, image: Image, progress: Progress, now: float) -> bool:
        """Record a poll's progress (and the pinned digest), if this run still holds generation `gen`."""
        values = _progress_fields(image, progress) | {"last_progress": str(now)}
        keys = [self._k(key)]
        if image.digest:
            keys.append(self._k(watch_key(image.region, image.repository, image.digest)))
        return bool(self._progress(keys=keys, args=[gen, key, *_pairs(values)]))

    def finish(self, key: str, verdict: Verdict, image: Image | None = None, progress: Progress | None = None) -> bool:
        """Record the verdict, exactly once: False when the gate was already done (another writer won)."""
        now = time.time()
        values = {"verdict": json.dumps(dump_verdict(verdict)), "last_progress": str(now)}
        if image is not None and progress is not None:
            values |= _progress_fields(image, progress)
        keys = [self._k(key)]
        project = merge_gate_project(key)
        if project is not None:
            keys += [self._k(RECENT), self._k(stats_key(project, utc_day(now)))]
        args = [key, now, verdict.reason.value, STATS_TTL_S, *_pairs(values)]
        return bool(self._finish(keys=keys, args=args))

    def restart(self, key: str, now: float, deadline: float, reasons: Iterable[str], not_before: float = 0.0) -> int:
        """Poll a finished gate again if its verdict's reason is one of `reasons`: the new generation, else 0."""
        args: list[str | float] = [now, deadline, key, not_before, *reasons]
        return int(self._restart(keys=[self._k(key), self._k(OPEN)], args=args))

    def set_posted(self, key: str, state: str) -> None:
        self.r.hset(self._k(key), "posted_state", state)

    def set_posting(self, key: str, state: str) -> None:
        self.r.hset(self._k(key), "posting", state)

    def set_mr(self, key: str, iid: int) -> None:
        self.r.hset(self._k(key), "mr_iid", str(iid))

    def touch(self, key: str, now: float) -> None:
        """Mark a gate as looked at, so the sweep asks about it at most once per stuck_after_s."""
        self.r.hset(self._k(key), "last_progress", str(now))

    def gates_for_commit(self, project_id: int, sha: str) -> list[Gate]:
        keys = sorted(cast(set[str], self.r.smembers(self._k(commit_key(project_id, sha)))))
        gates = [self.get(k) for k in keys]
        return [g for g in gates if g is not None]

    def open_gates(self, batch: int = 500) -> Iterator[str]:
        start = 0
        while True:
            keys = cast(list[str], self.r.zrange(self._k(OPEN), start, start + batch - 1))
            if not keys:
                return
            yield from keys
            start += batch

    def open_gate_states(self, limit: int) -> dict[str, int]:
        """How many open gates are in each state (the oldest `limit`; the rest counted as "unscanned")."""
        total = self.open_count()
        keys = cast(list[str], self.r.zrange(self._k(OPEN), 0, limit - 1))
        counts: dict[str, int] = {}
        for start in range(0, len(keys), 500):
            pipe = self.r.pipeline(transaction=False)
            for key in keys[start : start + 500]:
                pipe.hget(self._k(key), "state")
            for state in pipe.execute():
                name = str(state) if state else "expired"
                counts[name] = counts.get(name, 0) + 1
        if total > len(keys):
            counts["unscanned"] = total - len(keys)
        return counts

    def queue_length(self, queue_key: str) -> int:
        """Messages waiting in a Celery queue (a Redis list; countdown retries sit in kombu's unacked hash)."""
        return int(self.r.llen(queue_key))

    def forget_open(self, key: str) -> None:
        self.r.zrem(self._k(OPEN), key)

    def mark_noted(self, key: str) -> None:
        self.r.hset(self._k(key), "noted", "1")

    def drop(self, key: str) -> None:
        """Forget a gate entirely (one recorded from a payload the bot must not act on)."""
        self.r.delete(self._k(key))
        self.forget_open(key)

    def see_mr_pipeline(self, project_id: int, iid: int, pipeline_id: int, sha: str) -> tuple[int, str]:
        """Record a pipeline of an MR; returns the newest (pipeline_id, sha) seen for it."""
        pid, head = self._newest(keys=[self._k(f"mr:{project_id}:{iid}")], args=[pipeline_id, sha, self.ttl, "sha"])
        return int(pid), str(head)

    def mr_latest(self, project_id: int, iid: int) -> tuple[int, str]:
        pid, head = self.r.hmget(self._k(f"mr:{project_id}:{iid}"), "pipeline_id", "sha")
        return int(pid or 0), str(head or "")

    def status_lock(self, key: str) -> Lock:
        # Serialises read-state-then-post for one gate so a stale "running" never lands after the verdict.
        # 30 s: longer than one status POST with its 10 s timeout.
        lock: Lock = self.r.lock(self._k(f"{key}:status-lock"), timeout=30, blocking_timeout=0)
        return lock

    # --- shared rate limit ---------------------------------------------------------------------------
    def take_token(self, bucket: str, rate_per_s: float, burst: int) -> float:
        """Seconds to wait before the call may be made; 0.0 means go now (the token is taken)."""
        return int(self._take(keys=[self._k(f"bucket:{bucket}")], args=[rate_per_s, burst])) / 1000.0

    def note_lock(self, project_id: int, iid: int) -> Lock:
        # 60 s: longer than one note rebuild (a few GitLab calls with a 10 s timeout each).
        lock: Lock = self.r.lock(self._k(f"lock:note:{project_id}:{iid}"), timeout=60, blocking_timeout=0)
        return lock

    def issue_lock(self, project_id: int, repository: str) -> Lock:
        # 60 s: longer than one issue update (find, then create or edit, a 10 s timeout each); a lock a
        # killed worker held lapses by then.
        lock: Lock = self.r.lock(self._k(f"lock:issue:{project_id}:{repository}"), timeout=60, blocking_timeout=0)
        return lock

    def ping(self) -> bool:
        try:
            return bool(self.r.ping())
        except redis.RedisError:
            return False
