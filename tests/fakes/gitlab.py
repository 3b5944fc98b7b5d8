"""A stateful fake GitLab REST API (v4) served over real HTTP, for python-gitlab and the bot's tests."""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from functools import partial
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .gitlab_issues import IssuesState
from .gitlab_repo import RepositoryState
from .gitlab_state import BOT_USERNAME, ApiError, GitLabState, User, param_error

# GET /_fake/<name>?k=v or POST /_fake/<name> {"k": v} calls FakeGitLab.<name>(**kwargs), so scripts in other
# processes (demo, soak) drive the fake exactly as in-process tests do.
CONTROL_METHODS = (
    "info",
    "reset",
    "configure",
    "add_user",
    "set_token_scopes",
    "add_group",
    "add_project",
    "add_member",
    "add_group_member",
    "add_commit",
    "set_branch_head",
    "set_file",
    "delete_file",
    "set_ci_config",
    "add_pipeline",
    "add_job",
    "set_job_status",
    "set_pipeline_status",
    "add_merge_request",
    "set_mr_head",
    "set_mr_state",
    "add_note",
    "add_hook",
    "inject_fault",
    "clear_faults",
    "statuses",
    "latest_statuses",
    "notes",
    "issues",
    "issue",
    "issue_notes",
    "awards",
    "pipelines",
    "merge_request",
    "quick_actions_triggered",
    "requests",
    "request_count",
    "request_counts",
)

# doc/api/rest/index.md "Pagination": per_page defaults to 20 and is capped at 100.
DEFAULT_PER_PAGE = 20
MAX_PER_PAGE = 100

Args = dict[str, str]
# (status, payload) or (status, payload, headers); a bytes payload is sent as is, a str one as text/plain.
HandlerResult = tuple[int, Any] | tuple[int, Any, dict[str, str]]
Handler = Callable[[RepositoryState, User, Args, Args, dict[str, Any]], HandlerResult]
_ROUTES: list[tuple[str, re.Pattern[str], Handler]] = []


def _route(method: str, template: str) -> Callable[[Handler], Handler]:
    """Register a handler for "/api/v4" + template, where ":name" matches one path segment."""
    pattern = re.compile("^/api/v4" + re.sub(r":(\w+)", r"(?P<\1>[^/]+)", template) + "$")

    def register(fn: Handler) -> Handler:
        _ROUTES.append((method, pattern, fn))
        return fn

    return register


def _int(args: Args, key: str) -> int:
    try:
        return int(args[key])
    except ValueError:
        raise param_error(f"{key} is invalid") from None


@_route("GET", "/user")
def _get_user(st: GitLabState, user: User, a: Args, q: Args, b: dict[str, Any]) -> tuple[int, Any]:
    return 200, st.user_api(user)


@_route("GET", "/personal_access_tokens/self")
def _get_token(st: GitLabState, user: User, a: Args, q: Args, b: dict[str, Any]) -> tuple[int, Any]:
    return 200, st.token_info(user)


@_route("GET", "/projects/:id")
def _get_project(st: GitLabState, user: User, a: Args, q: Args, b: dict[str, Any]) -> tuple[int, Any]:
    return 200, st.project_api(st.find_project(a["id"]))


@_route("GET", "/groups/:id")
def _get_group(st: GitLabState, user: User, a: Args, q: Args, b: dict[str, Any]) -> tuple[int, Any]:
    return 200, st.group_api(st.find_group(a["id"]))


@_route("GET", "/projects/:id/hooks")
def _project_hooks(st: GitLabState, user: User, a: Args, q: Args, b: dict[str, Any]) -> tuple[int, Any]:
    return 200, st.list_hooks(project=st.find_project(a["id"]))


@_route("GET", "/groups/:id/projects")
def _group_projects(st: GitLabState, user: User, a: Args, q: Args, b: dict[str, Any]) -> tuple[int, Any]:
    return 200, st.group_projects(st.find_group(a["id"]), q)


@_route("GET", "/groups/:id/hooks")
def _group_hooks(st: GitLabState, user: User, a: Args, q: Args, b: dict[str, Any]) -> tuple[int, Any]:
    return 200, st.list_hooks(group=st.find_group(a["id"]))


# lib/api/members.rb defines "members/all" before "members/:user_id", so "all" is never taken for a user id.
@_route("GET", "/projects/:id/members")
def _list_members(st: GitLabState, user: User, a: Args, q: Args, b: dict[str, Any]) -> tuple[int, Any]:
    return 200, st.list_members(st.find_project(a["id"]), q, inherited=False)


