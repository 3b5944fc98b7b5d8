"""EcrDouble: starts a moto child process and the scripting proxy in front of it, and scripts it in-process."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from .book import Call, _Book, _CallContext, _Script
from .constants import DEFAULT_ACCOUNT, DEFAULT_REGION, SCAN_OP
from .helpers import _dummy_client, _Helpers, _post_json
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
    ) -> str | None:
        """Answer `op` for this image (or, with neither tag nor digest, the whole repository) from steps.

        One step per call (follow-up pages excluded); the last repeats. A tag script also answers calls
        by that image's digest: given, or looked up in moto (now or at the first call), or derived from
        the tag when moto has no such image. Returns the digest when already known.
        """
        if not isinstance(repository, str) or not repository:
            raise ValueError("repository must be a non-empty string")
        if not isinstance(op, str) or not op:
            raise ValueError("op must be an ECR operation name")
        if registry_id is not None and not re.fullmatch(r"\d{12}", str(registry_id)):
            raise ValueError(f"registry_id must be 12 digits, got {registry_id!r}")
        normalized = normalize_steps(steps, op)
        if tag and not digest:
            digest = self._lookup_digest(self.region, registry_id or self.account_id, repository, tag)
        script = _Script(op, repository, tag or None, digest or None, registry_id, normalized)
        self._book.add(script)
        return script.digest

    def calls(self, op: str | None = None, repository: str | None = None) -> list[Call]:
        """Answered requests through the proxy (not set-up helpers, not /moto-api), by arrival time.

        A call is logged as its answer goes out, so one still sleeping in a `delay_s` step is not here yet.
        """
        return self._book.calls(op, repository)

    def clear_calls(self) -> int:
        return self._book.clear_calls()

    def reset(self, moto: bool = False) -> None:
        """Forget scripts, paged answers and the call log; with moto=True also this double's moto state."""
        self._book.reset()
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
        return self._book.take(op, registry_id, repository, tag, digest)

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
