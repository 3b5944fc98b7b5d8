"""Registry-event tasks run in the pytest process on real Redis, the shared fakes: wake, start, dedupe, drift."""

from __future__ import annotations

from typing import Any

import pytest
from celery.exceptions import Retry

from bot.core.gate import GateState
from bot.core.scan_events import EventKind, RegistryEvent, event_to_dict
from tests import inprocess
from tests.harness import Scenario
from tests.inprocess import gate, polling, stored, tuned
from workers import registry_events, tasks

base, rt, sent, clock, s = inprocess.base, inprocess.rt, inprocess.sent, inprocess.clock, inprocess.s
OTHER_DIGEST = "sha256:" + "cd" * 32
_ids = iter(range(10**6))


def event(s: Any, kind: EventKind = EventKind.SCAN, *, digest: str = "", tags: tuple[str, ...] | None = None) -> dict:
    return event_to_dict(
        RegistryEvent(
            id=f"ev-{next(_ids)}-{s.project_id}",
            kind=kind,
            account="123456789012",
            region="us-east-1",
            repository="app",
            digest=digest or OTHER_DIGEST,
            tags=(s.tag("app"),) if tags is None else tags,
        )
    )


@pytest.fixture
def later(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Any]]:
    """What the event tasks queue for later: confirm_push and drift_check."""
    queued: dict[str, list[Any]] = {"confirm": [], "drift": []}
    monkeypatch.setattr(registry_events.confirm_push, "delay", lambda key: queued["confirm"].append(key))
    monkeypatch.setattr(
        registry_events.drift_check, "apply_async", lambda args, countdown: queued["drift"].append((args, countdown))
    )
    return queued


@pytest.fixture
def on(rt):
    return tuned(rt, events={"queue_url": "http://sqs.example/queue", "backstop_interval_s": 60.0})


def test_a_scan_event_wakes_its_polling_gate_once_through_the_one_rule(on, s, sent, later):
    key, gen = polling(on, s)
    payload = event(s)
    assert registry_events.registry_event.run(payload) == {"woken": 1, "starting": 0, "matched": 1, "rescans": 0}
    assert sent.polls == [(key, gen)]  # the current generation: the waiting countdown copy will then stop
    assert registry_events.registry_event.run(payload) == {"duplicate": 1}
    assert sent.polls == [(key, gen)]
    other = event(s, tags=("not-ours",))
    assert registry_events.registry_event.run(other)["matched"] == 0


def test_a_gate_pinned_to_its_digest_is_found_by_digest_alone(on, s, sent, later, ecr):
    digest = s.push("app")
    s.script("app", [{"status": "IN_PROGRESS"}])
    key, gen = polling(on, s)
    with pytest.raises(Retry):
        tasks.poll.run(key, gen)
    assert stored(on, key).image.digest == digest
    assert registry_events.registry_event.run(event(s, digest=digest, tags=()))["woken"] == 1
    assert sent.polls == [(key, gen + 1)]
    # Pinned: an event for the same tag but another digest (a re-push) is not this gate's scan.
    assert registry_events.registry_event.run(event(s, digest=OTHER_DIGEST))["matched"] == 0


def test_with_events_on_the_first_poll_waits_for_the_event_unless_it_already_came(on, s, monkeypatch):
    countdowns: list[tuple[str, float]] = []
    monkeypatch.setattr(tasks, "_enqueue_poll", lambda key, gen, countdown=0.0: countdowns.append((key, countdown)))
    monkeypatch.setattr(tasks.sync, "delay", lambda key: None)
    waiting = gate(on, s)
    tasks._start_polling(waiting)
    assert countdowns == [(waiting.key, tasks.capped(60.0))]  # the backstop: a lost event still gets read
    s.new_commit()
    early = gate(on, s)
    registry_events.registry_event.run(event(s))  # the scan finished before the push job's event came
    assert stored(on, early.key).state is GateState.WAITING
    tasks._start_polling(stored(on, early.key))
    assert countdowns[-1] == (early.key, 0.0)


def test_events_off_first_reads_after_first_read_after_s_and_keeps_the_interval(rt, s, monkeypatch):
    countdowns: list[float] = []
    monkeypatch.setattr(tasks, "_enqueue_poll", lambda key, gen, countdown=0.0: countdowns.append(countdown))
    monkeypatch.setattr(tasks.sync, "delay", lambda key: None)
    tasks._start_polling(gate(rt, s))
    assert countdowns == [rt.settings.scan.first_read_after_s] and rt.settings.polling() == rt.settings.scan
    s.new_commit()
    later = tuned(rt, scan={"first_read_after_s": 10.0})
    tasks._start_polling(gate(later, s))
    assert countdowns[-1] == 10.0  # a scan takes ~10 s at least: a read at once only ever sees IN_PROGRESS


