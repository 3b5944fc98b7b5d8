"""The whole product as processes — own Redis, gunicorn, Celery worker(s) and beat — for faults, soak and demo."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import tomllib
from pathlib import Path
from typing import Any

import redis
import requests

from tests import harness
from tests.fakes.ecr import EcrDouble
from tests.fakes.gitlab import FakeGitLab
from tests.fakes.payloads import webhook_headers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A redis-server of our own with AOF on, so a restart keeps queued tasks and gate records."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server not installed: run `make redis` (scripts/ensure-redis.sh)")
        # appendfsync always: a restart in the middle of the suite must lose nothing that was acknowledged.
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.workdir),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--logfile",
                str(self.workdir / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        harness.wait_for(self.ping, 20, "redis-server to start")
        return self

    def ping(self) -> bool:
        try:
            return bool(redis.Redis(port=self.port, socket_connect_timeout=0.5).ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            try:
                redis.Redis(port=self.port).shutdown()  # flushes the AOF
            except redis.RedisError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def restart(self, down_s: float = 0.0) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()


class Stack:
    """gunicorn + worker(s) + beat against our own Redis, the fake GitLab and the ECR double."""

    def __init__(
        self,
        workdir: Path,
        *,
        workers: int = 1,
        concurrency: int = 4,
        beat: bool = True,
        events: dict[str, Any] | None = None,
        extra_env: dict[str, str] | None = None,
        **config: Any,
    ) -> None:
        self.workdir = workdir
        # With `events` ([events] settings beyond queue_url), an SQS queue on the double's moto and the events
        # process; the queue's URL is filled in at start.
        self.events_config = events
        self.extra_env = dict(extra_env or {})  # e.g. the metrics token or the dashboard password
        self.queue_url = self.dead_letter_url = ""
        self.events: harness.Process | None = None
        self.n_workers, self.concurrency, self.with_beat = workers, concurrency, beat
        # visibility 24 s: a killed worker's tasks return within the suite's patience, and the countdown
        # cap (12 s) still exceeds the note retry floor (2 × GitLab timeout of 5 s).
        self.config_options = {"visibility": 24, "stuck_after": 4, **config}
        self.redis = RedisServer(workdir)
        self.gitlab = FakeGitLab(token=harness.GITLAB_TOKEN)
        self.ecr = EcrDouble()
        self.web_port = free_port()
        self.workers: list[harness.Process] = []
        self.web: harness.Process | None = None
        self.beat: harness.Process | None = None
        self.http = requests.Session()

    def start(self) -> Stack:
        self.redis.start()
        self.gitlab.start()
        self.ecr.start()
        harness.ensure_repositories(self.ecr)
        if self.events_config is not None:
            name = f"gate-events-{free_port()}"
            self.queue_url = self.ecr.create_queue(name, max_receives=3)
            self.dead_letter_url = self.ecr.queue_url(f"{name}-dlq")
            self.config_options["events"] = {
                "queue_url": self.queue_url,
                "dead_letter_url": self.dead_letter_url,
                **self.events_config,
            }
        config = harness.write_config(
            self.workdir / "config.toml", self.gitlab.url, self.redis.url, **self.config_options
        )
        self.env = harness.stack_env(config, self.ecr) | self.extra_env
        self.prefix = tomllib.loads(config.read_text())["redis"]["key_prefix"]
        self.web = harness.web_server(self.env, self.workdir, self.web_port, "--workers", "2").start()
        harness.wait_for(self._web_up, 30, "gunicorn to answer")
        for i in range(self.n_workers):
            self.start_worker(i)
        if self.with_beat:
            self.beat = harness.celery_beat(self.env, self.workdir).start()
        if self.events_config is not None:
            self.events = harness.events_process(self.env, self.workdir).start()
        return self

    def _web_up(self) -> bool:
        if self.web and self.web.proc and self.web.proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited: {self.web.log_text()[-3000:]}")
        try:
            return self.http.get(f"{self.base_url}/healthz", timeout=2).status_code in (200, 503)
        except requests.RequestException:
            return False

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def start_worker(self, i: int = 0) -> harness.Process:
        proc = harness.celery_worker(self.env, self.workdir, name=f"worker{i}", concurrency=self.concurrency)
        proc.start()
        if i < len(self.workers):
            self.workers[i] = proc
        else:
            self.workers.append(proc)
        return proc

    def deliver(self, event: str, body: dict[str, Any], key: str | None) -> requests.Response:
        # A connection per delivery, as GitLab does: reusing one that gunicorn's keep-alive timer has
        # closed fails a POST (which urllib3 rightly does not retry).
        headers = webhook_headers(event, harness.WEBHOOK_SECRET, key) | {"Connection": "close"}
        return requests.post(f"{self.base_url}/webhook", json=body, headers=headers, timeout=15)

    def scenario(self) -> harness.Scenario:
        return harness.Scenario(self.gitlab, self.ecr, self.deliver)

    def store(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis.url, decode_responses=True)

    def stop(self) -> None:
        for proc in [self.events, self.beat, *self.workers, self.web]:
            if proc is not None:
                proc.stop()
        self.redis.stop()
        self.ecr.stop()
        self.gitlab.stop()

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
