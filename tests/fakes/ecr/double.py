"""EcrDouble: starts a moto child process and the scripting proxy in front of it, and scripts it in-process."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from . import events as _events
from .book import Call, _Book, _CallContext, _Script
from .constants import DEFAULT_ACCOUNT, DEFAULT_REGION, SCAN_OP
from .events import EventSpec, SentEvent, _EventTimer
from .helpers import _dummy_client, _Helpers, _post_json, _sqs_client
from .proxy import _ProxyHandler, _ProxyServer
from .steps import normalize_steps

# moto's state lives in module globals: one moto per child process keeps every double independent
# (and safe from an in-process mock_aws, whose stop() resets moto). The child serves until its stdin
# closes, so it dies with this process even after a crash.
_MOTO_CHILD = """
import logging, sys
from moto.server import ThreadedMotoServer
if sys.argv[1] != "verbose":
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print(server.get_host_and_port()[1], flush=True)
sys.stdin.read()
"""


class EcrDouble(_Helpers):
    """A moto server (its own child process, so doubles never share state) behind a scripting proxy.

    The proxy runs in a thread of this process. Point boto3 at `endpoint_url`, or give a subprocess
    `env()`.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        region: str = DEFAULT_REGION,
        account_id: str = DEFAULT_ACCOUNT,
        verbose: bool = False,
    ) -> None:
        self.host, self.port, self.region, self.account_id, self.verbose = host, port, region, account_id, verbose
        self._book = _Book()
        self._moto: subprocess.Popen[bytes] | None = None
        self._moto_errors: Any = None  # the child's stderr, read if it fails to start
        self._moto_address: tuple[str, int] = ("127.0.0.1", 0)
        self._proxy: _ProxyServer | None = None
        self._thread: threading.Thread | None = None
        self._clients: dict[str, Any] = {}
        self._clients_lock = threading.Lock()
        self._timer = _EventTimer()  # publishes scripted events when their timelines finish
        self._sent: list[SentEvent] = []
        self._sent_lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> EcrDouble:
        if self._proxy is not None:
            return self
        self._moto_address = ("127.0.0.1", self._start_moto())
        try:
            self._proxy = _ProxyServer((self.host, self.port), _ProxyHandler)
        except OSError:
            self.stop()  # e.g. the port is taken: don't leave moto running
            raise
        self._proxy.double = self
        self._thread = threading.Thread(
            target=self._proxy.serve_forever, kwargs={"poll_interval": 0.1}, name="ecr-double-proxy", daemon=True
        )
        self._thread.start()
        return self

    def _start_moto(self) -> int:
        errors = self._moto_errors = None if self.verbose else tempfile.TemporaryFile()
        self._moto = subprocess.Popen(
            [sys.executable, "-c", _MOTO_CHILD, "verbose" if self.verbose else "quiet"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors,
        )
        assert self._moto.stdout is not None
        line = self._moto.stdout.readline().strip()
        if not line.isdigit():
            self._moto.kill()
            self._moto.wait()
            self._moto = None
            detail = b""
            if errors is not None:
                errors.seek(0)
                detail = errors.read()[-2000:]
            raise RuntimeError(f"the moto server did not start: {detail.decode(errors='replace')}")
        return int(line)

    def stop(self) -> None:
        self._timer.close()  # first: a pending event must not go to a moto being shut down
        if self._proxy is not None:
            self._proxy.shutdown()
            self._proxy.server_close()
            self._proxy = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._moto is not None:
            assert self._moto.stdin is not None and self._moto.stdout is not None
            self._moto.stdin.close()  # the child's signal to exit
            try:
                self._moto.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._moto.kill()
                self._moto.wait()
            self._moto.stdout.close()
            self._moto = None
        if self._moto_errors is not None:
            self._moto_errors.close()
            self._moto_errors = None
        with self._clients_lock:
            self._clients.clear()  # they point at this moto's port

    def __enter__(self) -> EcrDouble:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- where it is -----------------------------------------------------------------------

    @property
    def endpoint_url(self) -> str:
        if self._proxy is None:
            raise RuntimeError("the ECR double is not started")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self._proxy.server_address[1]}"

    @property
    def moto_url(self) -> str:
        return f"http://{self._moto_address[0]}:{self._moto_address[1]}"

    def info(self) -> dict[str, str]:
        return {
            "endpoint_url": self.endpoint_url,
            "moto_url": self.moto_url,
            "region": self.region,
            "account_id": self.account_id,
        }

    def env(self) -> dict[str, str]:
        """Environment for a process (a Celery worker) whose boto3 should talk to this double."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": self.region,
        }

    def client(self, region: str | None = None, attempts: int = 1, **config: Any) -> Any:
        """A boto3 ECR client through the proxy; one attempt, so a test sees every scripted answer."""
        return _dummy_client(self.endpoint_url, region or self.region, attempts, **config)

    # -- scripting -------------------------------------------------------------------------

    def script(
        self,
        repository: str,
        *,
        steps: Sequence[Mapping[str, Any]],
        tag: str | None = None,
        digest: str | None = None,
        op: str = SCAN_OP,
        registry_id: str | None = None,
        events: EventSpec | Mapping[str, Any] | None = None,
    ) -> str | None:
        """Answer `op` for this image (or, with neither tag nor digest, the whole repository) from steps.

        One step per call (follow-up pages excluded), or, for a step with for_s, every call for that many
        seconds after it became current (the first step: now); the last repeats. A tag script also answers
        calls by that image's digest: given, or looked up in moto (now or at the first call), or derived
        from the tag when moto has no such image. Returns the digest when already known.

        With events (an EventSpec, or its fields as a dict), the scan's EventBridge event goes to the SQS
        queue when the timeline reaches its final step (see completion_time); events=None sends none, as
        when EventBridge loses one. A push event fixes the digest now: push the image first.
        """
        if not isinstance(repository, str) or not repository:
            raise ValueError("repository must be a non-empty string")
        if not isinstance(op, str) or not op:
            raise ValueError("op must be an ECR operation name")
        if registry_id is not None and not re.fullmatch(r"\d{12}", str(registry_id)):
            raise ValueError(f"registry_id must be 12 digits, got {registry_id!r}")
        normalized = normalize_steps(steps, op)
        spec = EventSpec.coerce(events)
        if spec is not None and op != SCAN_OP:
            raise ValueError(f"events go with {SCAN_OP} scripts, not {op}")
        if spec is not None and not (tag or digest):
            raise ValueError("events name one image: give tag or digest")
        registry = registry_id or self.account_id
        if tag and not digest:
            digest = self._lookup_digest(self.region, registry, repository, tag)
            if spec is not None and spec.push and not digest:
                digest = self._resolve_digest(self.region, registry, repository, tag)  # the push names it now
        script = _Script(op, repository, tag or None, digest or None, registry_id, normalized, events=spec)
        self._book.add(script)
        if spec is not None and spec.push:
            self._timer.schedule(script.registered_at, lambda: self._publish_push(script))
        self._schedule_scan_event(script)
        return script.digest

    def completion_time(
        self,
        repository: str,
        tag: str | None = None,
        digest: str | None = None,
        op: str = SCAN_OP,
        registry_id: str | None = None,
    ) -> float | None:
        """When the script a call for this image gets first moves onto a final step (time.time()).

        From the timeline: registration time plus the for_s of the steps before, so it can lie ahead of
        now. None while a per-call step still stands between (then it is the call that consumes it), or
        when no step is final, or there is no such script.
        """
        script = self._book.script_for(op, registry_id or self.account_id, repository, tag, digest)
        return None if script is None else script.timeline_completed_at

    def events_sent(self) -> list[SentEvent]:
        """Every event copy published (or tried: see error), in the order sent."""
        with self._sent_lock:
            return list(self._sent)

    def calls(self, op: str | None = None, repository: str | None = None) -> list[Call]:
        """Answered requests through the proxy (not set-up helpers, not /moto-api), by arrival time.

        A call is logged as its answer goes out, so one still sleeping in a `delay_s` step is not here yet.
        """
        return self._book.calls(op, repository)

    def clear_calls(self) -> int:
        return self._book.clear_calls()

    def reset(self, moto: bool = False) -> None:
        """Forget scripts, paged answers, the call log, pending and sent events; with moto=True also this
        double's moto state (its queues too)."""
        self._timer.cancel_all()
        self._book.reset()
        with self._sent_lock:
            self._sent.clear()
        if moto:
            _post_json(f"{self.moto_url}/moto-api/reset", {})

    # -- internals used by the proxy -------------------------------------------------------

    def _take(self, ctx: _CallContext) -> tuple[_Script, dict[str, Any], int] | None:
        op, registry_id, repository = ctx.op, ctx.registry_id or self.account_id, ctx.repository or ""
        tag, digest = ctx.image_id.get("imageTag"), ctx.image_id.get("imageDigest")
        if digest and not self._book.has_exact(op, registry_id, repository, tag, digest):
            # Maybe an image scripted by tag whose digest wasn't known yet: look those up in moto.
            for script in self._book.unresolved(op, repository):
                if self._lookup_digest(ctx.region or self.region, registry_id, repository, script.tag or "") == digest:
                    self._book.set_digest(script, digest)
        taken = self._book.take(op, registry_id, repository, tag, digest, now=ctx.arrived)
        if taken is not None:
            self._schedule_scan_event(taken[0])  # this call may have moved the timeline towards its end
        return taken

    def _resolve_digest(self, region: str, registry_id: str, repository: str, tag: str) -> str:
        found = self._lookup_digest(region, registry_id, repository, tag)
        # No such image in moto: a stable digest derived from the name, so tag and digest still agree.
        return found or "sha256:" + hashlib.sha256(f"{registry_id}/{repository}:{tag}".encode()).hexdigest()

    def _setup_client(self, region: str | None) -> Any:
        # Straight to moto, not through the proxy: set-up is not traffic the call log should count.
        region = region or self.region
        with self._clients_lock:
            if region not in self._clients:
                self._clients[region] = _dummy_client(self.moto_url, region)
            return self._clients[region]

    def _moto_api(self, path: str, payload: Mapping[str, Any]) -> None:
        _post_json(f"{self.moto_url}{path}", payload)

    # -- SQS: set-up helpers straight to moto, and event publishing --------------------------

    def create_queue(
        self,
        name: str,
        dead_letter: bool = False,
        max_receives: int | None = None,
        visibility_timeout: int | None = None,
        region: str | None = None,
    ) -> str:
        """An SQS queue in moto; returns its URL on the proxy, what the events process is configured with.

        With dead_letter or max_receives, also "<name>-dlq" (see queue_url) and a RedrivePolicy moving a
        message there after max_receives receives (default 3).
        """
        url = _events.create_queue(
            self._sqs_setup_client(region),
            name,
            dead_letter=dead_letter,
            max_receives=max_receives,
            visibility_timeout=visibility_timeout,
        )
        return _events.public_queue_url(url, self.endpoint_url)

    def queue_url(self, name: str, region: str | None = None) -> str:
        url = self._sqs_setup_client(region).get_queue_url(QueueName=name)["QueueUrl"]
        return _events.public_queue_url(url, self.endpoint_url)

    def send_event(self, queue_url: str, body: Mapping[str, Any] | str, region: str | None = None) -> str:
        """Put one message on a queue (an event dict, or a raw string); returns its MessageId."""
        return _events.send_event(self._sqs_setup_client(region), queue_url, body)

    def queue_messages(
        self,
        queue_url: str,
        *,
        wait_s: int = 0,
        delete: bool = True,
        max_messages: int = 100,
        region: str | None = None,
    ) -> list[dict[str, Any]]:
        """The messages on a queue, as boto3 returns them; delete=False puts them back (a receive each)."""
        return _events.receive_messages(
            self._sqs_setup_client(region), queue_url, wait_s=wait_s, delete=delete, max_messages=max_messages
        )

    def _sqs_setup_client(self, region: str | None) -> Any:
        key = f"sqs:{region or self.region}"
        with self._clients_lock:
            if key not in self._clients:
                self._clients[key] = _sqs_client(self.moto_url, region or self.region)
            return self._clients[key]

    def _schedule_scan_event(self, script: _Script) -> None:
        completed_at = self._book.claim_events(script)
        if completed_at is not None and script.events is not None:
            due = completed_at + script.events.delay_s
            self._timer.schedule(due, lambda: self._publish_scan(script, due))

    def _script_digest(self, script: _Script) -> str:
        if script.digest:
            return script.digest
        registry = script.registry_id or self.account_id
        digest = self._resolve_digest(self.region, registry, script.repository, script.tag or "")
        return self._book.set_digest(script, digest)  # calls by tag answer this digest from now on

    def _publish_push(self, script: _Script) -> None:
        assert script.events is not None
        event = _events.ecr_image_action_event(
            script.repository,
            self._script_digest(script),
            script.tag,
            account=script.registry_id or self.account_id,
            region=self.region,
            when=script.registered_at,
        )
        self._publish(script.events.queue_url, event, 1, script.registered_at)

    def _publish_scan(self, script: _Script, due: float) -> None:
        if not self._book.registered(script):
            return  # re-scripted (a fresh timeline) or reset since: that scan's event never comes
        spec, index, completed_at = script.events, script.final_step, script.timeline_completed_at
        assert spec is not None and index is not None and completed_at is not None
        event = _events.scan_event_for(
            spec,
            script.steps[index],
            repository=script.repository,
            digest=self._script_digest(script),
            tag=script.tag,
            account=script.registry_id or self.account_id,
            region=self.region,
            when=completed_at,
        )
        self._publish(spec.queue_url, event, spec.copies, due)

    def _publish(self, queue_url: str, event: Mapping[str, Any], copies: int, due: float) -> None:
        client = self._sqs_setup_client(None)
        for _ in range(copies):
            error = None
            try:
                _events.send_event(client, queue_url, event)
            except Exception as exc:  # e.g. no such queue: recorded for the test to see, not raised in a timer
                error = f"{type(exc).__name__}: {exc}"
                if self.verbose:
                    print(f"ECR double: event to {queue_url} failed: {error}", file=sys.stderr)
            with self._sent_lock:
                self._sent.append(
                    SentEvent(queue_url, str(event["id"]), str(event["detail-type"]), due, time.time(), error)
                )
