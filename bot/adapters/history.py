"""Verdict history in Redis for the dashboard: the newest finished merge gates and per-project daily counts."""

from __future__ import annotations

from datetime import date, timedelta
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    import redis

RECENT = "recent"  # sorted set of finished merge gate keys, scored by when their verdict was recorded
# The newest verdicts kept: the dashboard lists up to this many (a busy group makes a few hundred a day).
RECENT_KEPT = 1000
# A project's day of counts lives 8 days: the dashboard's 7-day rates, and a day's margin across midnight.
STATS_TTL_S = 8 * 24 * 3600


def stats_key(project_id: int, day: date) -> str:
    """One hash per project and UTC day: verdict reason -> how many merge gates ended with it."""
    return f"stats:{project_id}:{day.isoformat()}"


class HistoryRecords:
    """Read side of what Store.finish writes (in the same Lua call as the verdict)."""

    r: redis.Redis

    def _k(self, key: str) -> str:  # pragma: no cover - Store defines it
        raise NotImplementedError

    def recent_verdicts(self, limit: int) -> list[tuple[str, float]]:
        """The newest finished merge gates: (gate key, when), newest first."""
        rows = cast(list[tuple[str, float]], self.r.zrevrange(self._k(RECENT), 0, limit - 1, withscores=True))
        return [(key, float(score)) for key, score in rows]

    def daily_counts(self, project_id: int, today: date, days: int = 7) -> dict[str, int]:
        """Verdict reason -> count over the last `days` UTC days (today included) for one project."""
        pipe = self.r.pipeline(transaction=False)
        for back in range(days):
            pipe.hgetall(self._k(stats_key(project_id, today - timedelta(days=back))))
        totals: dict[str, int] = {}
        for counts in cast(list[dict[str, str]], pipe.execute()):
            for reason, n in counts.items():
                totals[reason] = totals.get(reason, 0) + int(n)
        return totals

    def stats_projects(self) -> list[int]:
        """Projects with any counted verdict in the kept days (scanned, not kept in a set: few keys)."""
        found = set()
        head = self._k("stats:")
        for key in cast(list[str], list(self.r.scan_iter(match=head + "*", count=500))):
            project = key.removeprefix(head).partition(":")[0]
            if project.isdigit():
                found.add(int(project))
        return sorted(found)
