"""Records of [monitor] in Redis: the watched digests per project and repository, and the issue each one has."""

from __future__ import annotations

from dataclasses import replace
from typing import cast

import redis
from pydantic import TypeAdapter

from bot.core.monitor import Watched

REPOSITORIES = "monitor:repositories"  # set of "<project id>|<repository>" with watched digests
_WATCHED: TypeAdapter[Watched] = TypeAdapter(Watched)


def _digests_key(project_id: int, repository: str) -> str:
    return f"monitor:watched:{project_id}:{repository}"  # hash digest -> Watched (JSON)


class MonitorRecords:
    """Mixin of Store: needs `r` (a decode_responses client) and `_k`."""

    r: redis.Redis

    def _k(self, key: str) -> str:  # pragma: no cover - Store defines it
        raise NotImplementedError

    def watch(self, watched: Watched, keep: int, oldest: float) -> list[Watched]:
        """Add (or refresh) a digest; returns the digests that left the set (beyond `keep`, or gated before
        `oldest`). A digest gated again keeps what its rescans found."""
        key = self._k(_digests_key(watched.project_id, watched.image.repository))
        current = self.watched(watched.project_id, watched.image.repository)
        before = next((w for w in current if w.image.digest == watched.image.digest), None)
        if before is not None:
            watched = replace(before, gated_at=max(before.gated_at, watched.gated_at))
        pipe = self.r.pipeline()
        pipe.hset(key, watched.image.digest, _WATCHED.dump_json(watched).decode())
        pipe.sadd(self._k(REPOSITORIES), f"{watched.project_id}|{watched.image.repository}")
        pipe.execute()
        everything = sorted(
            [w for w in current if w.image.digest != watched.image.digest] + [watched], key=lambda w: -w.gated_at
        )
        dropped = [w for i, w in enumerate(everything) if i >= keep or w.gated_at < oldest]
        if dropped:
            self.r.hdel(key, *[w.image.digest for w in dropped])
        return dropped

    def watched(self, project_id: int, repository: str) -> list[Watched]:
        raw = cast(dict[str, str], self.r.hgetall(self._k(_digests_key(project_id, repository))))
        return sorted((_WATCHED.validate_json(v) for v in raw.values()), key=lambda w: -w.gated_at)

    def save_watched(self, watched: Watched) -> None:
        """Store a rescan's result for a digest still watched (one that left the set meanwhile stays gone)."""
        key = self._k(_digests_key(watched.project_id, watched.image.repository))
        if self.r.hexists(key, watched.image.digest):
            self.r.hset(key, watched.image.digest, _WATCHED.dump_json(watched).decode())

    def expire_watched(self, project_id: int, repository: str, oldest: float) -> list[Watched]:
        """Drop digests gated before `oldest`; returns them."""
        dropped = [w for w in self.watched(project_id, repository) if w.gated_at < oldest]
        if dropped:
            self.r.hdel(self._k(_digests_key(project_id, repository)), *[w.image.digest for w in dropped])
        return dropped

    def watched_repositories(self) -> list[tuple[int, str]]:
        members = cast(set[str], self.r.smembers(self._k(REPOSITORIES)))
        pairs = [m.split("|", 1) for m in members]
        return sorted((int(p), repo) for p, repo in pairs)

    def issue_iid(self, project_id: int, repository: str) -> int:
        """The iid of the repository's issue as last seen (0: look it up in GitLab by its marker)."""
        return int(self.r.get(self._k(f"monitor:issue:{project_id}:{repository}")) or 0)

    def set_issue_iid(self, project_id: int, repository: str, iid: int) -> None:
        self.r.set(self._k(f"monitor:issue:{project_id}:{repository}"), str(iid))