def test_a_push_event_starts_a_waiting_gate_only_once_gitlab_says_its_push_job_succeeded(on, s, sent, later):
    waiting = gate(on, s)
    assert registry_events.registry_event.run(event(s, EventKind.PUSH))["starting"] == 1
    assert later["confirm"] == [waiting.key] and later["drift"] == []
    s.gitlab.set_job_status(s.jobs["docker-push"], "running")  # pushed, the job not yet done
    retried: list[Any] = []

    def retry(args: tuple[Any, ...] = (), countdown: float = 0.0, **_: Any) -> Retry:
        retried.append((args, countdown))
        return Retry("recorded", when=countdown)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(registry_events.confirm_push, "retry", retry)
        with pytest.raises(Retry):
            registry_events.confirm_push.run(waiting.key)
    assert retried == [((waiting.key, 1), registry_events.PUSH_CONFIRM_EVERY_S)]
    assert stored(on, waiting.key).state is GateState.WAITING
    s.gitlab.set_job_status(s.jobs["docker-push"], "success")
    assert registry_events.confirm_push.run(waiting.key) == "started"
    assert stored(on, waiting.key).state is GateState.POLLING
    assert registry_events.confirm_push.run(waiting.key) == "not waiting"


def test_a_push_of_a_gated_repository_that_no_gate_waits_for_is_counted_as_drift(on, s, sent, later):
    payload = event(s, EventKind.PUSH, tags=("hand-pushed",))
    assert registry_events.registry_event.run(payload)["matched"] == 0
    assert later["drift"] == [((payload,), tasks.capped(on.settings.events.drift_after_s))]
    assert registry_events.drift_check.run(payload) is True
    assert on.store.drift() == {"us-east-1/app": 1}
    unknown = {**event(s, EventKind.PUSH), "repository": "not-configured"}
    assert registry_events.drift_check.run(unknown) is False
    gate(on, s)  # a gate for the pushed tag exists by the time of the check: not drift
    assert registry_events.drift_check.run(event(s, EventKind.PUSH)) is False
    assert on.store.drift() == {"us-east-1/app": 1}


def test_a_push_from_a_drained_backlog_is_not_counted_as_drift(on, s, sent, later):
    old = {**event(s, EventKind.PUSH, tags=("hand-pushed",)), "time": "2026-01-01T00:00:00Z"}
    assert registry_events.drift_check.run(old) is False
    assert on.store.drift() == {}


@pytest.fixture
def rescans(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, tuple[Any, ...], Any]]:
    """The monitor.rescan tasks the event task sends: (name, args, countdown)."""
    recorded: list[tuple[str, tuple[Any, ...], Any]] = []

    def send_task(name: str, args: tuple[Any, ...] = (), countdown: Any = None, **_: Any) -> None:
        recorded.append((name, tuple(args), countdown))

    monkeypatch.setattr(registry_events.current_app, "send_task", send_task)
    return recorded


def test_a_burst_of_inspector_findings_schedules_one_read_of_the_watched_digest(
    rt, s, sent, later, rescans, fake_gitlab, ecr
):
    on = tuned(rt, events={"queue_url": "http://sqs.example/queue"}, monitor={"enabled": True})
    merged = gate(on, s).key
    on.store.r.hset(on.store._k(merged), mapping={"state": "done", "watched": "True"})
    other = Scenario(fake_gitlab, ecr, lambda *a: None)
    polling(on, other)  # an open gate of the same repository and digest: findings never wake it
    tags = (s.tag("app"), other.tag("app"))
    counts = [registry_events.registry_event.run(event(s, EventKind.FINDING, tags=tags)) for _ in range(5)]
    assert [c["rescans"] for c in counts] == [1, 0, 0, 0, 0] and {c["woken"] for c in counts} == {0}
    # One read, after the burst has come: through monitor.rescan and so the one polling rule.
    settle = on.settings.monitor.finding_settle_s
    assert rescans == [("monitor.rescan", (s.project_id, "app", OTHER_DIGEST, 0.0), settle)] and settle == 120
    assert sent.polls == []
    # A finding after that window is news again.
    on.store.r.delete(on.store._k(f"once:finding-read:{s.project_id}:app:{OTHER_DIGEST}"))
    assert registry_events.registry_event.run(event(s, EventKind.FINDING))["rescans"] == 1
    assert len(rescans) == 2
    # The same event as a scan event would wake the open gate: what the findings left alone was there.
    assert registry_events.registry_event.run(event(s, tags=tags))["woken"] == 1


def test_findings_do_nothing_with_monitor_off(on, s, sent, later, rescans):
    merged = gate(on, s).key
    on.store.r.hset(on.store._k(merged), mapping={"state": "done", "watched": "True"})
    assert registry_events.registry_event.run(event(s, EventKind.FINDING))["rescans"] == 0
    assert rescans == [] and sent.polls == []
