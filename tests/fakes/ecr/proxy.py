"""The HTTP proxy in front of moto: answers scripted steps, forwards the rest, logs calls, serves /_ecr/."""

from __future__ import annotations

import copy
import http.client
import json
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from botocore.exceptions import ClientError

from .book import Call, _CallContext, _Script
from .builders import _default_message, scan_body
from .constants import _ERROR_HTTP, _STATUS_OPS, SCAN_OP
from .wire import (
    _BAD_MAX_RESULTS,
    _HOP_BY_HOP,
    _TOKEN_PREFIX,
    _asked_image,
    _error_code,
    _max_results,
    _paginate,
    _region,
    _token,
    _untoken,
)

if TYPE_CHECKING:
    from .double import EcrDouble

ECR_TARGET_PREFIX = "AmazonEC2ContainerRegistry_V20150921."


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    double: EcrDouble

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out on a delay_s step hangs up before its answer: expected, not an error.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as botocore's connection pool expects
    _arrived: float = 0.0
    # Headers and body go out in two writes; with Nagle on, the client's delayed ACK adds ~40 ms a call.
    disable_nagle_algorithm = True
    server: _ProxyServer

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.double.verbose:
            super().log_message(format, *args)

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_GET

    # -- dispatch --------------------------------------------------------------------------

    def _handle(self) -> None:
        self._arrived = time.time()
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            # Fail loudly: botocore's JSON protocols always send Content-Length.
            self._send_json(501, {"error": "the ECR double does not read chunked request bodies"})
            return
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        path = urlsplit(self.path).path
        if path.startswith("/_ecr/"):
            self._control(path, body)
            return
        target = self.headers.get("X-Amz-Target", "")
        if target.startswith(ECR_TARGET_PREFIX):
            self._ecr(target[len(ECR_TARGET_PREFIX) :], body)
            return
        status, headers, answer = self._forward(body)
        if not path.startswith("/moto-api"):  # moto's own API is set-up, not traffic to measure
            ctx = _CallContext(target or f"{self.command} {path}", None, None, None, {})
            self._log(ctx, "moto", status, _error_code(status, answer))
        self._send_raw(status, headers, answer)

    def _ecr(self, op: str, raw: bytes) -> None:
        double = self.server.double
        try:
            request = json.loads(raw or b"{}")
        except ValueError:
            request = {}
        request = request if isinstance(request, dict) else {}
        repository = request.get("repositoryName")
        token = request.get("nextToken")
        ctx = _CallContext(
            op,
            _region(self.headers.get("Authorization", "")) or double.region,
            str(request.get("registryId") or double.account_id),
            repository if isinstance(repository, str) else None,
            _asked_image(request),
            next_token=bool(token),
            caller_account=double.account_id,
            arrived=self._arrived,
        )
        if isinstance(token, str) and token.startswith(_TOKEN_PREFIX):
            self._next_page(ctx, request, token)
            return
        taken = double._take(ctx) if ctx.repository else None
        if taken is None:
            self._pass_through(ctx, raw, None)
            return
        script, step, index = taken
        if step.get("delay_s"):
            time.sleep(step["delay_s"])  # a slow ECR, for client timeouts; this proxy thread just waits
        if not {"status", "error", "response"} & step.keys():
            self._pass_through(ctx, raw, index)
            return
        status, body = self._render(step, ctx, script)
        if status == 200 and op == SCAN_OP:
            max_results = _max_results(request)
            if max_results is None:
                status, body = 400, dict(_BAD_MAX_RESULTS)
            else:
                full = body
                body, more = _paginate(full, 0, max_results)
                if more:
                    body["nextToken"] = _token(double._book.store(full, index), max_results)
        self._log(ctx, "script", status, body.get("__type"), index)
        self._send_aws(status, body)

    def _render(self, step: Mapping[str, Any], ctx: _CallContext, script: _Script) -> tuple[int, dict[str, Any]]:
        if "error" in step:
            code = step["error"]
            message = step["message"] if "message" in step else _default_message(code, ctx)
            return step.get("http", _ERROR_HTTP.get(code, 400)), {"__type": code, "message": message}
        registry_id, repository = ctx.registry_id or "", ctx.repository or ""
        if "status" in step:
            image_id = self._answered_image_id(ctx, script)
            # An old scan's answer says when that scan ended, and leaves the script's own completion unset.
            ago = step.get("completed_ago_s")
            stamp = time.time() - ago if ago is not None else self.server.double._book.stamp(script)
            return 200, scan_body(
                step, registry_id=registry_id, repository=repository, image_id=image_id, completed_at=stamp
            )
        body = copy.deepcopy(dict(step["response"]))
        if step.get("retarget", True) and ctx.op in _STATUS_OPS:
            # A recorded answer speaks for the image asked about, so the bot sees one consistent digest.
            body.update(registryId=registry_id, repositoryName=repository, imageId=self._answered_image_id(ctx, script))
        return 200, body

    def _answered_image_id(self, ctx: _CallContext, script: _Script) -> dict[str, str]:
        # Asked by digest, ECR echoes the digest only; asked by tag, it adds the digest (AWS examples).
        asked = ctx.image_id
        if asked.get("imageDigest") or not asked.get("imageTag"):
            return dict(asked)
        tag = asked["imageTag"]
        if script.tag == tag and script.digest:
            return {"imageDigest": script.digest, "imageTag": tag}
        double = self.server.double
        digest = double._resolve_digest(ctx.region or double.region, ctx.registry_id or "", ctx.repository or "", tag)
        if script.tag == tag:
            # Fixed from now on, so that later calls by this digest find the same script.
            digest = double._book.set_digest(script, digest)
        return {"imageDigest": digest, "imageTag": tag}

    def _next_page(self, ctx: _CallContext, request: Mapping[str, Any], token: str) -> None:
        # A follow-up page reads the answer the first page came from; it consumes no step.
        parsed = _untoken(token)
        stored = self.server.double._book.stored(parsed[0]) if parsed else None
        max_results = _max_results(request)
        step = stored[1] if stored else None
        if stored is None or parsed is None:
            status, body = 400, {"__type": "InvalidParameterException", "message": "Invalid parameter at 'nextToken'"}
        elif max_results is None:
            status, body = 400, dict(_BAD_MAX_RESULTS)
        else:
            status, (body, more) = 200, _paginate(stored[0], parsed[1], max_results)
            if more:
                body["nextToken"] = _token(parsed[0], parsed[1] + max_results)
        self._log(ctx, "script", status, body.get("__type"), step)
        self._send_aws(status, body)

    def _pass_through(self, ctx: _CallContext, raw: bytes, step: int | None) -> None:
        status, headers, answer = self._forward(raw)
        self._log(ctx, "moto", status, _error_code(status, answer), step)
        self._send_raw(status, headers, answer)

    # -- control routes --------------------------------------------------------------------

    def _control(self, path: str, raw: bytes) -> None:
        double = self.server.double
        route = (self.command, path.rstrip("/"))
        try:
            payload = json.loads(raw) if raw else {}
            if not isinstance(payload, dict):
                raise ValueError("the request body must be a JSON object")
            if route == ("GET", "/_ecr/info"):
                self._send_json(200, double.info())
            elif route == ("POST", "/_ecr/script"):
                digest = double.script(
                    _required(payload, "repository"),
                    steps=_required(payload, "steps"),
                    tag=payload.get("tag"),
                    digest=payload.get("digest"),
                    op=payload.get("op", SCAN_OP),
                    registry_id=payload.get("registry_id"),
                    events=payload.get("events"),
                )
                self._send_json(200, {"digest": digest})
            elif route == ("GET", "/_ecr/completion"):
                asked = _query(self.path)
                completed_at = double.completion_time(
                    _required(asked, "repository"),
                    tag=asked.get("tag"),
                    digest=asked.get("digest"),
                    op=asked.get("op", SCAN_OP),
                    registry_id=asked.get("registry_id"),
                )
                self._send_json(200, {"completed_at": completed_at})
            elif route == ("POST", "/_ecr/queues"):
                url = double.create_queue(
                    _required(payload, "name"),
                    dead_letter=bool(payload.get("dead_letter", False)),
                    max_receives=payload.get("max_receives"),
                    visibility_timeout=payload.get("visibility_timeout"),
                )
                self._send_json(200, {"queue_url": url})
            elif route == ("GET", "/_ecr/queues"):
                self._send_json(200, {"queue_url": double.queue_url(_required(_query(self.path), "name"))})
            elif route == ("POST", "/_ecr/send_event"):
                message_id = double.send_event(_required(payload, "queue_url"), _required(payload, "body"))
                self._send_json(200, {"message_id": message_id})
            elif route == ("POST", "/_ecr/queue_messages"):
                messages = double.queue_messages(
                    _required(payload, "queue_url"),
                    wait_s=payload.get("wait_s", 0),
                    delete=bool(payload.get("delete", True)),
                    max_messages=payload.get("max_messages", 100),
                )
                self._send_json(200, {"messages": messages})
            elif route == ("GET", "/_ecr/events_sent"):
                self._send_json(200, {"events": [asdict(e) for e in double.events_sent()]})
            elif route == ("GET", "/_ecr/calls"):
                query = parse_qs(urlsplit(self.path).query)
                calls = double.calls(op=query.get("op", [None])[0], repository=query.get("repository", [None])[0])
                self._send_json(200, {"calls": [asdict(c) for c in calls]})
            elif route == ("DELETE", "/_ecr/calls"):
                self._send_json(200, {"cleared": double.clear_calls()})
            elif route == ("POST", "/_ecr/reset"):
                double.reset(moto=bool(payload.get("moto", False)))
                self._send_json(200, {"ok": True})
            else:
                self._send_json(404, {"error": f"no control route {self.command} {path}"})
        except (ValueError, TypeError) as exc:
            self._send_json(400, {"error": str(exc)})
        except ClientError as exc:  # moto refused a set-up call (e.g. no such queue): the caller's mistake
            self._send_json(400, {"error": str(exc)})

    # -- wire ------------------------------------------------------------------------------

    def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        host, port = self.server.double._moto_address
        # 60 s, botocore's own read timeout: well above an SQS long poll's 20 s WaitTimeSeconds.
        conn = http.client.HTTPConnection(host, port, timeout=60)
        try:
            # The request goes on as it came: same method, path, headers (Host included) and body.
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in _HOP_BY_HOP:
                    conn.putheader(name, value)
            conn.endheaders(body or None)
            response = conn.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            conn.close()

    def _send_raw(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response_only(status)
        for name, value in headers:
            lower = name.lower()
            if lower in _HOP_BY_HOP or (lower == "content-length" and self.command != "HEAD"):
                continue
            self.send_header(name, value)
        if self.command != "HEAD":
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self.end_headers()

    def _send_aws(self, status: int, body: Mapping[str, Any]) -> None:
        # AWS JSON 1.1 wire shape; botocore reads the error code from "__type".
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        if "__type" in body:
            self.send_header("x-amzn-ErrorType", str(body["__type"]))
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _send_json(self, status: int, body: Mapping[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _log(
        self, ctx: _CallContext, answered_by: str, status: int, error: str | None, step: int | None = None
    ) -> None:
        # Called before the answer is written: a client that got its answer always finds its call logged.
        image = ctx.image_id.get("imageTag") or ctx.image_id.get("imageDigest")
        call = Call(
            ctx.op,
            ctx.repository,
            image,
            ctx.registry_id,
            ctx.region,
            self._arrived,
            answered_by,
            status,
            error,
            ctx.next_token,
            step,
        )
        self.server.double._book.record(call)


def _required(payload: Mapping[str, Any], key: str) -> Any:
    if key not in payload:
        raise ValueError(f"missing {key!r}")
    return payload[key]


def _query(path: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(path).query).items()}
