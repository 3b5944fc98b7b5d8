"""Pure: parts of the dashboard's page: how text and time read, 7-day rates, exceptions expiring soon."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime

from bot.core.gate import Gate
from bot.core.markdown import clean
from bot.core.models import Acceptance

# Untrusted text (project paths, image names, ECR's summaries, exception reasons) is bounded here and
# HTML-escaped by the templates: a hostile value can neither break the page nor make it huge.
PATH_LIMIT = 200
TEXT_LIMIT = 300
VALUE_LIMIT = 120
RATE_DAYS = 7
ALL_PROJECTS = "all projects"


def age_text(seconds: float) -> str:
    """A duration as a person reads it: '42 s', '5 min', '3 h 20 min', '2 d 4 h'."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        hours, minutes = divmod(s // 60, 60)
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(s // 3600, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def when_text(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%d %H:%M UTC")


def project_name(paths: Mapping[int, str], project_id: int) -> str:
    """A project as its gates name it; by its id when no gate read names it."""
    return paths.get(project_id) or f"project {project_id}"


def _share(n: int, of: int) -> str:
    return f"{round(100 * n / of)} %" if of else "–"


@dataclass(frozen=True)
class Rates:
    """One project's merge gate verdicts over RATE_DAYS days; canceled and skipped are not decisions."""

    project_id: int
    project: str
    passed: int = 0
    blocked: int = 0
    error: int = 0  # every other failed status (scan_not_found, access_denied, timeout, …)
    canceled: int = 0
    skipped: int = 0

    @property
    def decided(self) -> int:
        return self.passed + self.blocked + self.error

    @property
    def pass_pct(self) -> str:
        return _share(self.passed, self.decided)

    @property
    def block_pct(self) -> str:
        return _share(self.blocked, self.decided)

    @property
    def error_pct(self) -> str:
        return _share(self.error, self.decided)


def rates(project_id: int, project: str, counts: Mapping[str, int]) -> Rates:
    """Counts by reason as rates; a reason this version does not know counts as an error (fail closed)."""
    buckets = {"passed": 0, "blocked": 0, "error": 0, "canceled": 0, "skipped": 0}
    for reason, n in counts.items():
        buckets[reason if reason in buckets else "error"] += max(0, n)
    return Rates(project_id, project, **buckets)


def worst_first(r: Rates) -> tuple[float, float, int, str]:
    """Errors first (each is a setup to fix), then blocks; between equals the busier project first."""
    decided = r.decided or 1
    return (-r.error / decided, -r.blocked / decided, -r.decided, r.project)


@dataclass(frozen=True)
class ExpiringRow:
    project_id: int | None  # None: the central config's, for every project
    project: str
    id: str
    package: str
    repository: str
    expires: str
    days_left: int
    reason: str
    by: str
    source: str


def gate_exceptions(gates: Iterable[Gate], central: Sequence[Acceptance]) -> list[tuple[int | None, Acceptance]]:
    """The exceptions held in gates' policies, each with its scope: one equal to a central one is everyone's."""
    return [
        (None if acceptance in central else gate.project_id, acceptance)
        for gate in gates
        if gate.policy is not None
        for acceptance in gate.policy.exceptions
    ]


def expiring(
    scoped: Iterable[tuple[int | None, Acceptance]], today: date, within_days: int, paths: Mapping[int, str]
) -> tuple[ExpiringRow, ...]:
    """Exceptions still in force that end within `within_days` days, once each, the soonest first."""
    rows: dict[tuple[int | None, Acceptance], ExpiringRow] = {}
    for project_id, acceptance in scoped:
        days_left = (acceptance.expires - today).days
        if not acceptance.active(today) or days_left > within_days or (project_id, acceptance) in rows:
            continue
        rows[(project_id, acceptance)] = ExpiringRow(
            project_id=project_id,
            project=ALL_PROJECTS if project_id is None else project_name(paths, project_id),
            id=clean(acceptance.id, VALUE_LIMIT),
            package=clean(acceptance.package, VALUE_LIMIT),
            repository=clean(acceptance.repository, VALUE_LIMIT),
            expires=acceptance.expires.isoformat(),
            days_left=days_left,
            reason=clean(acceptance.reason, TEXT_LIMIT),
            by=clean(acceptance.by, VALUE_LIMIT),
            source=clean(acceptance.source, VALUE_LIMIT),
        )
    return tuple(sorted(rows.values(), key=lambda r: (r.expires, r.project_id is not None, r.project, r.id.lower())))