@_route("GET", "/projects/:id/members/all")
def _list_all_members(st: GitLabState, user: User, a: Args, q: Args, b: dict[str, Any]) -> tuple[int, Any]:
    return 200, st.list_members(st.find_project(a["id"]), q, inherited=True)


@_route("GET", "/projects/:id/members/all/:user_id")
def _get_any_member(st: GitLabState, user: User, a: Args, q: Args, b: dict[str, Any]) -> tuple[int, Any]:
    user_id = _int(a, "user_id")  # Grape validates parameters before the endpoint looks anything up
    return 200, st.get_member(st.find_project(a["id"]), user_id, inherited=True)


@_route("GET", "/projects/:id/members/:user_id")
def _get_member(st: GitLabState, user: User, a: Args, q: Args, b: dict[str, Any]) -> tuple[int, Any]:
    user_id = _int(a, "user_id")
    return 200, st.get_member(st.find_project(a["id"]), user_id, inherited=False)


@_route("POST", "/projects/:id/statuses/:sha")
def _post_status(st: GitLabState, user: User, a: Args, q: Args, b: dict[str, Any]) -> tuple[int, Any]:
    # Grape reads parameters from the query string and the body alike.
    return 201, st.create_status(user, st.find_project(a["id"]), a["sha"], {**q, **b})


@_route("GET", "/projects/:id/repository/commits/:sha/statuses")
def _list_statuses(st: GitLabState, user: User, a: Args, q: Args, b: dict[str, Any]) -> tuple[int, Any]:
    return 200, st.list_statuses(st.find_project(a["id"]), a["sha"], q)


@_route("GET", "/projects/:id/repository/commits/:sha/merge_requests")
def _commit_mrs(st: GitLabState, user: User, a: Args, q: Args, b: dict[str, Any]) -> tuple[int, Any]:
    return 200, st.commit_merge_requests(st.find_project(a["id"]), a["sha"], q)


@_route("GET", "/projects/:id/merge_requests/:iid")
def _get_mr(st: GitLabState, user: User, a: Args, q: Args, b: dict[str, Any]) -> tuple[int, Any]:
    return 200, st.get_merge_request(st.find_project(a["id"]), _int(a, "iid"))


@_route("GET", "/projects/:id/merge_requests/:iid/notes")
def _list_notes(st: GitLabState, user: User, a: Args, q: Args, b: dict[str, Any]) -> tuple[int, Any]:
    return 200, st.list_notes(st.find_project(a["id"]), _int(a, "iid"), q)


@_route("POST", "/projects/:id/merge_requests/:iid/notes")
def _post_note(st: GitLabState, user: User, a: Args, q: Args, b: dict[str, Any]) -> tuple[int, Any]:
    return 201, st.create_note(user, st.find_project(a["id"]), _int(a, "iid"), {**q, **b}.get("body"))


@_route("GET", "/projects/:id/merge_requests/:iid/notes/:note_id")
def _get_note(st: GitLabState, user: User, a: Args, q: Args, b: dict[str, Any]) -> tuple[int, Any]:
    return 200, st.get_note(st.find_project(a["id"]), _int(a, "iid"), _int(a, "note_id"))


@_route("PUT", "/projects/:id/merge_requests/:iid/notes/:note_id")
def _put_note(st: GitLabState, user: User, a: Args, q: Args, b: dict[str, Any]) -> tuple[int, Any]:
    project = st.find_project(a["id"])
    return 200, st.update_note(user, project, _int(a, "iid"), _int(a, "note_id"), {**q, **b}.get("body"))


@_route("GET", "/projects/:id/merge_requests/:iid/notes/:note_id/award_emoji")
def _list_awards(st: GitLabState, user: User, a: Args, q: Args, b: dict[str, Any]) -> tuple[int, Any]:
    return 200, st.list_awards(st.find_project(a["id"]), _int(a, "iid"), _int(a, "note_id"))


@_route("POST", "/projects/:id/merge_requests/:iid/notes/:note_id/award_emoji")
def _post_award(st: GitLabState, user: User, a: Args, q: Args, b: dict[str, Any]) -> tuple[int, Any]:
    iid, note_id, name = _int(a, "iid"), _int(a, "note_id"), {**q, **b}.get("name")
    if name is None:
        raise param_error("name is missing")  # Grape's `requires :name`, checked before any lookup
    return 201, st.create_award(user, st.find_project(a["id"]), iid, note_id, name)


