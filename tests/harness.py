"""The real stack for tests: Redis, a Celery worker process, the fake GitLab and the ECR double."""

from __future__ import annotations

import itertools
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import redis

from tests import configs
from tests.configs import GROUP, PUSH_API, PUSH_APP
from tests.fakes.ecr import EcrDouble
from tests.fakes.gitlab import FakeGitLab
from tests.fakes.payloads import job_payload, pipeline_payload, webhook_headers

ROOT = Path(__file__).resolve().parent.parent
GITLAB_TOKEN = "glpat-test-token-0123456789"
WEBHOOK_SECRET = "whsecret-test-9876543210"


def write_config(
    path: Path,
    gitlab_url: str,
    redis_url: str,
    *,
    timeout_s: float | None = None,
    rate: float | None = None,
    burst: int | None = None,
    stuck_after: float | None = None,
    visibility: int | None = None,
    prefix: str | None = None,
    poll_interval: float | None = None,
    grace: float | None = None,
    projects: list[dict[str, Any]] | None = None,
    events: dict[str, Any] | None = None,
    monitor: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    logging: dict[str, Any] | None = None,
) -> Path:
    """The harness's config (tests.configs holds the defaults); only the values given here override them."""
    given = {
        "scan": {"poll_interval_s": poll_interval, "timeout_s": timeout_s, "not_found_grace_s": grace},
        "ecr": {"rate_per_s": rate, "burst": burst},
        "sweep": {"stuck_after_s": stuck_after},
        "celery": {"visibility_timeout_s": visibility},
        "redis": {"url": redis_url, "key_prefix": prefix},
    }
    sections: dict[str, Any] = {
        name: {k: v for k, v in values.items() if v is not None} for name, values in given.items()
    }
    if projects is not None:
        sections["projects"] = projects
    if events is not None:
        sections["events"] = events
    if monitor is not None:
        sections["monitor"] = monitor
    for name, value in (("metrics", metrics), ("logging", logging)):
        if value is not None:
            sections[name] = value
    return configs.write_config(path, gitlab={"url": gitlab_url}, **sections)


