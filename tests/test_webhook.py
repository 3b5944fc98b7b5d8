"""The receiver: auth, limits, parsing, routing, dedupe and queueing — against a real Redis."""

from __future__ import annotations

import json
import time

import pytest
import redis

from bot.adapters.records import PipelinePlan
from bot.adapters.store import Store
from bot.core.settings import Settings
from bot.web.app import create_app
from tests.fakes.payloads import job_payload, note_payload, pipeline_payload, webhook_headers
from tests.harness import WEBHOOK_SECRET


class Recorder:
    """Stands in for the Celery producer so these tests see exactly what would be queued."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.sent: list[tuple[str, dict]] = []
        self.inboxes: list[str] = []
        self.fail = fail

    def __call__(self, task: str, payload: dict, inbox: str = "") -> str:
        if self.fail:
            raise self.fail
        self.sent.append((task, payload))
        self.inboxes.append(inbox)
        return f"task-{len(self.sent)}"


@pytest.fixture
def queue() -> Recorder:
    return Recorder()


@pytest.fixture
def web(settings: Settings, redis_url: str, queue: Recorder):
    store = Store.from_url(redis_url, settings.redis.gate_ttl_s, prefix=settings.redis.key_prefix)
    return create_app(settings, store=store, enqueue=queue).test_client()


def body(project_path: str = "e2e/web", **kw) -> dict:
    return pipeline_payload(project_id=kw.pop("project_id", 5001), project_path=project_path, **kw)


def post(web, payload, event="Pipeline Hook", token=WEBHOOK_SECRET, key=None, **kw):
    return web.post("/webhook", data=json.dumps(payload), headers=webhook_headers(event, token, key), **kw)


def test_queues_a_configured_pipeline_event_and_answers_202(web, queue):
    started = time.perf_counter()
    response = post(web, body())
    assert response.status_code == 202
    assert time.perf_counter() - started < 1.0
    assert queue.sent[0][0] == "gate.pipeline_event"
    assert queue.sent[0][1]["project_id"] == 5001


@pytest.mark.parametrize("token", [None, "", "wrong", WEBHOOK_SECRET + "x", WEBHOOK_SECRET[:-1]])
def test_missing_or_wrong_token_is_401_without_detail(web, queue, token):
    response = post(web, body(), token=token)
    assert response.status_code == 401
    assert response.get_json() == {"error": "unauthorized"}
    assert queue.sent == []


def test_malformed_json_is_400(web, queue):
    response = web.post("/webhook", data=b"{not json", headers=webhook_headers(token=WEBHOOK_SECRET))
    assert response.status_code == 400 and "JSON" in response.get_json()["error"]
    assert queue.sent == []


def test_missing_field_is_400_naming_it(web, queue):
    payload = body()
    del payload["object_attributes"]["sha"]
    response = post(web, payload)
    assert response.status_code == 400
    assert "sha" in response.get_json()["error"]
    assert queue.sent == []


def test_wrong_content_type_is_415(web, queue):
    headers = webhook_headers(token=WEBHOOK_SECRET) | {"Content-Type": "text/plain"}
    assert web.post("/webhook", data=json.dumps(body()), headers=headers).status_code == 415
    assert queue.sent == []


def test_too_large_is_413(web, queue, settings):
    blob = {"x": "a" * (settings.webhook.max_body_bytes + 10)}
    assert post(web, blob).status_code == 413
    assert queue.sent == []


def test_too_deep_is_400(web, queue):
    deep = "[" * 200 + "]" * 200
    response = web.post("/webhook", data=deep, headers=webhook_headers(token=WEBHOOK_SECRET))
    assert response.status_code == 400 and "deeper" in response.get_json()["error"]


@pytest.mark.parametrize("event", ["Merge Request Hook", "Push Hook", "Confidential Note Hook", "Something New"])
def test_other_events_are_2xx_ignored(web, queue, event):
    response = post(web, {"object_kind": "whatever"}, event=event)
    assert response.status_code == 200 and response.get_json()["status"] == "ignored"
    assert queue.sent == []


def test_unconfigured_project_is_2xx_ignored(web, queue):
    response = post(web, body(project_path="elsewhere/app"))
    assert response.status_code == 200
    assert response.get_json() == {"status": "ignored", "reason": "project not configured"}
    assert queue.sent == []


def test_job_event_of_other_job_ignored_push_job_success_queued(web, queue, settings, redis_url):
    # The pipeline's plan is known (its Pipeline Hook came first): only its push jobs are queued.
    store = Store.from_url(redis_url, settings.redis.gate_ttl_s, prefix=settings.redis.key_prefix)
    store.save_plan(PipelinePlan(5002, 7001, 7001, "0" * 40, push_jobs=("docker-push",)))
    other = job_payload(project_id=5002, project_path="e2e/web", job_name="unit-tests")
    assert post(web, other, event="Job Hook").get_json()["status"] == "ignored"
    running = job_payload(project_id=5002, project_path="e2e/web", status="running")
    assert post(web, running, event="Job Hook").get_json()["status"] == "ignored"
    push = job_payload(project_id=5002, project_path="e2e/web", job_id=777)
    assert post(web, push, event="Job Hook").status_code == 202
    assert [t for t, _ in queue.sent] == ["gate.job_event"]
    assert queue.inboxes[0] in {d.id for d in store.stale_deliveries(time.time() + 1, limit=10_000)}


def test_a_job_of_a_pipeline_not_yet_planned_is_queued_for_the_worker_to_decide(web, queue):
    # A repo file may declare any job as a push job, and the receiver does not read GitLab.
    early = job_payload(project_id=5003, project_path="e2e/web", pipeline_id=8123, job_name="unit-tests")
    assert post(web, early, event="Job Hook").status_code == 202
    assert [t for t, _ in queue.sent] == ["gate.job_event"]


def test_same_idempotency_key_twice_is_queued_once(web, queue):
    payload = body(pipeline_id=99001)
    first = post(web, payload, key="delivery-abc-1")
    again = post(web, payload, key="delivery-abc-1")
    assert first.status_code == 202
    assert again.status_code == 200 and again.get_json()["status"] == "duplicate"
    assert len(queue.sent) == 1


def test_enqueue_failure_is_503_and_a_resend_is_accepted(settings, redis_url):
    store = Store.from_url(redis_url, settings.redis.gate_ttl_s, prefix=settings.redis.key_prefix)
    broken = Recorder(fail=redis.ConnectionError("down"))
    web = create_app(settings, store=store, enqueue=broken).test_client()
    assert post(web, body(pipeline_id=99002), key="resend-me").status_code == 503
    healed = Recorder()
    web = create_app(settings, store=store, enqueue=healed).test_client()
    assert post(web, body(pipeline_id=99002), key="resend-me").status_code == 202
    assert len(healed.sent) == 1


def test_redis_down_is_503_never_2xx(settings, queue):
    dead = Store.from_url("redis://127.0.0.1:1/0", settings.redis.gate_ttl_s, socket_timeout_s=0.5)
    web = create_app(settings, store=dead, enqueue=queue).test_client()
    assert post(web, body()).status_code == 503
    assert queue.sent == []
    health = web.get("/healthz")
    assert health.status_code == 503 and health.get_json()["redis"] == "unreachable"


def test_healthz_ok(web):
    response = web.get("/healthz")
    assert response.status_code == 200 and response.get_json()["redis"] == "ok"


def test_app_refuses_to_start_without_secret(settings):
    with pytest.raises(RuntimeError):
        create_app(settings.model_copy(update={"webhook_secrets": ()}))


def note(body: str = "ecr-scan-gate recheck", **kw) -> dict:
    return note_payload(project_id=5004, project_path="e2e/web", body=body, **kw)


def test_an_mr_command_is_queued_and_everything_else_said_on_an_mr_is_not(web, queue):
    assert post(web, note(), event="Note Hook").status_code == 202
    assert [t for t, _ in queue.sent] == ["gate.command"]
    assert queue.sent[0][1]["first_line"] == "ecr-scan-gate recheck"
    for payload, why in [
        (note("LGTM, ecr-scan-gate recheck later"), "not an ecr-scan-gate command"),
        (note(system=True), "system note"),
        (note(action="update"), "an edited note is not run again"),
        (note_payload(project_id=5004, project_path="elsewhere/x"), "project not configured"),
    ]:
        answer = post(web, payload, event="Note Hook").get_json()
        assert answer == {"status": "ignored", "reason": why}
    assert len(queue.sent) == 1


def test_a_note_hook_must_be_a_note(web, queue):
    response = post(web, {"object_kind": "pipeline"}, event="Note Hook")
    assert response.status_code == 400 and "object_kind" in response.get_json()["error"]
    broken = note()
    del broken["object_attributes"]["author_id"]
    assert post(web, broken, event="Note Hook").status_code == 400
    assert queue.sent == []
