"""GitLab issues for [monitor]: find the bot's one issue of a repository by its marker, then edit, open or close it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from bot.core.errors import PermanentError

T = TypeVar("T")


@dataclass(frozen=True)
class Issue:
    iid: int
    state: str  # opened | closed
    title: str
    description: str


class IssuesMixin:
    """Mixin of GitLabApi: needs `_gl`, `_call` and `bot_user_id`."""

    _gl: Any

    def _call(self, what: str, fn: Callable[[], T]) -> T:  # pragma: no cover - GitLabApi defines it
        raise NotImplementedError

    def bot_user_id(self) -> int:  # pragma: no cover - GitLabApi defines it
        raise NotImplementedError

    def find_issue(self, project_id: int, marker: str, label: str, iid_hint: int = 0) -> Issue | None:
        """The bot's issue holding `marker`, open or closed: by the remembered iid, else by listing the label's
        issues (GitLab is the truth: a lost Redis must not lead to a second issue). The oldest wins."""
        if iid_hint:
            try:
                raw = self._call("GET issue", lambda: self._gl.http_get(f"/projects/{project_id}/issues/{iid_hint}"))
            except PermanentError as exc:
                if exc.status != 404:
                    raise
                raw = None
            if isinstance(raw, dict) and self._ours(raw, marker):
                return _issue(raw)
        query = {"labels": label, "state": "all", "sort": "asc", "order_by": "created_at"}
        found = self._call(
            "GET issues",
            lambda: self._gl.http_list(f"/projects/{project_id}/issues", get_all=True, query_data=query),
        )
        mine = [i for i in found if isinstance(i, dict) and self._ours(i, marker)]
        return _issue(min(mine, key=lambda i: int(i["iid"]))) if mine else None

    def _ours(self, raw: dict[str, Any], marker: str) -> bool:
        # By the bot's own user (anyone can paste the marker) and carrying the marker.
        author = (raw.get("author") or {}).get("id")
        return author == self.bot_user_id() and marker in str(raw.get("description") or "")

    def create_issue(self, project_id: int, title: str, description: str, label: str, confidential: bool) -> Issue:
        data = {"title": title, "description": description, "labels": label, "confidential": confidential}
        raw = self._call("POST issue", lambda: self._gl.http_post(f"/projects/{project_id}/issues", post_data=data))
        if not isinstance(raw, dict):
            raise PermanentError("GitLab sent no JSON object on POST issue")
        return _issue(raw)

    def edit_issue(self, project_id: int, iid: int, **changes: Any) -> None:
        """PUT the given fields (title, description, state_event = close | reopen, ...)."""
        path = f"/projects/{project_id}/issues/{iid}"
        self._call("PUT issue", lambda: self._gl.http_put(path, post_data=changes))

    def comment_issue(self, project_id: int, iid: int, body: str) -> None:
        path = f"/projects/{project_id}/issues/{iid}/notes"
        self._call("POST issue note", lambda: self._gl.http_post(path, post_data={"body": body}))


def _issue(raw: dict[str, Any]) -> Issue:
    return Issue(
        int(raw["iid"]), str(raw.get("state") or ""), str(raw.get("title") or ""), str(raw.get("description") or "")
    )
