"""Fixtures and helpers for running the workers' code in the pytest process on real Redis and the shared fakes.

A test module takes the fixtures by naming them at module level (`base = inprocess.base`, ...): `base` is
module-scoped, so every such module gets a Redis key prefix of its own, and never sees the gates of the
real-process suites (nor they its).
"""

from __future__ import annotations

import dataclasses
import random
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from celery.exceptions import Retry

from bot.core.events import PipelineEvent, parse_event
from bot.core.gate import Gate
from bot.core.models import Finding, Phase, Reason, ScanResult, Severity
from bot.core.plan import NoPush
from bot.core.policy import decide
from bot.core.repo_config import resolve
from bot.core.routing import gates_for_pipeline, policy_for
from bot.core.settings import Settings
from tests import harness
from tests.fakes.ecr import SCAN_OP, EcrDouble
from tests.fakes.gitlab import FakeGitLab
from tests.harness import Scenario
from workers import tasks
from workers.runtime import Runtime, build, use  # noqa: F401 - use is re-exported for tests
from workers.sweeper import Actions

SEED = 1234  # the tasks' jitter, seeded so a test can compute the countdown the rule chose
CLEAN = ScanResult(Phase.COMPLETE, ecr_status="COMPLETE", counts={Severity.LOW: 1})
DIRTY = ScanResult(
    Phase.COMPLETE,
    ecr_status="COMPLETE",
    counts={Severity.HIGH: 1},
    findings=(Finding("CVE-2023-44487", Severity.HIGH, package="nghttp2"),),
)


@pytest.fixture(scope="module")
def base(settings: Settings, ecr: EcrDouble, redis_url: str) -> Iterator[Runtime]:
    """The session's config under a key prefix of the module's own, run by this process's tasks."""
    prefix = f"esgtest-inproc-{secrets.token_hex(4)}"
    mine = settings.model_copy(update={"redis": settings.redis.model_copy(update={"key_prefix": prefix})})
    with pytest.MonkeyPatch.context() as mp:
        harness.point_boto3_at(ecr.env(), mp)
        rt = build(mine)
        use(rt)
        try:
            yield rt
        finally:
            use(None)
            harness.drop_prefix(redis_url, prefix)


@pytest.fixture
def rt(base: Runtime, redis_url: str) -> Iterator[Runtime]:
    """Each test starts on the module's Runtime with no gates; its keys are deleted afterwards."""
    use(base)
    yield base
    use(base)
    harness.drop_prefix(redis_url, base.settings.redis.key_prefix)


def tuned(rt: Runtime, **sections: dict[str, Any]) -> Runtime:
    """The same adapters under changed settings, used by the tasks from now on (the rt fixture restores)."""
    s = rt.settings
    s = s.model_copy(update={name: getattr(s, name).model_copy(update=values) for name, values in sections.items()})
    changed = dataclasses.replace(rt, settings=s)
    use(changed)
    return changed


