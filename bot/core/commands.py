"""Pure: MR comment commands: the Note Hook parsed, `ecr-scan-gate recheck|accept ...` parsed and authorised."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta
from enum import StrEnum
from typing import Any, ClassVar

from pydantic import ConfigDict, TypeAdapter, ValidationError

from bot.core.events import MAX_PATH, InvalidEvent, _get, _int, _obj, _str
from bot.core.markdown import clean
from bot.core.risk import valid_finding_id

PREFIX = "ecr-scan-gate"
MAX_REASON = 500
# GitLab access levels (doc/api/members.md "Roles").
DEVELOPER, MAINTAINER = 30, 40


class CommandKind(StrEnum):
    RECHECK = "recheck"
    ACCEPT = "accept"


@dataclass(frozen=True)
class NoteEvent:
    """A Note Hook on a merge request: who commented what, where. Roles are never taken from it."""

    __pydantic_config__: ClassVar[ConfigDict] = ConfigDict(extra="forbid")

    project_id: int
    project_path: str
    mr_iid: int
    note_id: int
    author_id: int
    author_username: str
    first_line: str  # only the first line is a command; the rest of the note is never read
    system: bool
    action: str  # "create" or "update" ("" from GitLab versions that do not send it)


@dataclass(frozen=True)
class Command:
    kind: CommandKind
    finding_id: str = ""
    package: str = ""
    until: date | None = None
    reason: str = ""

    def text(self) -> str:
        """The command as the audit line shows it (already cleaned and bounded)."""
        if self.kind is CommandKind.RECHECK:
            return f"{PREFIX} recheck"
        scope = f" package {self.package}" if self.package else ""
        until = self.until.isoformat() if self.until else "?"
        return f"{PREFIX} accept {self.finding_id}{scope} until {until} because {self.reason}"


class CommandError(ValueError):
    """A line that starts with the prefix but is not a command the bot understands (it says why)."""


def parse_note(payload: dict[str, Any]) -> NoteEvent | None:
    """The Note Hook of an MR comment, or None for notes on anything else. InvalidEvent if malformed."""
    attrs = _obj(_get(payload, "object_attributes", ""), "object_attributes")
    if attrs.get("noteable_type") != "MergeRequest":
        return None  # commits, issues, snippets: no commands there
    project = _obj(_get(payload, "project", ""), "project")
    user = _obj(_get(payload, "user", ""), "user")
    mr = _obj(_get(payload, "merge_request", ""), "merge_request")
    a = "object_attributes."
    note = attrs.get("note")
    if not isinstance(note, str):
        raise InvalidEvent(f"{a}note: expected a string")
    return NoteEvent(
        project_id=_int(project, "id", "project."),
        project_path=_str(project, "path_with_namespace", "project.", MAX_PATH),
        mr_iid=_int(mr, "iid", "merge_request."),
        note_id=_int(attrs, "id", a),
        author_id=_int(attrs, "author_id", a),
        author_username=_str(user, "username", "user.", 255, optional=True),
        first_line=note.lstrip().split("\n", 1)[0][:2000],
        system=attrs.get("system") is True,
        action=_str(attrs, "action", a, 32, optional=True),
    )


_NOTE = TypeAdapter(NoteEvent)


def note_to_dict(event: NoteEvent) -> dict[str, Any]:
    data: dict[str, Any] = _NOTE.dump_python(event, mode="json")
    return data


def note_from_dict(data: object) -> NoteEvent:
    try:
        return _NOTE.validate_python(data)
    except ValidationError:
        raise InvalidEvent("note: not a serialized Note Hook event") from None


def why_not_a_command(event: NoteEvent) -> str | None:
    """None when the note may be a command; else why it is ignored (the receiver answers 200)."""
    if event.system:
        return "system note"
    if event.action == "update":
        return "an edited note is not run again"
    if not event.first_line.lower().startswith(PREFIX + " "):
        return "not an ecr-scan-gate command"
    return None


_ACCEPT = re.compile(
    r"accept\s+(?P<id>\S+)(?:\s+package\s+(?P<package>\S+))?\s+until\s+(?P<until>\S+)\s+because\s+(?P<reason>.+)",
    re.IGNORECASE,
)


def parse_command(line: str) -> Command | None:
    """The command of a note's first line; None if it is no command; CommandError if it is a broken one."""
    head, _, rest = line.strip().partition(" ")
    if head.lower() != PREFIX:
        return None
    rest = rest.strip()
    if rest.lower() == "recheck":
        return Command(CommandKind.RECHECK)
    match = _ACCEPT.fullmatch(rest)
    if not rest.lower().startswith("accept"):
        raise CommandError("unknown command: use `recheck` or `accept <id> [package <p>] until <date> because <why>`")
    if match is None:
        raise CommandError("use `accept <id> [package <p>] until YYYY-MM-DD because <reason>`")
    finding_id, until_text = match["id"], match["until"]
    if not valid_finding_id(finding_id):
        raise CommandError("not a finding id such as CVE-2023-44487")
    try:
        until = date.fromisoformat(until_text)
    except ValueError:
        raise CommandError("the date must be YYYY-MM-DD (a UTC day, inclusive)") from None
    reason = clean(match["reason"], MAX_REASON)
    if not reason:
        raise CommandError("say why the risk is accepted after `because`")
    package = clean(match["package"] or "", 255)
    return Command(CommandKind.ACCEPT, finding_id=finding_id, package=package, until=until, reason=reason)


def refusal(command: Command, access_level: int, is_mr_author: bool, today: date, max_days: int) -> str | None:
    """Why this commenter may not run this command now (None: allowed). Roles come from GitLab's members API."""
    if command.kind is CommandKind.RECHECK:
        return None if access_level >= DEVELOPER else "recheck needs the Developer role or above"
    if access_level < MAINTAINER:
        return "accept needs the Maintainer role or above"
    if is_mr_author:
        return "the merge request's author cannot accept a risk for it"
    assert command.until is not None
    if command.until < today:
        return f"{command.until.isoformat()} is in the past"
    latest = today + timedelta(days=max_days)
    if command.until > latest:
        return f"{command.until.isoformat()} is more than {max_days} days ahead (latest {latest.isoformat()})"
    return None


@dataclass(frozen=True)
class AuditEntry:
    """One MR command, as the bot's note shows it: who, when, what, and what the bot did."""

    at: float
    by: str  # the commenter's username
    command: str  # the command line, as parsed (clean, bounded)
    outcome: str  # "accepted ..." / "refused: ..."
    note_id: int
