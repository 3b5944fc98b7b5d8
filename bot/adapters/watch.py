"""Records for registry events in Redis: which gates wait on an image, scans and pushes seen, drift counts."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import cast

import redis

from bot.core.models import Image

# A scan or push seen before its gate started stays known this long: pipeline and job events come within
# seconds of a push, or at worst with the sweep; an hour covers GitLab's webhook retries too.
SEEN_TTL_S = 3600
# EventBridge may deliver one event more than once, over minutes; a day of ids costs a few MB at most.
EVENT_ID_TTL_S = 24 * 3600
DRIFT = "drift"  # hash "<region>/<repository>" -> pushes that matched no gate
KNOWN_REPOSITORIES = "repositories"  # set "<region>/<repository>" of repositories the bot has gated


def watch_key(region: str, repository: str, reference: str) -> str:
    """The set of gate keys waiting on one image, by tag or (once ECR named it) by digest."""
    return f"watch:{region}:{repository}:{reference}"


def image_watch_key(image: Image) -> str:
    return watch_key(image.region, image.repository, image.reference)


class WatchRecords:
    """Mixin of Store: needs `r` (a decode_responses client), `ttl` and `_k`."""

    r: redis.Redis
    ttl: int

    def _k(self, key: str) -> str:  # pragma: no cover - Store defines it
        raise NotImplementedError

    def watching(self, region: str, repository: str, references: Iterable[str]) -> list[str]:
        """Keys of gates ever recorded for any of these tags or digests of region/repository (any state)."""
        keys = [self._k(watch_key(region, repository, ref)) for ref in references if ref]
        if not keys:
            return []
        return sorted(cast(set[str], self.r.sunion(keys)))

    def once_within(self, name: str, ttl_s: int) -> bool:
        """True for the first caller of `name` in ttl_s seconds: one read scheduled for a burst of events."""
        return bool(self.r.set(self._k(f"once:{name}"), "1", nx=True, ex=ttl_s))

    def first_sight(self, event_id: str) -> bool:
        """True the first time an event id is seen (EventBridge delivers at least once)."""
        return bool(self.r.set(self._k(f"event:{event_id}"), "1", nx=True, ex=EVENT_ID_TTL_S))

    def saw(self, what: str, region: str, repository: str, references: Iterable[str], digest: str) -> None:
        """Remember that `what` ("scan") happened to an image, by each of its tags and its digest."""
        pipe = self.r.pipeline(transaction=False)
        for ref in {*references, digest}:
            if ref:
                pipe.set(self._k(f"{what}:{region}:{repository}:{ref}"), digest, ex=SEEN_TTL_S)
        pipe.execute()

    def seen(self, what: str, image: Image) -> str:
        """The digest of a scan/push seen for this image ("" if none): by its digest if pinned, else its tag."""
        ref = image.digest or image.tag
        if not ref:
            return ""
        return str(self.r.get(self._k(f"{what}:{image.region}:{image.repository}:{ref}")) or "")

    def known_repository(self, region: str, repository: str) -> bool:
        return bool(self.r.sismember(self._k(KNOWN_REPOSITORIES), f"{region}/{repository}"))

    def count_drift(self, region: str, repository: str) -> int:
        pipe = self.r.pipeline(transaction=False)
        pipe.hincrby(self._k(DRIFT), f"{region}/{repository}", 1)
        pipe.hset(self._k(f"{DRIFT}:last"), f"{region}/{repository}", str(time.time()))
        return int(pipe.execute()[0])

    def drift(self) -> dict[str, int]:
        """Pushes of configured repositories that matched no gate, by "<region>/<repository>"."""
        return {k: int(v) for k, v in cast(dict[str, str], self.r.hgetall(self._k(DRIFT))).items()}