@dataclass
class Sent:
    """What the tasks and the sweep would have sent to Celery (or done through their entry points)."""

    polls: list[tuple[str, int]] = field(default_factory=list)
    syncs: list[str] = field(default_factory=list)
    notes: list[tuple[Any, ...]] = field(default_factory=list)
    retries: list[tuple[tuple[Any, ...], float]] = field(default_factory=list)  # poll's (args, countdown)
    started: list[str] = field(default_factory=list)
    canceled: list[tuple[str, str]] = field(default_factory=list)  # canceled or skipped: (key, why)
    ended: list[tuple[str, Reason]] = field(default_factory=list)
    replayed: list[tuple[str, str]] = field(default_factory=list)  # (task, inbox id)

    def actions(self) -> Actions:
        return Actions(
            enqueue_poll=lambda key, gen: self.polls.append((key, gen)),
            enqueue_sync=self.syncs.append,
            enqueue_note=lambda *args: self.notes.append(args),
            start_polling=lambda gate: self.started.append(gate.key),
            end=self._end,
            replay=lambda task, payload, inbox: self.replayed.append((task, inbox)),
        )

    def _end(self, gate: Gate, no_push: NoPush) -> None:
        self.canceled.append((gate.key, no_push.why))
        self.ended.append((gate.key, no_push.reason))


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> Sent:
    """Records instead of sending: sync.delay, note.delay, _enqueue_poll and poll's self.retry."""
    rec = Sent()
    monkeypatch.setattr(tasks, "_enqueue_poll", lambda key, gen, countdown=0.0: rec.polls.append((key, gen)))
    monkeypatch.setattr(tasks.sync, "delay", rec.syncs.append)
    monkeypatch.setattr(tasks.note, "delay", lambda *args: rec.notes.append(args))

    def retry(args: tuple[Any, ...] = (), countdown: float = 0.0, **_: Any) -> Retry:
        rec.retries.append((tuple(args), countdown))
        return Retry("recorded by the test", when=countdown)

    monkeypatch.setattr(tasks.poll, "retry", retry)
    monkeypatch.setattr(tasks, "_rng", random.Random(SEED))
    return rec


class Clock:
    """The tasks' time.time(), moved by the test."""

    def __init__(self) -> None:
        self.now = time.time()

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(tasks, "time", fake)
    return fake


def _no_webhooks(event: str, body: dict[str, Any], key: str | None) -> Any:
    raise AssertionError("in-process tests call the tasks, not the receiver")


@pytest.fixture
def s(fake_gitlab: FakeGitLab, ecr: EcrDouble) -> Scenario:
    """A fresh project with an MR and its pipeline in the fake GitLab."""
    return Scenario(fake_gitlab, ecr, _no_webhooks)


def gate(rt: Runtime, s: Scenario, repository: str = "app") -> Gate:
    """Record one gate of the scenario's current pipeline, built as pipeline_event builds it (waiting)."""
    event = parse_event("Pipeline Hook", s.pipeline_body())
    project = rt.settings.project_for(s.project_id, s.project_path)
    assert isinstance(event, PipelineEvent) and project is not None
    resolved = resolve(project, rt.settings.policy, s.project_path, None)  # the central config (no repo file)
    gates = gates_for_pipeline(rt.settings, resolved, resolved.images, event)
    fresh = next(g for g in gates if g.repository == repository)
    assert rt.store.create(fresh)
    return stored(rt, fresh.key)


def polling(rt: Runtime, s: Scenario, repository: str = "app", since: float | None = None) -> tuple[str, int]:
    """A gate whose push job succeeded at `since`: its key and the poll generation to run."""
    key = gate(rt, s, repository).key
    since = time.time() if since is None else since
    gen = rt.store.start_polling(key, since, since + rt.settings.scan.timeout_s)
    assert gen
    return key, gen


def stored(rt: Runtime, key: str) -> Gate:
    found = rt.store.get(key)
    assert found is not None
    return found


def finish(rt: Runtime, g: Gate, result: ScanResult) -> None:
    """Record the verdict the policy gives `result`, as a poll that got that answer would."""
    assert rt.store.finish(g.key, decide(result, policy_for(rt.settings, g), g.image))


def scans(ecr: EcrDouble, s: Scenario, repository: str = "app") -> list[Any]:
    """The DescribeImageScanFindings calls the double answered for this scenario's image."""
    tag = s.tag(repository)
    names = {tag, ecr.digest_of(repository, tag)} - {None}
    return [c for c in ecr.calls(SCAN_OP, repository) if c.image in names]


def failed_verdict_for(rt: Runtime, key: str) -> Any:
    """A scan_failed verdict for the gate at `key` (a finished gate whose note can be rendered)."""
    from bot.core.models import Reason as _Reason
    from bot.core.policy import failed_verdict

    gate = stored(rt, key)
    return failed_verdict(_Reason.SCAN_FAILED, gate.image, detail="test")