def stack_env(config: Path, ecr: EcrDouble) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ECR_GATE", "GITLAB_"))}
    env.update(ecr.env())
    env.update(
        {
            "ECR_GATE_CONFIG": str(config),
            "GITLAB_TOKEN": GITLAB_TOKEN,
            "GITLAB_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.pop("REDIS_URL", None)
    return env


def ensure_repositories(ecr: EcrDouble, names: Iterable[str] = ("app", "api")) -> None:
    """moto's state is per process, shared by every double in it: create each repository once."""
    existing = {r["repositoryName"] for r in ecr.client().describe_repositories()["repositories"]}
    for name in names:
        if name not in existing:
            ecr.create_repository(name, scan_on_push=True)


def point_boto3_at(env: dict[str, str], monkeypatch: Any) -> None:
    """In-process boto3 talks to a double: its env set, and boto3's cached default session dropped."""
    import boto3

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # it caches the credentials it found first


class Process:
    """A child process (worker, beat, gunicorn) with its log in a file; killable like in production."""

    def __init__(
        self, name: str, argv: list[str], env: dict[str, str], log_dir: Path, ready: str | None = None
    ) -> None:
        self.name, self.argv, self.env, self.ready = name, argv, env, ready
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> Process:
        self._offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = self.log_path.open("ab")
        # A session of its own: a SIGKILL of the group takes the prefork children too, as a crash would.
        self.proc = subprocess.Popen(
            self.argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        if self.ready:
            wait_for(
                lambda: self.ready in self.log_text() or self.proc.poll() is not None, timeout, f"{self.name} to start"
            )
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log_text()[-3000:]}")
        return self

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[self._offset :]
        except FileNotFoundError:
            return ""

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


def _celery(command: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "workers.main", command, "--loglevel", "INFO", *args]


def celery_worker(env: dict[str, str], log_dir: Path, name: str = "worker", concurrency: int = 4) -> Process:
    node = f"{name}-{secrets.token_hex(3)}@%h"
    argv = _celery(
        "worker",
        "--concurrency",
        str(concurrency),
        "-Q",
        "ecr-scan-gate",
        "--without-gossip",
        "--without-mingle",
        "-n",
        node,
    )
    return Process(name, argv, env, log_dir, ready="ready.")


def celery_beat(env: dict[str, str], log_dir: Path) -> Process:
    argv = _celery("beat", "--schedule", str(log_dir / "beat-schedule"))
    return Process("beat", argv, env, log_dir, ready="beat: Starting")


def events_process(env: dict[str, str], log_dir: Path) -> Process:
    """The Procfile's events process: SQS long polls, one task queued per event."""
    return Process("events", [sys.executable, "-m", "workers.events"], env, log_dir, ready="consuming")


def web_server(env: dict[str, str], log_dir: Path, port: int, *options: str, app: tuple[str, ...] = ()) -> Process:
    """The Procfile's web process (gunicorn with bot/web/serving.py, serving the app factory) on 127.0.0.1:port;
    `options` override single settings (e.g. --workers 1, or --worker-class gthread for a baseline); `app`
    serves another WSGI app under the same settings (a benchmark's baseline)."""
    argv = [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        "python:bot.web.serving",
        "--bind",
        f"127.0.0.1:{port}",
        *options,
        *(app or ("bot.web.app:create_app()",)),
    ]
    return Process("web", argv, env, log_dir, ready="Booting worker")


def wait_for(predicate: Callable[[], Any], timeout: float = 30, what: str = "condition", interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


_ids = itertools.count(int(time.time() * 1000) % 10_000_000 * 10)
# Job ids count down from far above: the fake (like GitLab) gives commit statuses the next id after the
# highest CI job id, so ours must never be that next id.
_job_ids = itertools.count(9 * 10**9, -1)


@dataclass
class Scenario:
    """One merge request with one pipeline in the fake GitLab, ready to be delivered as webhooks."""

    # Job ids, counting down from far above any the fake GitLab hands out; a subclass may bring its own range.
    job_ids: ClassVar[Iterator[int]] = _job_ids
    gitlab: FakeGitLab
    ecr: EcrDouble
    deliver: Callable[[str, dict[str, Any], str | None], Any]
    project_id: int = field(default_factory=lambda: next(_ids))
    mr_iid: int = 1
    pipeline_id: int = field(default_factory=lambda: next(_ids))
    sha: str = field(default_factory=lambda: secrets.token_hex(20))
    branch: str = "feature/gate"
    jobs: dict[str, int] = field(default_factory=dict)
    # The CI jobs of each of its pipelines (a monorepo's pipeline holds only some push jobs).
    job_names: tuple[str, ...] = (PUSH_APP, PUSH_API, "unit-tests")
    group: str = GROUP  # the project is <group>/p<project id>

    def __post_init__(self) -> None:
        self.project_path = f"{self.group}/p{self.project_id}"
        self.gitlab.add_project(self.project_id, self.project_path)
        self.gitlab.add_merge_request(self.project_id, self.mr_iid, self.branch, "main", self.sha)
        self._add_pipeline(self.pipeline_id, self.sha)

    def _add_pipeline(self, pipeline_id: int, sha: str) -> None:
        self.jobs = {name: next(self.job_ids) for name in self.job_names}
        self.gitlab.add_pipeline(
            self.project_id,
            pipeline_id,
            sha,
            source="merge_request_event",
            merge_request_iid=self.mr_iid,
            jobs=[
                {"id": job_id, "name": name, "stage": "push", "status": "created"} for name, job_id in self.jobs.items()
            ],
        )

    def new_commit(self) -> None:
        """A push to the MR's branch: new head, new pipeline."""
        self.sha = secrets.token_hex(20)
        self.pipeline_id = next(_ids)
        self.gitlab.set_mr_head(self.project_id, self.mr_iid, self.sha)
        self._add_pipeline(self.pipeline_id, self.sha)

    # --- ECR ---------------------------------------------------------------------------------
    def tag(self, repository: str) -> str:
        return self.sha[:8] if repository == "app" else f"api-{self.sha[:8]}"

    def push(self, repository: str = "app") -> str:
        return self.ecr.push_image(repository, self.tag(repository))

    def script(self, repository: str, steps: Iterable[dict[str, Any]]) -> None:
        self.ecr.script(repository, tag=self.tag(repository), steps=list(steps))

    # --- webhooks ------------------------------------------------------------------------------
    def pipeline_body(
        self, status: str = "running", builds: dict[str, str] | None = None, **overrides: Any
    ) -> dict[str, Any]:
        """This pipeline's Pipeline Hook payload; `builds` gives push jobs a status other than created."""
        builds = builds or {}
        specs = [(name, "push", builds.get(name, "created"), job_id) for name, job_id in self.jobs.items()]
        fields: dict[str, Any] = {
            "project_id": self.project_id,
            "project_path": self.project_path,
            "pipeline_id": self.pipeline_id,
            "sha": self.sha,
            "ref": self.branch,
            "status": status,
            "mr_iid": self.mr_iid,
            "builds": specs,
        }
        return pipeline_payload(**{**fields, **overrides})

    def push_pipeline_body(self, ref: str = "main") -> dict[str, Any]:
        """A branch pipeline (no merge request in it) with its app push job done; on "main", the fixture
        project's default branch, it is the pipeline after the merge, whose image [monitor] watches."""
        return pipeline_payload(
            project_id=self.project_id,
            project_path=self.project_path,
            pipeline_id=self.pipeline_id,
            sha=self.sha,
            ref=ref,
            source="push",
            mr_iid=None,
            status="running",
            builds=[(PUSH_APP, "push", "success", self.jobs[PUSH_APP])],
        )

    def pipeline_event(
        self, status: str = "running", builds: dict[str, str] | None = None, key: str | None = None
    ) -> Any:
        return self.deliver("Pipeline Hook", self.pipeline_body(status, builds), key)

    def job_event(self, name: str = PUSH_APP, status: str = "success", key: str | None = None) -> Any:
        self.gitlab.set_job_status(self.jobs[name], status)
        body = job_payload(
            project_id=self.project_id,
            project_path=self.project_path,
            pipeline_id=self.pipeline_id,
            job_id=self.jobs[name],
            job_name=name,
            status=status,
            sha=self.sha,
            ref=f"refs/merge-requests/{self.mr_iid}/head",
        )
        return self.deliver("Job Hook", body, key)

    # --- what GitLab now shows -------------------------------------------------------------------
    def statuses(self, sha: str | None = None) -> dict[str, dict[str, Any]]:
        return self.gitlab.latest_statuses(self.project_id, sha or self.sha)

    def status(self, repository: str = "app", sha: str | None = None) -> dict[str, Any] | None:
        return self.statuses(sha).get(f"ecr-scan-gate/{repository}")

    def wait_status(
        self, repository: str = "app", states: Iterable[str] = ("success", "failed", "canceled"), timeout: float = 40
    ) -> dict[str, Any]:
        wanted = set(states)
        return wait_for(
            lambda: (s := self.status(repository)) and s["status"] in wanted and s,
            timeout,
            f"status of {repository} in {wanted}",
        )

    def notes(self) -> list[dict[str, Any]]:
        return self.gitlab.notes(self.project_id, self.mr_iid)

    def wait_note(self, *needles: str, timeout: float = 30) -> str:
        def found() -> str | None:
            for note in self.notes():
                if all(n in note["body"] for n in needles):
                    return note["body"]
            return None

        return wait_for(found, timeout, f"a note containing {needles}")


def redis_keys_holding(url: str, prefix: str, needles: Iterable[str]) -> list[str]:
    """Keys under a prefix whose value contains any needle (queued task arguments included)."""
    client = redis.Redis.from_url(url, decode_responses=True)
    readers = {
        "string": client.get,
        "hash": client.hgetall,
        "list": lambda k: client.lrange(k, 0, -1),
        "set": client.smembers,
        "zset": lambda k: client.zrange(k, 0, -1),
    }
    found = []
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        value = str(readers.get(client.type(key), lambda k: "")(key))
        if any(n in value for n in needles):
            found.append(key)
    return found


def drop_prefix(url: str, prefix: str) -> int:
    """Delete every key of one test session (its gates and its Celery queues)."""
    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    for i in range(0, len(keys), 500):
        client.delete(*keys[i : i + 500])
    return len(keys)


def webhook_call(client: Any) -> Callable[[str, dict[str, Any], str | None], Any]:
    def deliver(event: str, body: dict[str, Any], key: str | None) -> Any:
        return client.post("/webhook", json=body, headers=webhook_headers(event, WEBHOOK_SECRET, key))

    return deliver
