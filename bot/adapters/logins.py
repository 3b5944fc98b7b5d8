"""Failed dashboard logins in Redis: one counter per minute, shared by every web process."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    import redis

# A fixed one-minute window: a guesser is held to the limit per minute, a person locked out waits < 60 s.
LOGIN_WINDOW_S = 60


def _window(now: float) -> str:
    return f"dashboard:failed-logins:{int(now // LOGIN_WINDOW_S)}"


def retry_after(now: float) -> int:
    """Whole seconds until the current window ends (at least 1)."""
    return max(1, math.ceil(LOGIN_WINDOW_S - now % LOGIN_WINDOW_S))


class LoginRecords:
    """How many wrong credentials the dashboard was sent in the current minute."""

    r: redis.Redis

    def _k(self, key: str) -> str:  # pragma: no cover - Store defines it
        raise NotImplementedError

    def failed_logins(self, now: float) -> int:
        return int(cast(str | None, self.r.get(self._k(_window(now)))) or 0)

    def count_failed_login(self, now: float) -> int:
        """Count one more; the window's key outlives its minute by one, then Redis drops it."""
        pipe = self.r.pipeline(transaction=True)
        pipe.incr(self._k(_window(now)))
        pipe.expire(self._k(_window(now)), 2 * LOGIN_WINDOW_S)
        count, _ = pipe.execute()
        return int(count)
