"""Pure: accepted risks (policy exceptions that expire), their scopes and dates, and what a finding is worth."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum

from bot.core.models import Acceptance, Finding

# An exception that ends within this many days is flagged in the note, so it is renewed or fixed in time.
EXPIRING_SOON_DAYS = 7
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/+-]{0,127}")


class BlockMode(StrEnum):
    """Which findings may block: all of them, or only those the target branch's last scan did not have."""

    ALL = "all"
    NEW = "new"


def utc_day(epoch_s: float) -> date:
    """The UTC calendar day of a moment: exception dates are UTC days, inclusive."""
    return datetime.fromtimestamp(epoch_s, UTC).date()


def valid_finding_id(value: str) -> bool:
    return bool(_ID_RE.fullmatch(value))


def expiring_soon(acceptance: Acceptance, today: date) -> bool:
    return acceptance.active(today) and acceptance.expires - today <= timedelta(days=EXPIRING_SOON_DAYS)


def fixable(finding: Finding) -> bool:
    """A fix exists: enhanced fixAvailable YES/PARTIAL, else a fixed version is named (basic fixed_in_version)."""
    if finding.fix_available:
        return finding.fix_available.upper() in ("YES", "PARTIAL")
    return bool(finding.fixed_version.strip())


def finding_key(finding: Finding) -> str:
    """How a finding is recognised across scans (the "new" mode's baseline): its id in its package."""
    return f"{finding.id.lower()}|{finding.package}"
