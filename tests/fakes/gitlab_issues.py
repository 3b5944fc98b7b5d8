"""Project issues of the fake GitLab and their notes (doc/api/issues.md, doc/api/notes.md), after gitlabhq's source."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .gitlab_repo import FALSE_VALUES, TRUE_VALUES
from .gitlab_state import (
    ApiError,
    GitLabState,
    Project,
    User,
    bad_request,
    forbidden,
    locked,
    mentions,
    not_found,
    now_iso,
    param_error,
    quick_actions,
)

# app/models/concerns/issuable.rb: TITLE_LENGTH_MAX = 255, DESCRIPTION_LENGTH_MAX = 1.megabyte, the latter checked as
# a bytesize (BytesizeValidator) on create, and on update while the previous description was within it.
TITLE_LIMIT = 255
DESCRIPTION_LIMIT = 1_048_576
# app/policies/issue_policy.rb can_read_confidential and project_policy.rb `planner_access` (read_confidential_issues,
# admin_issue, update_issue, reopen_issue, admin_label): Planner (15) and every role from Reporter (20) up.
PLANNER = 15
# The bot's token is at least a Developer where it gates (README), and the rest of this fake lets it work without a
# membership: so does this module, unless a test gives the bot an explicit membership (e.g. Guest).
BOT_DEFAULT_LEVEL = 30
# lib/api/helpers/issues_helpers.rb update_params_at_least_one_of, in its order (Grape names them in the error).
UPDATE_PARAMS = tuple(
    "assignee_id assignee_ids confidential created_at description discussion_locked due_date labels add_labels"
    " remove_labels milestone_id state_event title issue_type".split()
)
# Parameters GitLab accepts that this fake does not model: it answers 501 rather than ignore them.
UNMODELLED_WRITE = tuple(
    "created_at updated_at iid milestone_id milestone due_date start_date issue_type severity epic_id epic_iid weight"
    " merge_request_to_resolve_discussions_of discussion_to_resolve".split()
)
UNMODELLED_FILTERS = tuple(
    "milestone milestone_id not my_reaction_emoji author_username assignee_id assignee_username assignee_username[]"
    " closed_by_id created_after"
    " created_before updated_after updated_before due_date issue_type cursor pagination weight epic_id iteration_id"
    " health_status".split()
)
# Helpers::IssuesHelpers.sort_options (+ title, in the current doc): only the first three are modelled.
ORDER_BY = ("created_at", "updated_at", "title")
UNMODELLED_ORDER_BY = ("priority", "due_date", "relative_position", "label_priority", "milestone_due", "popularity")
SCOPES = ("created-by-me", "assigned-to-me", "created_by_me", "assigned_to_me", "all")

# app/models/concerns/pg_full_text_searchable.rb and IssuableFinder#use_full_text_search?: a Latin search term goes
# to PostgreSQL full-text search (English dictionary, each term a prefix match), anything else to ILIKE.
_FTS_QUERY = re.compile("[\u0000-\u02ff\u1e00-\u1eff\u2070-\u218f]*")
_TSQUERY_DISALLOWED = re.compile(r'[^a-zA-Z0-9 .@/\-_"]')
_URL_SCHEME = re.compile(r"(?:^|(?<=\W))\w+://(?=\w)")
_XML_TAG = re.compile(r"</?([^>]+)>")
_LONG_WORD = re.compile(r"[A-Za-z0-9+/@]{50,}")
_WORD = re.compile(r"[a-z0-9]+")
# lib/gitlab/sql/pattern.rb split_query_to_search_terms: "quoted phrases" stay together, the rest splits on spaces.
_QUOTED_TERM = re.compile(r'(?:^|(?<= ))"[^"]+"(?= |$)')
# app/models/concerns/taskable.rb ITEM_PATTERN: "- [ ] text" or "1. [x] text", optionally quoted.
_TASK = re.compile(r"^(?:>\s{0,4})*(?:\s*(?:[-+*]|\d+[.)]))+\s+(\[[xX]\]|\[\s\])\s.+", re.MULTILINE)


@dataclass
class Issue:
    id: int
    iid: int
    project_id: int
    title: str
    description: str | None
    author_id: int
    labels: list[str] = field(default_factory=list)
    assignee_ids: list[int] = field(default_factory=list)
    confidential: bool = False
    discussion_locked: bool | None = None
    state: str = "opened"
    closed_at: str | None = None
    closed_by_id: int | None = None
    quick_actions: list[str] = field(default_factory=list)
    mentions: list[str] = field(default_factory=list)
    created_at: str = field(default_factory=now_iso)
    updated_at: str = field(default_factory=now_iso)


@dataclass
class IssueNote:
    """A note on an issue: kept apart from merge request notes (issue #1 and MR !1 differ), sharing their ids."""

    id: int
    project_id: int
    issue_iid: int
    issue_id: int
    author_id: int
    body: str
    system: bool = False
    quick_actions: list[str] = field(default_factory=list)
    mentions: list[str] = field(default_factory=list)
    created_at: str = field(default_factory=now_iso)
    updated_at: str = field(default_factory=now_iso)


def _human_size(size: int) -> str:
    """ActiveSupport's number_to_human_size (3 significant digits, insignificant zeros stripped)."""
    if size < 1024:
        return f"{size} {'Byte' if size == 1 else 'Bytes'}"
    value, unit = float(size), "Bytes"
    for unit in ("KB", "MB", "GB", "TB"):  # noqa: B007 - the last unit reached is the one used
        value /= 1024
        if value < 1024:
            break
    return f"{float(f'{value:.3g}'):g} {unit}"


def _boolean(params: dict[str, Any], key: str, errors: list[str]) -> bool | None:
    value = params.get(key)
    if value is None or isinstance(value, bool):
        return value
    if str(value).lower() in TRUE_VALUES:
        return True
    if str(value).lower() not in FALSE_VALUES:
        errors.append(f"{key} is invalid")
    return False


def _names(value: Any) -> list[str]:
    # API::Validations::Types::CommaSeparatedToArray: a string or a list, split on "," and stripped.
    items = value if isinstance(value, list) else [] if value is None else [value]
    names = [n.strip() for item in items for n in str(item).split(",")]
    return list(dict.fromkeys(n for n in names if n))  # a blank title makes no label; a label is set once


def _ids(params: dict[str, Any], key: str, errors: list[str]) -> list[int] | None:
    # CommaSeparatedToIntegerArray: a list, an integer or "1,2".
    value = params.get(key)
    if value is None:
        return None
    items = value if isinstance(value, list) else str(value).split(",")
    try:
        return [int(v) for v in items if str(v).strip() != ""]
    except ValueError:
        errors.append(f"{key} is invalid")
        return None


def _terms(query: str) -> list[str]:
    quoted = [m.group(0)[1:-1] for m in _QUOTED_TERM.finditer(query)]
    return _QUOTED_TERM.sub("", query).split() + quoted


def _full_text_match(texts: list[str], query: str) -> bool:
    """A simplified `issue_search_data @@ to_tsquery('english', ...)`: every term's words are word prefixes (a
    "quoted phrase": adjacent whole words). No stemming and no stop words, so GitLab finds a little more."""
    indexed = [_WORD.findall(_XML_TAG.sub(r" \1 ", _LONG_WORD.sub(" ", t)).lower()) for t in texts]
    words = [w for ws in indexed for w in ws]
    terms = _terms(_TSQUERY_DISALLOWED.sub(" ", _URL_SCHEME.sub("", query)))
    found = False
    for term in terms:
        parts = _WORD.findall(term.lower())
        if not parts:
            continue  # a term of punctuation only adds no lexeme
        if " " in term:
            n = len(parts)
            if not any(ws[i : i + n] == parts for ws in indexed for i in range(len(ws))):
                return False
        elif not all(any(w.startswith(p) for w in words) for p in parts):
            return False
        found = True
    return found  # a query without any lexeme matches nothing


def _fuzzy_match(texts: list[str], query: str) -> bool:
    # Gitlab::SQL::Pattern#fuzzy_arel_match per column, OR-ed: words of 3+ characters are ILIKE %word% (all of
    # them); with no such word, the column must equal the whole query, ignoring case.
    words = [w.lower() for w in _terms(" ".join(query.split())) if len(w) >= 3]
    if words:
        return any(all(w in t.lower() for w in words) for t in texts)
    return any(t.lower() == " ".join(query.split()).lower() for t in texts)


class IssuesState(GitLabState):
    """GitLabState plus project issues, their labels (created on first use) and their notes.

    Every project is readable by every user, as everywhere in this fake (a public project): a non-member can read
    and create issues. Membership decides the rest, as in IssuePolicy: a confidential issue is visible to its
    author, its assignees and Planner+ members only; labels and assignees are set on creation by members only, and
    on an update by Planner+ only (otherwise silently dropped, as GitLab does); only Planner+ create new labels.
    The bot without a membership counts as a Developer (BOT_DEFAULT_LEVEL).
    Not modelled (recorded or refused instead): quick actions in descriptions and notes are recorded, not run, and
    stay in the text; milestones, due dates, weights, epics and the other UNMODELLED_* parameters answer 501.
    """

    issues_by_iid: dict[tuple[int, int], Issue]
    issue_notes_by_id: dict[int, IssueNote]
    project_labels: dict[int, list[str]]

    @locked
    def reset(self) -> None:
        super().reset()
        self.issues_by_iid = {}
        self.issue_notes_by_id = {}
        self.project_labels = {}

    # --- snapshots ------------------------------------------------------------------------------------

    @locked
    def issues(self, project_id: int) -> list[dict[str, Any]]:
        """Every issue of the project, any state and confidentiality, in creation order, with what GitLab would have
        acted on in its description."""
        found = sorted((i for i in self.issues_by_iid.values() if i.project_id == project_id), key=lambda i: i.id)
        return [self._issue_snapshot(i) for i in found]

    @locked
    def issue(self, project_id: int, iid: int) -> dict[str, Any]:
        return self._issue_snapshot(self._issue(self._project(project_id), iid))

    @locked
    def issue_notes(self, project_id: int, iid: int) -> list[dict[str, Any]]:
        """Notes of the issue (system notes included) in creation order."""
        issue = self._issue(self._project(project_id), iid)
        return [
            self._issue_note_api(n) | {"quick_actions": n.quick_actions, "mentions": n.mentions}
            for n in sorted(self.issue_notes_by_id.values(), key=lambda n: n.id)
            if n.issue_id == issue.id
        ]

    # --- rules behind the REST endpoints -------------------------------------------------------------

    @locked
    def list_issues(self, user: User, project: Project, query: dict[str, str]) -> list[dict[str, Any]]:
        """GET /projects/:id/issues (lib/api/issues.rb, IssuesFinder): filters state, labels, iids[], search, in,
        author_id, scope, confidential; order_by created_at|updated_at|title. Other filters answer 501."""
        errors: list[str] = []  # Grape validates every parameter, then joins the messages
        if _boolean(query, "with_labels_details", errors):
            raise _unmodelled("with_labels_details")
        state, sort = query.get("state", "all"), query.get("sort", "desc")
        order_by = query.get("order_by", "created_at")
        if state not in ("opened", "closed", "all"):
            errors.append("state does not have a valid value")
        if order_by not in ORDER_BY + UNMODELLED_ORDER_BY:
            errors.append("order_by does not have a valid value")
        if sort not in ("asc", "desc"):
            errors.append("sort does not have a valid value")
        iids = _ids({"iids": query.get("iids[]", query.get("iids"))}, "iids", errors)
        author_id = query.get("author_id")
        if author_id is not None and not author_id.lstrip("-").isdigit():
            errors.append("author_id is invalid")
        if query.get("scope", "all") not in SCOPES:
            errors.append("scope does not have a valid value")
        confidential = _boolean(query, "confidential", errors)
        if errors:
            raise param_error(", ".join(errors))
        for key in (*UNMODELLED_FILTERS, *(("order_by",) if order_by in UNMODELLED_ORDER_BY else ())):
            if key in query:
                raise _unmodelled(key)
        labels = _names(query["labels"]) if "labels" in query else None
        scope = query.get("scope", "all").replace("-", "_")
        found = []
        for issue in self.issues_by_iid.values():
            if (
                issue.project_id != project.id
                or not self._can_read(user, project, issue)
                or state not in ("all", issue.state)
                or (iids is not None and issue.iid not in iids)
                or (author_id is not None and issue.author_id != int(author_id))
                or (scope == "created_by_me" and issue.author_id != user.id)
                or (scope == "assigned_to_me" and user.id not in issue.assignee_ids)
                or (confidential is not None and issue.confidential != confidential)
                or (labels is not None and not _labels_match(issue.labels, labels))
                or ("search" in query and not self._search_match(issue, query["search"], query.get("in", "")))
            ):
                continue
            found.append(issue)
        # Issuable.sort_by_attribute: the order asked for, ties broken by id descending whatever the direction.
        found.sort(key=lambda i: -i.id)
        found.sort(key=lambda i: getattr(i, order_by), reverse=sort == "desc")
        return [self._issue_api(i, user, detailed=False) for i in found]

    @locked
    def get_issue(self, user: User, project: Project, iid: int) -> dict[str, Any]:
        return self._issue_api(self._readable_issue(user, project, iid), user, detailed=True)

    @locked
    def create_issue(self, user: User, project: Project, params: dict[str, Any]) -> dict[str, Any]:
        """POST /projects/:id/issues, after lib/api/issues.rb and Issues::CreateService (IssuableBaseService)."""
        errors: list[str] = []
        if params.get("title") is None:
            errors.append("title is missing")  # `requires :title`: only an absent (or null) title is "missing"
        confidential = _boolean(params, "confidential", errors)
        discussion_locked = _boolean(params, "discussion_locked", errors)
        assignees = self._assignee_param(params, errors)
        if errors:
            raise param_error(", ".join(errors))
        self._refuse_unmodelled(params)
        title = str(params["title"]).strip()  # strip_attributes! :title
        description = None if params.get("description") is None else str(params["description"])
        self._validate(title, description, previous=None)
        issue = Issue(self._next("issue"), self._next("issue_iid", project.id), project.id, title, description, user.id)
        issue.confidential = bool(confidential)  # IssuePolicy: `~persisted & can?(:create_issue)` may set it
        if self._level(user, project) >= PLANNER:
            issue.discussion_locked = discussion_locked  # filter_params: only with admin_issue
        # `~persisted & is_project_member & guest_access` gives set_issue_metadata on a new issue (gitlab#300100).
        if self._level(user, project) > 0:
            issue.labels = self._find_or_create_labels(user, project, _names(params.get("labels", [])), create=True)
            issue.assignee_ids = assignees or []
        self._scan(issue, user, commands=True)
        self.issues_by_iid[(project.id, issue.iid)] = issue
        return self._issue_api(issue, user, detailed=True)

    @locked
    def update_issue(self, user: User, project: Project, iid: int, params: dict[str, Any]) -> dict[str, Any]:
        """PUT /projects/:id/issues/:issue_iid: Issues::UpdateService, state_event through Close/ReopenService."""
        errors: list[str] = []
        if params.get("state_event") not in (None, "close", "reopen"):
            errors.append("state_event does not have a valid value")
        confidential = _boolean(params, "confidential", errors)
        discussion_locked = _boolean(params, "discussion_locked", errors)
        assignees = self._assignee_param(params, errors)
        if not any(k in params for k in UPDATE_PARAMS):  # Grape's at_least_one_of looks at the keys
            errors.append(f"{', '.join(UPDATE_PARAMS)} are missing, at least one parameter must be provided")
        if errors:
            raise param_error(", ".join(errors))
        self._refuse_unmodelled(params)
        issue = self._issue(project, iid)  # user_project.issues.find_by!: "404 Not found"
        if not self._can_update(user, project, issue):
            raise forbidden()  # authorize! :update_issue (a confidential issue one cannot read included)
        title = issue.title if params.get("title") is None else str(params["title"]).strip()
        description = issue.description if params.get("description") is None else str(params["description"])
        self._validate(title, description, previous=issue.description)
        before = (issue.title, issue.description, issue.confidential, list(issue.labels), issue.state)
        before_locked, before_assignees = issue.discussion_locked, list(issue.assignee_ids)
        issue.title, issue.description = title, description
        if self._level(user, project) >= PLANNER:  # set_issue_metadata and set_confidentiality come from admin_issue
            if discussion_locked is not None:
                issue.discussion_locked = discussion_locked
            if confidential is not None:
                issue.confidential = confidential
            if assignees is not None:
                issue.assignee_ids = assignees
            # IssuableBaseService#process_label_ids: labels replace, then add_labels add, then remove_labels remove.
            labels = issue.labels if params.get("labels") is None else _names(params["labels"])
            labels = self._find_or_create_labels(user, project, labels, create=params.get("labels") is not None)
            labels += self._find_or_create_labels(user, project, _names(params.get("add_labels", [])), create=True)
            removed = set(_names(params.get("remove_labels", [])))
            issue.labels = list(dict.fromkeys(n for n in labels if n not in removed))
        if params.get("state_event") == "close" and issue.state == "opened":
            issue.state, issue.closed_at, issue.closed_by_id = "closed", now_iso(), user.id
        elif params.get("state_event") == "reopen" and issue.state == "closed" and not issue.discussion_locked:
            # ReopenService needs :reopen_issue, which update_issue holders have and a locked discussion prevents.
            issue.state, issue.closed_at, issue.closed_by_id = "opened", None, None
        if before != (issue.title, issue.description, issue.confidential, issue.labels, issue.state) or (
            before_locked != issue.discussion_locked or before_assignees != issue.assignee_ids
        ):
            issue.updated_at = now_iso()
        # SystemNotes::IssuablesService: these two are notes; state and label changes are resource events instead
        # (change_status -> create_resource_state_event), which the notes API does not list. Title changes are
        # notes too, with an inline diff this fake does not compute: not modelled.
        if before[1] != issue.description:
            self._store_issue_note(issue, user, "changed the description", system=True)
        if before[2] != issue.confidential:
            text = "made the issue confidential" if issue.confidential else "made the issue visible to everyone"
            self._store_issue_note(issue, user, text, system=True)
        self._scan(issue, user, commands=params.get("description") is not None)
        return self._issue_api(issue, user, detailed=True)

    @locked
    def list_issue_notes(self, user: User, project: Project, iid: int, query: dict[str, str]) -> list[dict[str, Any]]:
        # doc/api/notes.md: order_by created_at (default) or updated_at, sort desc by default; activity_filter.
        order_by, sort = query.get("order_by", "created_at"), query.get("sort", "desc")
        activity = query.get("activity_filter", "all_notes")
        errors = [
            f"{key} does not have a valid value"
            for key, value, allowed in (
                ("order_by", order_by, ("created_at", "updated_at")),
                ("sort", sort, ("asc", "desc")),
                ("activity_filter", activity, ("all_notes", "only_comments", "only_activity")),
            )
            if value not in allowed
        ]
        if errors:
            raise param_error(", ".join(errors))
        issue = self._readable_issue(user, project, iid)
        notes = [
            n
            for n in self.issue_notes_by_id.values()
            if n.issue_id == issue.id and activity in ("all_notes", "only_activity" if n.system else "only_comments")
        ]
        notes.sort(key=lambda n: (getattr(n, order_by), n.id), reverse=sort != "asc")
        return [self._issue_note_api(n) for n in notes]

    @locked
    def create_issue_note(self, user: User, project: Project, iid: int, params: dict[str, Any]) -> dict[str, Any]:
        """POST /projects/:id/issues/:noteable_id/notes (lib/api/notes.rb, Notes::CreateService)."""
        if params.get("body") is None:
            raise param_error("body is missing")  # Grape validates before the noteable is looked up
        for key in ("internal", "confidential", "created_at", "merge_request_diff_head_sha"):
            if params.get(key) not in (None, False, "false"):
                raise _unmodelled(key)
        issue = self._readable_issue(user, project, iid)  # NotesFinder#target: find_by! -> "404 Not found"
        if issue.discussion_locked and self._level(user, project) == 0:
            raise forbidden()  # IssuablePolicy: `locked & ~is_project_member` prevents create_note
        self._check_note_rate(user)
        self._validate_note_body(params["body"])
        note = self._store_issue_note(issue, user, str(params["body"]))
        issue.updated_at = note.created_at  # Note#touch_noteable
        return self._issue_note_api(note)

    # --- helpers -------------------------------------------------------------------------------------

    def _issue(self, project: Project, iid: int) -> Issue:
        issue = self.issues_by_iid.get((project.id, int(iid)))
        if issue is None:
            raise not_found()  # ActiveRecord::RecordNotFound from find_by!: "404 Not found"
        return issue

    def _readable_issue(self, user: User, project: Project, iid: int) -> Issue:
        # find_project_issue goes through IssuesFinder, so a confidential issue one cannot read does not exist.
        issue = self._issue(project, iid)
        if not self._can_read(user, project, issue):
            raise not_found()
        return issue

    def _level(self, user: User, project: Project) -> int:
        member = self._membership(project, user.id, inherited=True)
        if member is None:
            return BOT_DEFAULT_LEVEL if user.id == self.bot_user_id else 0
        return member.access_level

    def _can_read(self, user: User, project: Project, issue: Issue) -> bool:
        # IssuePolicy can_read_confidential: admin | planner_or_reporter_access | assignee_or_author.
        mine = user.id == issue.author_id or user.id in issue.assignee_ids
        return not issue.confidential or mine or self._level(user, project) >= PLANNER

    def _can_update(self, user: User, project: Project, issue: Issue) -> bool:
        # ProjectPolicy planner_access enables update_issue; IssuablePolicy gives it to the assignee or author.
        mine = user.id == issue.author_id or user.id in issue.assignee_ids
        return self._can_read(user, project, issue) and (mine or self._level(user, project) >= PLANNER)

    def _assignee_param(self, params: dict[str, Any], errors: list[str]) -> list[int] | None:
        # convert_parameters_from_legacy_format: assignee_id becomes assignee_ids; 0 or [] unassigns. CE keeps one
        # assignee (allows_multiple_assignees? is false); unknown users are dropped.
        ids = _ids(params, "assignee_ids", errors)
        legacy = _ids(params, "assignee_id", errors)
        chosen = ids if ids is not None else legacy
        if chosen is None:
            return None
        return [i for i in chosen if i in self.users][:1]

    @staticmethod
    def _refuse_unmodelled(params: dict[str, Any]) -> None:
        for key in UNMODELLED_WRITE:
            if params.get(key) is not None:
                raise _unmodelled(key)

    @staticmethod
    def _validate(title: str, description: str | None, previous: str | None) -> None:
        # render_validation_error!: 400 {"message": {attribute: [messages]}}, title before description.
        messages: dict[str, list[str]] = {}
        if not title:
            messages["title"] = ["can't be blank"]
        elif len(title) > TITLE_LIMIT:
            messages["title"] = [f"is too long (maximum is {TITLE_LIMIT} characters)"]
        size = len((description or "").encode())
        previous_size = len((previous or "").encode())
        if description != previous and size > DESCRIPTION_LIMIT and previous_size <= DESCRIPTION_LIMIT:
            max_size = _human_size(DESCRIPTION_LIMIT)
            messages["description"] = [f"is too long ({_human_size(size)}). The maximum size is {max_size}."]
        if messages:
            raise bad_request(messages)

    def _find_or_create_labels(self, user: User, project: Project, names: list[str], create: bool) -> list[str]:
        # Labels::FindOrCreateService: an existing title (case-sensitive) is used; a new one is created only with
        # admin_label (Planner+), and otherwise dropped.
        known = self.project_labels.setdefault(project.id, [])
        if create and self._level(user, project) >= PLANNER:
            known.extend(n for n in names if n not in known)
        return [n for n in names if n in known]

    def _search_match(self, issue: Issue, query: str, columns: str) -> bool:
        chosen = [c.strip() for c in columns.split(",") if c.strip() in ("title", "description")]
        texts = [getattr(issue, c) or "" for c in (chosen or ["title", "description"])]
        return _full_text_match(texts, query) if _FTS_QUERY.fullmatch(query) else _fuzzy_match(texts, query)

    def _scan(self, issue: Issue, user: User, commands: bool) -> None:
        # Quick actions run from the description sent on create or update (IssuableBaseService#handle_quick_actions);
        # the title and the description are both mentionable (attr_mentionable).
        issue.quick_actions = quick_actions(issue.description or "")
        issue.mentions = mentions(issue.title) + mentions(issue.description or "")
        for command in issue.quick_actions if commands else []:
            entry = {"note_id": None, "author_id": user.id, "command": command}
            self.triggered.append(entry | {"issue_iid": issue.iid, "field": "description"})

    def _store_issue_note(self, issue: Issue, user: User, body: str, system: bool = False) -> IssueNote:
        note = IssueNote(self._next("note"), issue.project_id, issue.iid, issue.id, user.id, body, system)
        note.quick_actions = [] if system else quick_actions(body)
        note.mentions = mentions(body)
        for command in note.quick_actions:
            entry = {"note_id": note.id, "author_id": user.id, "command": command}
            self.triggered.append(entry | {"issue_iid": issue.iid})
        self.issue_notes_by_id[note.id] = note
        return note

    # --- API entities --------------------------------------------------------------------------------

    def _issue_api(self, issue: Issue, user: User | None, detailed: bool) -> dict[str, Any]:
        """lib/api/entities/issue.rb (IssuableEntity, IssueBasic, Issue) in CE, in exposure order; lists leave out
        `subscribed` (include_subscribed: false)."""
        project = self.projects[issue.project_id]
        api = f"{self.base_url}/api/v4/projects/{project.id}"
        assignees = [self._author(a) for a in issue.assignee_ids]
        tasks = _TASK.findall(issue.description or "")
        done = sum(1 for t in tasks if t.lower() == "[x]")
        user_notes = [n for n in self.issue_notes_by_id.values() if n.issue_id == issue.id and not n.system]
        data: dict[str, Any] = {
            "id": issue.id,
            "iid": issue.iid,
            "project_id": issue.project_id,
            "title": issue.title,
            "description": issue.description,
            "state": issue.state,
            "created_at": issue.created_at,
            "updated_at": issue.updated_at,
            "closed_at": issue.closed_at,
            "closed_by": self._author(issue.closed_by_id) if issue.closed_by_id else None,
            "labels": sorted(issue.labels),
            "milestone": None,
            "assignees": assignees,
            "author": self._author(issue.author_id),
            "type": "ISSUE",
            "assignee": assignees[0] if assignees else None,
            "user_notes_count": len(user_notes),
            "merge_requests_count": 0,
            "upvotes": 0,
            "downvotes": 0,
            "due_date": None,
            "confidential": issue.confidential,
            "discussion_locked": issue.discussion_locked,
            "issue_type": "issue",
            "web_url": f"{self.base_url}/{project.path_with_namespace}/-/issues/{issue.iid}",
            "time_stats": {
                "time_estimate": 0,
                "total_time_spent": 0,
                "human_time_estimate": None,
                "human_total_time_spent": None,
            },
            "task_completion_status": {"count": len(tasks), "completed_count": done},
            "has_tasks": bool(tasks),
            "_links": {
                "self": f"{api}/issues/{issue.iid}",
                "notes": f"{api}/issues/{issue.iid}/notes",
                "award_emoji": f"{api}/issues/{issue.iid}/award_emoji",
                "project": api,
            },
            "references": {
                "short": f"#{issue.iid}",
                "relative": f"#{issue.iid}",
                "full": f"{project.path_with_namespace}#{issue.iid}",
            },
            "moved_to_id": None,
            "service_desk_reply_to": None,
        }
        if tasks:
            data["task_status"] = f"{done} of {len(tasks)} checklist item{'s' if len(tasks) != 1 else ''} completed"
        if detailed and user is not None:
            # Subscribable#subscribed_without_subscriptions?: participants (author, assignees, commenters).
            participants = {issue.author_id, *issue.assignee_ids, *(n.author_id for n in user_notes)}
            data["subscribed"] = user.id in participants
        return data

    def _issue_snapshot(self, issue: Issue) -> dict[str, Any]:
        return self._issue_api(issue, None, detailed=False) | {
            "quick_actions": list(issue.quick_actions),
            "mentions": list(issue.mentions),
        }

    def _issue_note_api(self, n: IssueNote) -> dict[str, Any]:
        return {
            "id": n.id,
            "type": None,
            "body": n.body,
            "attachment": None,
            "author": self._author(n.author_id),
            "created_at": n.created_at,
            "updated_at": n.updated_at,
            "system": n.system,
            "noteable_id": n.issue_id,
            "noteable_type": "Issue",
            "noteable_iid": n.issue_iid,
            "project_id": n.project_id,
            "resolvable": False,
            "confidential": False,
            "internal": False,
        }


def _labels_match(have: list[str], wanted: list[str]) -> bool:
    # IssuableFinder: None / "No Label" (no labels) and Any are predefined, case-insensitively; else all of them.
    if len(wanted) == 1 and wanted[0].lower() in ("none", "no label", "no+label"):
        return not have
    if len(wanted) == 1 and wanted[0].lower() == "any":
        return bool(have)
    return all(n in have for n in wanted)


def _unmodelled(key: str) -> ApiError:
    return ApiError(501, {"message": f"not implemented by fake GitLab (parameter): {key}"})
