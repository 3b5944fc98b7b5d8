"""The doctor's report lines: a level, a subject, what was found and the fix, redacted when printed."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from bot.core.markdown import clean
from bot.logs import redact


class Level(StrEnum):
    PASS = "PASS"  # noqa: S105 - a check result, not a password
    WARN = "WARN"  # works, but a known way to get wrong or slow results
    FAIL = "FAIL"  # the gate cannot work (or passes silently) until fixed
    INFO = "INFO"  # what the API cannot tell us; checked by hand


@dataclass(frozen=True)
class Line:
    """One finding of the doctor."""

    level: Level
    subject: str
    message: str
    fix: str = ""

    def render(self, secrets: list[str]) -> str:
        text = f"{self.level.value}  {self.subject}: {clean(self.message, 600)}"
        if self.fix:
            text += f"\n      fix: {clean(self.fix, 1200)}"
        return redact(text, secrets)