@_route("GET", "/projects/:id/merge_requests/:iid/notes/:note_id/award_emoji/:award_id")
def _get_award(st: GitLabState, user: User, a: Args, q: Args, b: dict[str, Any]) -> tuple[int, Any]:
    project = st.find_project(a["id"])
    return 200, st.get_award(project, _int(a, "iid"), _int(a, "note_id"), _int(a, "award_id"))


@_route("GET", "/projects/:id/jobs/:job_id")
def _get_job(st: GitLabState, user: User, a: Args, q: Args, b: dict[str, Any]) -> tuple[int, Any]:
    return 200, st.get_job(st.find_project(a["id"]), _int(a, "job_id"))


@_route("GET", "/projects/:id/pipelines/:pipeline_id/jobs")
def _pipeline_jobs(st: GitLabState, user: User, a: Args, q: Args, b: dict[str, Any]) -> tuple[int, Any]:
    return 200, st.pipeline_jobs(st.find_project(a["id"]), _int(a, "pipeline_id"), q)


@_route("GET", "/projects/:id/pipelines/:pipeline_id")
def _get_pipeline(st: GitLabState, user: User, a: Args, q: Args, b: dict[str, Any]) -> tuple[int, Any]:
    return 200, st.get_pipeline(st.find_project(a["id"]), _int(a, "pipeline_id"))


# file_path is one URL-encoded segment (.gitlab%2Fecr-scan-gate.toml): the server matches the raw path and
# only then unquotes each argument, so an encoded "/" never splits it.
@_route("GET", "/projects/:id/repository/files/:file_path")
def _get_file(st: RepositoryState, user: User, a: Args, q: Args, b: dict[str, Any]) -> HandlerResult:
    data, headers = st.get_file(user, a["id"], a["file_path"], q)
    return 200, data, headers


@_route("HEAD", "/projects/:id/repository/files/:file_path")
def _head_file(st: RepositoryState, user: User, a: Args, q: Args, b: dict[str, Any]) -> HandlerResult:
    return 200, b"", {**st.head_file(user, a["id"], a["file_path"], q), "Content-Type": "application/json"}


@_route("GET", "/projects/:id/repository/files/:file_path/raw")
def _raw_file(st: RepositoryState, user: User, a: Args, q: Args, b: dict[str, Any]) -> HandlerResult:
    data, headers = st.raw_file(user, a["id"], a["file_path"], q)
    return 200, data, headers


@_route("GET", "/projects/:id/ci/lint")
def _ci_lint(st: RepositoryState, user: User, a: Args, q: Args, b: dict[str, Any]) -> HandlerResult:
    return 200, st.ci_lint(user, a["id"], q)


@_route("GET", "/projects/:id/issues")
def _list_issues(st: IssuesState, user: User, a: Args, q: Args, b: dict[str, Any]) -> HandlerResult:
    return 200, st.list_issues(user, st.find_project(a["id"]), q)


@_route("POST", "/projects/:id/issues")
def _post_issue(st: IssuesState, user: User, a: Args, q: Args, b: dict[str, Any]) -> HandlerResult:
    return 201, st.create_issue(user, st.find_project(a["id"]), {**q, **b})


@_route("GET", "/projects/:id/issues/:issue_iid")
def _get_issue(st: IssuesState, user: User, a: Args, q: Args, b: dict[str, Any]) -> HandlerResult:
    iid = _int(a, "issue_iid")
    return 200, st.get_issue(user, st.find_project(a["id"]), iid)


@_route("PUT", "/projects/:id/issues/:issue_iid")
def _put_issue(st: IssuesState, user: User, a: Args, q: Args, b: dict[str, Any]) -> HandlerResult:
    iid = _int(a, "issue_iid")
    return 200, st.update_issue(user, st.find_project(a["id"]), iid, {**q, **b})


# lib/api/notes.rb names the issue's iid :noteable_id on these routes.
@_route("GET", "/projects/:id/issues/:noteable_id/notes")
def _list_issue_notes(st: IssuesState, user: User, a: Args, q: Args, b: dict[str, Any]) -> HandlerResult:
    iid = _int(a, "noteable_id")
    return 200, st.list_issue_notes(user, st.find_project(a["id"]), iid, q)


@_route("POST", "/projects/:id/issues/:noteable_id/notes")
def _post_issue_note(st: IssuesState, user: User, a: Args, q: Args, b: dict[str, Any]) -> HandlerResult:
    iid = _int(a, "noteable_id")
    return 201, st.create_issue_note(user, st.find_project(a["id"]), iid, {**q, **b})


def _paginate(items: list[Any], query: Args, host: str, path: str) -> tuple[list[Any], dict[str, str]]:
    """Offset pagination with GitLab's X-* headers and a Link header (python-gitlab follows rel="next")."""
    try:
        per_page = int(query.get("per_page", DEFAULT_PER_PAGE))
        page = int(query.get("page", 1))
    except ValueError:
        raise param_error("page or per_page is invalid") from None
    per_page = DEFAULT_PER_PAGE if per_page < 1 else min(per_page, MAX_PER_PAGE)
    page = max(page, 1)
    total_pages = max(1, math.ceil(len(items) / per_page))

    def link(n: int) -> str:
        return f"http://{host}{path}?{urllib.parse.urlencode({**query, 'page': n, 'per_page': per_page})}"

    rels = {
        "prev": page - 1 if page > 1 else None,
        "next": page + 1 if page < total_pages else None,
        "first": 1,
        "last": total_pages,
    }
    headers = {
        "X-Page": str(page),
        "X-Per-Page": str(per_page),
        "X-Total": str(len(items)),
        "X-Total-Pages": str(total_pages),
        "X-Next-Page": str(rels["next"] or ""),
        "X-Prev-Page": str(rels["prev"] or ""),
        "Link": ", ".join(f'<{link(n)}>; rel="{rel}"' for rel, n in rels.items() if n),
    }
    return items[(page - 1) * per_page : page * per_page], headers


def _fault_body(status: int, body: Any) -> Any:
    if body is not None:
        return body
    if status == 409:
        # Ci::CreateCommitStatusService when it cannot take the per-sha lock in time.
        return {"message": "Another update to this commit status is in progress"}
    return {"message": f"{status} {HTTPStatus(status).phrase}"}


def _coerce(value: str) -> Any:
    """Query-string values for GET /_fake/...: digits become ints, true/false booleans."""
    if re.fullmatch(r"-?\d+", value):
        return int(value)
    return {"true": True, "false": False}.get(value.lower(), value)


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.0: one request per connection, so stop() never races a client reusing a kept-alive socket.
    protocol_version = "HTTP/1.0"
    server_version = "fake-gitlab/1"
    fake: FakeGitLab

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
        if self.fake.verbose:
            super().log_message(format, *args)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._handle()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_GET  # noqa: N815

    def _handle(self) -> None:
        parts = urllib.parse.urlsplit(self.path)
        # GitLab ignores blank parameters (params[:ref].present?), so drop them here once.
        query: Args = {}
        for key, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
            if value != "":
                # An array parameter (iids[]=1&iids[]=2) arrives as "1,2", which Grape's comma-separated coercion
                # (CommaSeparatedToIntegerArray) reads alike; any other repeated key: the last one wins.
                query[key] = f"{query[key]},{value}" if key.endswith("[]") and key in query else value
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = self._parse_body(raw)
        except ValueError:
            self._send(400, {"error": "the request body is not valid JSON or form data"}, {})
            return
        if parts.path.startswith("/_fake/"):
            status, payload, headers = self.fake._control(self.command, parts.path[len("/_fake/") :], query, body)
            self._send(status, payload, headers)
            return
        status, payload, headers, user = self.fake._api(
            self.command, parts.path, query, body, self.headers, self.headers.get("Host", "127.0.0.1")
        )
        self.fake.log_request(
            {
                "method": self.command,
                "path": parts.path,
                "query": query,
                "body": body,
                "status": status,
                "user": user.username if user else None,
            }
        )
        self._send(status, payload, headers)

    def _parse_body(self, raw: bytes) -> dict[str, Any]:
        if not raw:
            return {}
        if "json" in (self.headers.get("Content-Type") or ""):
            data = json.loads(raw)
            if not isinstance(data, dict):
                raise ValueError("body must be a JSON object")
            return data
        return dict(urllib.parse.parse_qsl(raw.decode(), keep_blank_values=True))

    def _send(self, status: int, payload: Any, headers: dict[str, str]) -> None:
        if isinstance(payload, bytes):
            data, content_type = payload, "application/octet-stream"
        elif isinstance(payload, str):
            data, content_type = payload.encode(), "text/plain"
        else:
            data, content_type = json.dumps(payload).encode(), "application/json"
        self.send_response(status)
        # A handler may choose the Content-Type (e.g. a raw file's); the length is always the payload's.
        self.send_header("Content-Type", headers.get("Content-Type", content_type))
        self.send_header("Content-Length", str(len(data)))
        for key, value in headers.items():
            if key.lower() not in ("content-type", "content-length"):
                self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            try:
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (e.g. a timeout test against a delay fault)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default backlog of 5 drops bursts of connections (a 1 s SYN retry each).
    request_queue_size = 128


class FakeGitLab(IssuesState, RepositoryState):
    """The fake GitLab server; the control API and snapshots are inherited from GitLabState (the repository files
    and CI configs from RepositoryState, the project issues from IssuesState)."""

    def __init__(
        self,
        token: str = "fake-gitlab-token",
        host: str = "127.0.0.1",
        port: int = 0,
        verbose: bool = False,
        **state_options: Any,
    ) -> None:
        super().__init__(token=token, **state_options)
        self.token = token
        self.verbose = verbose
        self._address = (host, port)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeGitLab is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeGitLab:
        handler = type("FakeGitLabHandler", (_Handler,), {"fake": self})
        self._server = _Server(self._address, handler)
        self.base_url = self.url
        # A short poll interval keeps stop() (and so each test's teardown) fast.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-gitlab", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeGitLab:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def info(self) -> dict[str, Any]:
        return {
            "url": self.base_url,
            "api_url": f"{self.base_url}/api/v4",
            "bot_user": self.user_api(self.users[self.bot_user_id]),
        }

    def _api(
        self, method: str, path: str, query: Args, body: dict[str, Any], headers: Any, host: str
    ) -> tuple[int, Any, dict[str, str], User | None]:
        fault = self.take_fault(method, path)
        if fault is not None:
            if fault.delay_s:
                time.sleep(fault.delay_s)  # outside the lock: other requests go on meanwhile
            if fault.status is not None:
                extra = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
                return fault.status, _fault_body(fault.status, fault.body), extra, None
        bearer = (headers.get("Authorization") or "").removeprefix("Bearer ").strip()
        user = self.authenticate(headers.get("PRIVATE-TOKEN") or bearer or None)
        if user is None:
            return 401, {"message": "401 Unauthorized"}, {}, None
        known_path = False
        for route_method, pattern, handler in _ROUTES:
            match = pattern.match(path)
            if match is None:
                continue
            known_path = True
            if route_method != method:
                continue
            args = {k: urllib.parse.unquote(v) for k, v in match.groupdict().items()}
            try:
                status, payload, *rest = handler(self, user, args, query, body)
            except ApiError as exc:
                return exc.status, exc.body, exc.headers, user
            answer_headers: dict[str, str] = dict(rest[0]) if rest else {}
            if method == "GET" and isinstance(payload, list):
                payload, page_headers = _paginate(payload, query, host, path)
                answer_headers.update(page_headers)
            return status, payload, answer_headers, user
        # Fail loudly on anything the fake does not model, rather than answer something plausible.
        what = "method" if known_path else "route"
        return 501, {"message": f"not implemented by fake GitLab ({what}): {method} {path}"}, {}, user

    def _control(self, method: str, name: str, query: Args, body: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        if name not in CONTROL_METHODS:
            return 404, {"message": f"unknown control method {name!r}", "methods": list(CONTROL_METHODS)}, {}
        kwargs = body if method == "POST" else {k: _coerce(v) for k, v in query.items()}
        try:
            return 200, getattr(self, name)(**kwargs), {}
        except ApiError as exc:
            return exc.status, exc.body, exc.headers
        except (TypeError, ValueError, KeyError) as exc:
            return 400, {"message": f"{type(exc).__name__}: {exc}"}, {}


class FakeGitLabClient:
    """Drives a FakeGitLab in another process through /_fake/: client.add_project(1, "g/p") etc."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def call(self, name: str, **kwargs: Any) -> Any:
        request = urllib.request.Request(  # noqa: S310 - a local http URL chosen by the test
            f"{self.url}/_fake/{name}",
            data=json.dumps(kwargs).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise ApiError(exc.code, json.loads(exc.read() or b"null")) from None

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name in CONTROL_METHODS:
            return partial(self.call, name)
        raise AttributeError(name)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve the fake GitLab API until interrupted.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8929, help="0 picks a free port")
    parser.add_argument(
        "--token",
        default=os.environ.get("FAKE_GITLAB_TOKEN", "fake-gitlab-token"),
        help=f"the PRIVATE-TOKEN of the bot user {BOT_USERNAME!r}",
    )
    parser.add_argument("--note-rate-limit", type=int, default=60, help="note creations per user and minute")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    options = parser.parse_args(argv)
    fake = FakeGitLab(
        token=options.token,
        host=options.host,
        port=options.port,
        verbose=options.verbose,
        note_rate_limit=options.note_rate_limit,
    ).start()
    print(fake.url, flush=True)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    try:
        stopped.wait()
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()


if __name__ == "__main__":
    main()
