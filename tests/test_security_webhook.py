"""Hostile deliveries to /webhook: signatures, rotation, refusal to start, fuzzing, and scope from config only."""

from __future__ import annotations

import ast
import base64
import hashlib
import hmac
import json
import time
import uuid
from pathlib import Path
from typing import Any

import hypothesis
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from werkzeug.http import parse_options_header

import bot.web.auth
from bot.adapters.gitlab import GitLabApi
from bot.adapters.store import Store
from bot.config import load_settings
from bot.core.errors import ConfigError
from bot.core.events import EventKind, InvalidEvent, JobEvent, event_from_dict, event_to_dict, parse_event
from bot.core.repo_config import resolve
from bot.core.routing import gates_for_job, gates_for_pipeline
from bot.core.settings import Settings
from bot.web.app import create_app
from bot.web.auth import AuthResult, signature_ok, token_ok
from bot.web.limits import TooDeep, loads_bounded, max_depth
from tests import configs
from tests.fakes.payloads import job_payload, pipeline_payload, webhook_headers
from tests.harness import ROOT
from tests.test_webhook import Recorder

SECRET = "whk-current-5b1c0e8f2a7d4c3b9e6f"
PREVIOUS = "whk-previous-0a9b8c7d6e5f4a3b2c1d"
GITLAB_TOKEN = "glpat-security-test-0123456789abcdef"
SIGNING_KEY_BYTES = b"\x8f\x01signing-key-bytes\x00\xfe" * 2
SIGNING_KEY = "whsec_" + base64.b64encode(SIGNING_KEY_BYTES).decode()
GITLAB_URL = "https://gitlab.internal.example"
EVIL = "http://evil.example"
MAX_BODY = 64 * 1024  # small, so bodies around the cap are cheap to generate
SHA = "0123456789abcdef0123456789abcdef01234567"

# Central images only (repo_file = false): the receiver knows every push job, so it can refuse the rest.
PROJECTS = [
    {
        "path": "sec/*",
        "repo_file": False,
        "images": [
            {
                "repository": "app",
                "tag": "{short_sha}",
                "push_job": "docker-push",
                "region": "eu-west-1",
                "registry_id": "111122223333",
                "role_arn": "arn:aws:iam::111122223333:role/ecr-scan-gate",
            }
        ],
    },
    {
        "id": 4242,
        "repo_file": False,
        "images": [{"repository": "by-id", "tag": "{ref_slug}-{short_sha}", "push_job": "build-image"}],
    },
]

FUZZ = settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


# --- fixtures ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def config_path(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Path:
    path = tmp_path_factory.mktemp("security") / "config.toml"
    configs.write_config(
        path,
        defaults=False,
        gitlab={"url": GITLAB_URL},
        redis={"url": redis_url},
        webhook={"max_body_bytes": MAX_BODY, "max_json_depth": 32},
        projects=PROJECTS,
    )
    return path


def env(**extra: str) -> dict[str, str]:
    return {"GITLAB_TOKEN": GITLAB_TOKEN, "GITLAB_WEBHOOK_SECRET": SECRET, **extra}


@pytest.fixture(scope="module")
def sec_settings(config_path: Path) -> Settings:
    """Both secrets of a rotation in force; no signing key."""
    return load_settings(config_path, env=env(GITLAB_WEBHOOK_SECRET_PREVIOUS=PREVIOUS))


@pytest.fixture(scope="module")
def signed_settings(sec_settings: Settings) -> Settings:
    return sec_settings.model_copy(update={"signing_key": SecretStr(SIGNING_KEY)})


class Web:
    """A receiver with a recording enqueue, reusable across hypothesis examples."""

    def __init__(self, settings_: Settings, redis_url: str) -> None:
        self.settings = settings_
        self.queue = Recorder()
        store = Store.from_url(redis_url, settings_.redis.gate_ttl_s)
        self.client = create_app(settings_, store=store, enqueue=self.queue).test_client()

    def post(self, body: bytes, headers: dict[str, str]) -> Any:
        self.queue.sent.clear()
        return self.client.post("/webhook", data=body, headers=headers)


@pytest.fixture(scope="module")
def web(sec_settings: Settings, redis_url: str) -> Web:
    return Web(sec_settings, redis_url)


@pytest.fixture(scope="module")
def signed_web(signed_settings: Settings, redis_url: str) -> Web:
    return Web(signed_settings, redis_url)


def pipeline(**kw: Any) -> dict[str, Any]:
    kw.setdefault("project_id", 9001)
    kw.setdefault("project_path", "sec/app")
    kw.setdefault("sha", SHA)
    kw.setdefault("pipeline_id", int(time.time() * 1000) % 10**9)
    return pipeline_payload(**kw)


def headers_for(event: str = "Pipeline Hook", token: str | None = SECRET) -> dict[str, str]:
    return webhook_headers(event, token, str(uuid.uuid4()))


def dumps(payload: Any) -> bytes:
    return json.dumps(payload).encode()


# --- signing (Standard Webhooks, as GitLab sends it) -----------------------------------------------------


def sign(body: bytes, msg_id: str, stamp: str, key: bytes = SIGNING_KEY_BYTES) -> str:
    digest = hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(
    body: bytes,
    *,
    msg_id: str | None = None,
    stamp: int | None = None,
    token: str | None = None,
    signature: str | None = None,
    event: str = "Pipeline Hook",
) -> dict[str, str]:
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    stamp_s = str(int(time.time()) if stamp is None else stamp)
    headers = headers_for(event, token)
    headers.update(
        {
            "webhook-id": msg_id,
            "webhook-timestamp": stamp_s,
            "webhook-signature": signature or sign(body, msg_id, stamp_s),
        }
    )
    return headers


def assert_unauthorized(response: Any, web_: Web) -> None:
    assert response.status_code == 401
    assert response.get_json() == {"error": "unauthorized"}  # no hint which check failed
    assert web_.queue.sent == []


def test_valid_v1_signature_without_token_is_accepted(signed_web: Web) -> None:
    body = dumps(pipeline())
    response = signed_web.post(body, signed_headers(body))
    assert response.status_code == 202
    assert len(signed_web.queue.sent) == 1


@pytest.mark.parametrize("tamper", ["body", "id", "timestamp", "signature"])
def test_tampered_signed_delivery_is_401(signed_web: Web, tamper: str) -> None:
    body = dumps(pipeline())
    headers = signed_headers(body)
    if tamper == "body":
        body = body.replace(b'"running"', b'"success"', 1)
    elif tamper == "id":
        headers["webhook-id"] += "x"
    elif tamper == "timestamp":
        headers["webhook-timestamp"] = str(int(headers["webhook-timestamp"]) - 1)
    else:
        version, _, value = headers["webhook-signature"].partition(",")
        headers["webhook-signature"] = f"{version},{'A' if value[0] != 'A' else 'B'}{value[1:]}"
    assert_unauthorized(signed_web.post(body, headers), signed_web)


@pytest.mark.parametrize("offset", [-301, 301, -(10**6), 10**6])
def test_timestamp_outside_tolerance_is_401_even_with_a_valid_signature(signed_web: Web, offset: int) -> None:
    body = dumps(pipeline())
    headers = signed_headers(body, stamp=int(time.time()) + offset)
    assert_unauthorized(signed_web.post(body, headers), signed_web)


@pytest.mark.parametrize("offset", [-290, 0, 290])
def test_timestamp_inside_tolerance_is_accepted(signed_web: Web, offset: int) -> None:
    body = dumps(pipeline())
    assert signed_web.post(body, signed_headers(body, stamp=int(time.time()) + offset)).status_code == 202


def test_signature_tolerance_rejects_replays_as_stale() -> None:
    body = b"{}"
    stamp = "1700000000"
    headers = {"webhook-id": "m1", "webhook-timestamp": stamp, "webhook-signature": sign(body, "m1", stamp)}
    assert signature_ok(headers, body, SIGNING_KEY, 300, now=1700000000 + 300) is AuthResult.OK
    assert signature_ok(headers, body, SIGNING_KEY, 300, now=1700000000 + 301) is AuthResult.STALE


def test_several_signatures_one_valid_is_accepted(signed_web: Web) -> None:
    body = dumps(pipeline())
    msg_id, stamp = "msg_multi", str(int(time.time()))
    good = sign(body, msg_id, stamp)
    others = ["v1," + base64.b64encode(b"\0" * 32).decode(), "v1a," + good[3:], "garbage"]
    headers = signed_headers(body, msg_id=msg_id, stamp=int(stamp), signature=" ".join([*others, good]))
    assert signed_web.post(body, headers).status_code == 202


@pytest.mark.parametrize("version", ["v2", "v1a", "V1", ""])
def test_only_v1_signatures_count(signed_web: Web, version: str) -> None:
    body = dumps(pipeline())
    msg_id, stamp = "msg_version", str(int(time.time()))
    signature = f"{version},{sign(body, msg_id, stamp)[3:]}"
    headers = signed_headers(body, msg_id=msg_id, stamp=int(stamp), signature=signature)
    assert_unauthorized(signed_web.post(body, headers), signed_web)


def test_whsec_key_is_base64_decoded_and_a_plain_key_is_used_as_bytes() -> None:
    body, stamp = b'{"a": 1}', str(int(time.time()))
    decoded = {"webhook-id": "m", "webhook-timestamp": stamp, "webhook-signature": sign(body, "m", stamp)}
    literal = dict(decoded, **{"webhook-signature": sign(body, "m", stamp, SIGNING_KEY.encode())})
    assert signature_ok(decoded, body, SIGNING_KEY, 300) is AuthResult.OK
    assert signature_ok(literal, body, SIGNING_KEY, 300) is AuthResult.BAD_SIGNATURE
    plain = {"webhook-id": "m", "webhook-timestamp": stamp, "webhook-signature": sign(body, "m", stamp, b"plain-key")}
    assert signature_ok(plain, body, "plain-key", 300) is AuthResult.OK
    # Not base64 after the prefix: the whole string is the key, as for any other key.
    odd = {"webhook-id": "m", "webhook-timestamp": stamp, "webhook-signature": sign(body, "m", stamp, b"whsec_!!")}
    assert signature_ok(odd, body, "whsec_!!", 300) is AuthResult.OK


def test_token_and_signature_both_presented_must_both_verify(signed_web: Web) -> None:
    body = dumps(pipeline())
    assert signed_web.post(body, signed_headers(body, token=SECRET)).status_code == 202
    assert_unauthorized(signed_web.post(body, signed_headers(body, token="wrong")), signed_web)
    bad_signature = signed_headers(body, token=SECRET, signature="v1," + base64.b64encode(b"x" * 32).decode())
    assert_unauthorized(signed_web.post(body, bad_signature), signed_web)


def test_token_alone_is_accepted_when_gitlab_does_not_sign(signed_web: Web) -> None:
    # Signing is optional in GitLab: with a key configured an unsigned delivery still needs the token.
    assert signed_web.post(dumps(pipeline()), headers_for()).status_code == 202
    assert_unauthorized(signed_web.post(dumps(pipeline()), headers_for(token=None)), signed_web)


def test_signature_headers_without_a_configured_key_leave_the_token_in_charge(web: Web) -> None:
    body = dumps(pipeline())
    garbage = signed_headers(body, token=SECRET, signature="v1,not-a-signature")
    assert web.post(body, garbage).status_code == 202
    assert_unauthorized(web.post(body, signed_headers(body)), web)  # a signature is no credential here


@pytest.mark.parametrize("stamp", ["\u00b2", "\u0661\u0662\u0663", "-5", "1e9", "9" * 40, "", " 1", "0x10", "\ud800"])
def test_garbage_timestamps_are_401_not_500(signed_web: Web, stamp: str) -> None:
    body = dumps(pipeline())
    headers = signed_headers(body)
    headers["webhook-timestamp"] = stamp
    assert_unauthorized(signed_web.post(body, headers), signed_web)


# --- rotation and constant time -------------------------------------------------------------------------


def test_current_and_previous_secret_accepted_a_third_rejected(web: Web) -> None:
    assert [s.get_secret_value() for s in web.settings.webhook_secrets] == [SECRET, PREVIOUS]
    for token in (SECRET, PREVIOUS):
        assert web.post(dumps(pipeline()), headers_for(token=token)).status_code == 202
    for token in ("whk-older-ffffffffffffffffffff", SECRET + PREVIOUS, SECRET[:-1], PREVIOUS + " "):
        assert_unauthorized(web.post(dumps(pipeline()), headers_for(token=token)), web)


def test_after_rotation_the_previous_secret_is_refused(config_path: Path, redis_url: str) -> None:
    rotated = Web(load_settings(config_path, env=env()), redis_url)
    assert [s.get_secret_value() for s in rotated.settings.webhook_secrets] == [SECRET]
    assert rotated.post(dumps(pipeline()), headers_for(token=SECRET)).status_code == 202
    assert_unauthorized(rotated.post(dumps(pipeline()), headers_for(token=PREVIOUS)), rotated)


class CompareSpy:
    def __init__(self, answer: bool | None = None) -> None:
        self.calls: list[tuple[bytes, bytes]] = []
        self.answer = answer

    def __call__(self, a: bytes, b: bytes) -> bool:
        self.calls.append((a, b))
        return self.real(a, b) if self.answer is None else self.answer

    real = staticmethod(hmac.compare_digest)


def test_every_secret_is_compared_with_compare_digest_without_short_circuit(monkeypatch: pytest.MonkeyPatch) -> None:
    spy = CompareSpy()
    monkeypatch.setattr(bot.web.auth.hmac, "compare_digest", spy)
    assert token_ok(SECRET, (SecretStr(SECRET), SecretStr(PREVIOUS)))
    assert len(spy.calls) == 2  # a match on the first secret still compares the second
    spy.calls.clear()
    assert not token_ok("nope", (SecretStr(SECRET), SecretStr(PREVIOUS)))
    assert [b for _, b in spy.calls] == [SECRET.encode(), PREVIOUS.encode()]


@pytest.mark.parametrize("answer", [True, False])
def test_compare_digest_alone_decides(web: Web, signed_web: Web, monkeypatch: pytest.MonkeyPatch, answer: bool) -> None:
    # If anything but compare_digest (==, startswith, ...) decided, forcing its answer would not flip the result.
    monkeypatch.setattr(bot.web.auth.hmac, "compare_digest", CompareSpy(answer))
    token = "anything" if answer else SECRET
    response = web.post(dumps(pipeline()), headers_for(token=token))
    assert response.status_code == (202 if answer else 401)
    body = dumps(pipeline())
    headers = signed_headers(body, signature=None if not answer else "v1,forged")
    assert signed_web.post(body, headers).status_code == (202 if answer else 401)


def test_non_ascii_secret_matches_the_bytes_gitlab_sends(sec_settings: Settings) -> None:
    # WSGI servers decode header bytes as latin-1; GitLab sends the secret as UTF-8.
    secret = "s\u00e9cret-\u2603-token"
    on_the_wire = secret.encode("utf-8").decode("latin-1")
    assert token_ok(on_the_wire, (SecretStr(secret),))
    assert not token_ok(secret, (SecretStr(secret + "x"),))
    for hostile in ("\ud800", "\udcff", "\x00", "\u202e" + secret):
        assert not token_ok(hostile, (SecretStr(secret),))


# --- refusing to start ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "previous"), [(None, None), ("", None), (None, PREVIOUS), ("", PREVIOUS)])
def test_load_settings_refuses_without_webhook_secret(
    config_path: Path, value: str | None, previous: str | None
) -> None:
    environment = {"GITLAB_TOKEN": GITLAB_TOKEN}
    if value is not None:
        environment["GITLAB_WEBHOOK_SECRET"] = value
    if previous is not None:  # a rotation left half-done is no configuration either
        environment["GITLAB_WEBHOOK_SECRET_PREVIOUS"] = previous
    with pytest.raises(ConfigError) as caught:
        load_settings(config_path, env=environment)
    assert any("GITLAB_WEBHOOK_SECRET" in p for p in caught.value.problems)


def test_create_app_refuses_without_webhook_secret(
    config_path: Path, sec_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(RuntimeError, match="GITLAB_WEBHOOK_SECRET"):
        create_app(sec_settings.model_copy(update={"webhook_secrets": ()}))
    unchecked = load_settings(config_path, env={"GITLAB_TOKEN": GITLAB_TOKEN}, require_secrets=False)
    with pytest.raises(RuntimeError, match="GITLAB_WEBHOOK_SECRET"):
        create_app(unchecked)
    monkeypatch.setenv("ECR_GATE_CONFIG", str(config_path))
    monkeypatch.setenv("GITLAB_TOKEN", GITLAB_TOKEN)
    monkeypatch.delenv("GITLAB_WEBHOOK_SECRET", raising=False)
    monkeypatch.delenv("GITLAB_WEBHOOK_SECRET_PREVIOUS", raising=False)
    with pytest.raises(ConfigError, match="GITLAB_WEBHOOK_SECRET"):
        create_app()


# --- limits --------------------------------------------------------------------------------------------------


def test_pathological_json_is_answered_in_linear_time(sec_settings: Settings, redis_url: str) -> None:
    # An unterminated string of escaped quotes made the depth pre-scan quadratic (64 KB: 17 s).
    big = Web(
        sec_settings.model_copy(
            update={"webhook": sec_settings.webhook.model_copy(update={"max_body_bytes": 5 * 1024 * 1024})}
        ),
        redis_url,
    )
    n = 5 * 1024 * 1024 // 2 - 8
    for body in (b'"' + b'\\"' * n, b"[" * (2 * n), b"[" + b"[]," * (n // 2) + b"[]]", b'{"a":"' + b"x" * (2 * n)):
        started = time.perf_counter()
        response = big.post(body, headers_for())
        assert response.status_code == 400, response.get_json()
        assert time.perf_counter() - started < 5.0  # was hours for 5 MB before the linear scan
        assert big.queue.sent == []


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def _containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(alphabet='[]{}"\\abc,: \u00e9'),
    _containers,
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(json_values, st.booleans())
def test_depth_prescan_agrees_with_the_parsed_depth(value: Any, ascii_only: bool) -> None:
    assert max_depth(json.dumps(value, ensure_ascii=ascii_only).encode()) == _depth(value)


@settings(max_examples=300, deadline=None)
@given(json_values, st.integers(1, 12))
def test_the_bracket_count_shortcut_refuses_exactly_what_the_scan_refuses(value: Any, limit: int) -> None:
    raw = json.dumps(value).encode()
    try:
        loads_bounded(raw, limit)
        refused = False
    except TooDeep:
        refused = True
    assert refused == (max_depth(raw) > limit)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_depth_prescan_never_raises_and_bounds_what_json_parses(raw: bytes) -> None:
    depth = max_depth(raw)
    try:
        parsed = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):
        return
    assert _depth(parsed) <= depth


@pytest.mark.parametrize("where", ["ref", "path", "build"])
def test_lone_surrogates_in_forwarded_text_are_400_not_queued(web: Web, where: str) -> None:
    body = pipeline()
    if where == "ref":
        body["object_attributes"]["ref"] = "feature/\ud800"
    elif where == "path":
        body["project"]["path_with_namespace"] = "sec/\udfff"
    else:
        body["builds"][0]["name"] = "docker-push\ud83d"
    response = web.post(dumps(body), headers_for())  # json.dumps escapes them: valid JSON, invalid text
    assert response.status_code == 400 and "surrogates" in response.get_json()["error"]
    assert web.queue.sent == []


# --- fuzzing -------------------------------------------------------------------------------------------------

HOSTILE_TEXT = [
    "\ud800",
    "\udfff",
    "a\x00b",
    "\u202e\u2066evil\u2069",
    "\u200b",
    "\ufeff",
    "\U0001f4a5",
    "%s%n%x",
    "{{7*7}}",
    "../../etc/passwd",
    EVIL,
    "'; DROP TABLE gates; --",
    "\r\nX-Injected: 1",
    "@all /merge",
    "<!-- ecr-scan-gate -->",
]
text = st.one_of(st.text(max_size=40), st.sampled_from(HOSTILE_TEXT), st.text(min_size=300, max_size=3000))
header_chars = st.characters(blacklist_characters="\r\n")  # the test client refuses these, as HTTP does
header_text = st.text(header_chars, max_size=60)
valid_tokens = st.sampled_from([SECRET, PREVIOUS])
tokens = st.one_of(  # half valid, so fuzzing reaches the parser as often as the gate
    valid_tokens,
    st.none(),
    st.sampled_from(["", SECRET + "x", SECRET[:-1], SECRET.upper(), " " + SECRET, SECRET + "\x00", SECRET + "\u00e9"]),
    header_text,
    valid_tokens,
    valid_tokens,
)
event_names = st.one_of(
    st.none(),
    st.sampled_from(
        [k.value for k in EventKind]
        + ["Merge Request Hook", "Note Hook", "pipeline hook", "Pipeline Hook ", "Job Hook\x00"]
    ),
    header_text,
)
content_types = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "application/json",
            "application/json; charset=utf-8",
            "APPLICATION/JSON",
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/json5",
            "application/json, text/plain",
            '"application/json"',
        ]
    ),
    header_text,
)
idempotency_keys = st.one_of(
    st.none(),
    header_text,
    st.text(header_chars, min_size=180, max_size=2000),
    st.sampled_from(["\x00\x01\x7f", "\u202e" * 3, "k" * 201]),
)
extra_headers = st.dictionaries(
    st.sampled_from(
        [
            "X-Gitlab-Instance",
            "X-Gitlab-Event-UUID",
            "webhook-id",
            "webhook-timestamp",
            "webhook-signature",
            "X-Forwarded-For",
            "X-Gitlab-Webhook-UUID",
            "Authorization",
        ]
    ),
    header_text,
    max_size=3,
)


def _nested(depth: int, kind: str) -> bytes:
    if kind == "list":
        return b"[" * depth + b"]" * depth
    if kind == "object":
        return b'{"a":' * depth + b"1" + b"}" * depth
    return b"[" * depth  # unbalanced


def _sized(size: int) -> bytes:
    pad = max(0, size - len(b'{"pad":""}'))
    return b'{"pad":"' + b"a" * pad + b'"}'


def _hostile_strings(value: Any, pick: Any) -> Any:
    """Replace some strings in a payload with hostile text, keeping its shape."""
    if isinstance(value, dict):
        return {k: _hostile_strings(v, pick) for k, v in value.items()}
    if isinstance(value, list):
        return [_hostile_strings(v, pick) for v in value]
    if isinstance(value, str) and pick(st.booleans()):
        return pick(text)
    return value


def _mutate(payload: dict[str, Any], pick: Any) -> dict[str, Any]:
    """One random edit at a random place: replace a value, delete a key, or leave it alone."""
    paths: list[tuple[Any, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, child in node.items():
                paths.append((node, key))
                walk(child)
        elif isinstance(node, list):
            for i, child in enumerate(node):
                paths.append((node, i))
                walk(child)

    walk(payload)
    action = pick(st.sampled_from(["none", "replace", "delete", "hostile", "free_text", "free_text"]))
    if action == "none" or not paths:
        return payload
    if action == "hostile":
        return _hostile_strings(payload, pick)
    if action == "free_text":
        # Fields any string passes validation for: hostile text there reaches the queue unless refused.
        where = payload.get("object_attributes") or payload
        field = pick(st.sampled_from(["ref", "source", "url", "created_at", "path", "build_name", "build_stage"]))
        if field == "path" and isinstance(payload.get("project"), dict):
            payload["project"]["path_with_namespace"] = "sec/" + pick(text)
        elif field in where:
            where[field] = pick(text)
        return payload
    parent, key = pick(st.sampled_from(paths))
    if action == "delete":
        del parent[key]
    else:
        parent[key] = pick(st.one_of(json_values, text, st.integers(min_value=-(2**70), max_value=2**70)))
    return payload


@st.composite
def event_payloads(draw: Any) -> tuple[str, dict[str, Any]]:
    """Mostly valid Pipeline/Job Hooks of configured and unconfigured projects, then mutated."""
    pick = draw
    project_id = draw(st.sampled_from([9001, 4242, 4242, 1, 2**63 - 1]))
    project_path = draw(st.sampled_from(["sec/app", "sec/deep/nested", "sec/\u202e", "other/app", "sec", "SEC/app"]))
    if draw(st.booleans()):
        status = draw(st.sampled_from(["running", "success", "failed", "created"]))
        body = pipeline_payload(
            project_id=project_id,
            project_path=project_path,
            sha=SHA,
            status=status,
            pipeline_id=draw(st.integers(1, 10**9)),
            ref=draw(st.sampled_from(["main", "f/x"])),
        )
        kind = "Pipeline Hook"
    else:
        body = job_payload(
            project_id=project_id,
            project_path=project_path,
            sha=SHA,
            job_name=draw(st.sampled_from(["docker-push", "build-image", "unit-tests"])),
            status=draw(st.sampled_from(["success", "success", "running", "failed"])),
            job_id=draw(st.integers(1, 10**9)),
        )
        kind = "Job Hook"
    return kind, _mutate(body, pick)


def _encode(payload: Any, how: str) -> bytes:
    if how == "ascii":
        return json.dumps(payload).encode()
    # Raw UTF-8; a lone surrogate becomes bytes that are not UTF-8 at all.
    return json.dumps(payload, ensure_ascii=False).encode("utf-8", "surrogatepass")


bodies = st.one_of(
    st.binary(max_size=2000),
    st.builds(_encode, json_values, st.sampled_from(["ascii", "raw"])),
    st.builds(_nested, st.integers(0, 3000), st.sampled_from(["list", "object", "open"])),
    st.builds(_sized, st.integers(MAX_BODY - 16, MAX_BODY + 16)),
    st.builds(lambda s: s.encode("utf-8", "surrogatepass"), text),
    event_payloads().map(lambda kp: _encode(kp[1], "ascii")),
)


def expected_event(settings_: Settings, headers: dict[str, str], body: bytes) -> dict[str, Any] | None:
    """What the receiver may queue for this request (independently of its code), or None: nothing."""
    if len(body) > settings_.webhook.max_body_bytes:
        return None
    token = headers.get("X-Gitlab-Token")
    if token is None or token not in [s.get_secret_value() for s in settings_.webhook_secrets]:
        return None
    if parse_options_header(headers.get("Content-Type", ""))[0].lower() != "application/json":
        return None
    try:
        payload = json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError):
        return None
    if _depth(payload) > settings_.webhook.max_json_depth:
        return None
    try:
        event = parse_event(headers.get("X-Gitlab-Event"), payload)
    except InvalidEvent:
        return None
    if event is None:
        return None
    project = settings_.project_for(event.project_id, event.project_path)
    if project is None:
        return None
    if isinstance(event, JobEvent) and (
        event.status != "success" or event.job_name not in {i.push_job for i in project.images}
    ):
        return None
    data = event_to_dict(event)
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return None
    return data


def check_delivery(web_: Web, headers: dict[str, str], body: bytes) -> None:
    response = web_.post(body, headers)
    status = response.status_code
    hypothesis.event(f"HTTP {status}")
    assert status < 500, (status, response.data[:300])  # 503 only when Redis/enqueue fails: not here
    assert status in (200, 202, 400, 401, 413, 415), status
    assert response.is_json  # every answer, even an error, is JSON
    expected = expected_event(web_.settings, headers, body)
    if len(body) > web_.settings.webhook.max_body_bytes:
        assert status == 413
    elif (
        headers.get("X-Gitlab-Token") not in [s.get_secret_value() for s in web_.settings.webhook_secrets]
        and not web_.settings.signing_key.get_secret_value()
    ):
        assert status == 401 and response.get_json() == {"error": "unauthorized"}
    if expected is None:
        assert web_.queue.sent == [], (status, response.get_json())
        assert status != 202
        return
    if status == 200:  # the same body resent without a usable Idempotency-Key
        assert response.get_json()["status"] == "duplicate" and web_.queue.sent == []
        return
    assert status == 202, response.get_json()
    assert len(web_.queue.sent) == 1
    task, payload = web_.queue.sent[0]
    assert task == {"Pipeline Hook": "gate.pipeline_event", "Job Hook": "gate.job_event"}[headers["X-Gitlab-Event"]]
    assert payload == expected
    assert event_to_dict(event_from_dict(payload)) == payload  # what the worker rebuilds is what was checked
    json.dumps(payload, ensure_ascii=False).encode("utf-8")  # and it survives Celery's JSON and Redis


def build_headers(
    token: str | None, event: str | None, content_type: str | None, key: str | None, extra: dict[str, str]
) -> dict[str, str]:
    headers = dict(extra)
    for name, value in (
        ("X-Gitlab-Token", token),
        ("X-Gitlab-Event", event),
        ("Content-Type", content_type),
        ("Idempotency-Key", key),
    ):
        if value is not None:
            headers[name] = value
    return headers


@FUZZ
@given(
    body=bodies, token=tokens, event=event_names, content_type=content_types, key=idempotency_keys, extra=extra_headers
)
def test_fuzz_random_deliveries_never_5xx_and_never_queue_junk(
    web: Web,
    body: bytes,
    token: str | None,
    event: str | None,
    content_type: str | None,
    key: str | None,
    extra: dict[str, str],
) -> None:
    check_delivery(web, build_headers(token, event, content_type, key, extra), body)


@FUZZ
@given(
    event=event_payloads(),
    token=valid_tokens,
    content_type=st.sampled_from(["application/json", "application/json; charset=utf-8"]),
    key=st.one_of(st.builds(lambda: str(uuid.uuid4())), idempotency_keys),
    header=st.sampled_from(["right", "right", "right", "swapped", "missing"]),
)
def test_fuzz_mutated_events_queue_only_valid_configured_events(
    web: Web, event: tuple[str, dict[str, Any]], token: str, content_type: str, key: str | None, header: str
) -> None:
    kind, payload = event
    other = {"Pipeline Hook": "Job Hook", "Job Hook": "Pipeline Hook"}[kind]
    name = {"right": kind, "swapped": other, "missing": None}[header]
    check_delivery(web, build_headers(token, name, content_type, key, {}), _encode(payload, "ascii"))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    token=st.one_of(st.none(), st.just(SECRET), header_text),
    msg_id=st.one_of(header_text, st.just("msg_1")),
    stamp=st.one_of(header_text, st.integers(-(10**13), 10**13).map(str), st.just(str(int(time.time())))),
    others=st.one_of(header_text, st.lists(header_text, max_size=20).map(" ".join)),
    sign_it=st.booleans(),
)
def test_fuzz_signature_headers_never_5xx(
    signed_web: Web, token: str | None, msg_id: str, stamp: str, others: str, sign_it: bool
) -> None:
    body = dumps(pipeline(pipeline_id=123456))
    signable = bool(msg_id) and msg_id.isascii() and stamp.isascii() and stamp.isdigit() and len(stamp) <= 12
    signature = f"{sign(body, msg_id, stamp)} {others}" if sign_it and signable else others
    headers = build_headers(
        token,
        "Pipeline Hook",
        "application/json",
        str(uuid.uuid4()),
        {"webhook-id": msg_id, "webhook-timestamp": stamp, "webhook-signature": signature},
    )
    response = signed_web.post(body, headers)
    assert response.status_code in (200, 202, 401), response.data[:200]
    fresh = signable and abs(time.time() - int(stamp)) <= signed_web.settings.webhook.signature_tolerance_s
    accepted = token in (None, SECRET) and sign_it and fresh and bool(signature.strip())
    assert (response.status_code != 401) is accepted
    # The same signed webhook-id and body again (examples repeat "msg_1") is a duplicate, not a new event.
    duplicate = response.status_code == 200 and response.get_json() == {"status": "duplicate"}
    assert response.status_code == 202 or duplicate or not accepted
    assert len(signed_web.queue.sent) == (1 if response.status_code == 202 else 0)


# --- scope: only configured projects; URLs, registry, region and repository from config -----------------------


def forged_pipeline() -> dict[str, Any]:
    body = pipeline(project_id=9100, project_path="sec/forged")
    body["project"].update(
        web_url=f"{EVIL}/sec/forged", git_http_url=f"{EVIL}/x.git", avatar_url=f"{EVIL}/a.png", http_url=f"{EVIL}/x.git"
    )
    body["object_attributes"]["url"] = f"{EVIL}/-/pipelines/1"
    body["merge_request"]["url"] = f"{EVIL}/-/merge_requests/17"
    body["commit"]["url"] = f"{EVIL}/-/commit/{SHA}"
    # Fields a naive bot might read to find the image: none of them may matter.
    body.update(
        registry_id="999999999999",
        region="cn-north-1",
        repository={"name": "evil/repo", "url": EVIL},
        role_arn="arn:aws:iam::999999999999:role/attacker",
        gitlab_url=EVIL,
        api_url=f"{EVIL}/api/v4",
    )
    body["object_attributes"].update(registry="999999999999.dkr.ecr.cn-north-1.amazonaws.com", image="evil/repo:x")
    for build in body["builds"]:
        build["runner"] = {"description": EVIL}
    return body


def test_forged_urls_reach_no_api_call_and_ecr_coordinates_come_from_config(web: Web) -> None:
    headers = headers_for() | {"X-Gitlab-Instance": EVIL}
    response = web.post(dumps(forged_pipeline()), headers)
    assert response.status_code == 202
    ((_, payload),) = web.queue.sent
    # The only URL carried on is the display-only pipeline url; nothing ECR- or API-shaped survives.
    carrying = {key for key, value in payload.items() if EVIL in json.dumps(value)}
    assert carrying == {"url"}
    assert not {"registry_id", "region", "repository", "role_arn", "gitlab_url", "api_url"} & set(payload)
    event = event_from_dict(payload)
    project = web.settings.project_for(event.project_id, event.project_path)
    image = project.images[0]
    resolved = resolve(project, web.settings.policy, event.project_path, None)
    gates = gates_for_pipeline(web.settings, resolved, resolved.images, event)
    assert [g.repository for g in gates] == ["app"]
    from bot.core.report import project_url, target_url

    for gate in gates:
        ref = gate.image
        assert (ref.repository, ref.region, ref.registry_id, ref.role_arn) == (
            image.repository,
            image.region,
            image.registry_id or "",
            image.role_arn or "",
        )
        assert ref.tag == SHA[:8]
        assert target_url(web.settings.gitlab.url, gate).startswith(GITLAB_URL + "/")
        assert project_url(web.settings.gitlab.url, gate.project_path).startswith(GITLAB_URL + "/")


def test_forged_job_event_gates_come_from_config(web: Web) -> None:
    body = job_payload(project_id=4242, project_path="anything/at-all", job_name="build-image", sha=SHA, ref="main")
    body["repository"].update(homepage=EVIL, git_http_url=f"{EVIL}/x.git")
    body["project"]["web_url"] = EVIL
    response = web.post(dumps(body), headers_for("Job Hook"))
    assert response.status_code == 202
    ((_, payload),) = web.queue.sent
    assert EVIL not in json.dumps(payload)
    event = event_from_dict(payload)
    project = web.settings.project_for(event.project_id, event.project_path)
    (gate,) = gates_for_job(web.settings, resolve(project, web.settings.policy, event.project_path, None), event)
    assert (gate.repository, gate.image.region, gate.image.registry_id, gate.image.role_arn) == (
        "by-id",
        "us-east-1",
        "",
        "",
    )
    assert gate.image.tag == f"main-{SHA[:8]}"


@pytest.mark.parametrize(
    ("project_id", "path", "queued"),
    [
        (9001, "sec/app", True),
        (9001, "sec/group/app", True),
        (4242, "elsewhere/x", True),
        (9001, "other/app", False),
        (9001, "SEC/app", False),
        (9001, "sec", False),
        (4243, "secret/app", False),
    ],
)
def test_only_configured_projects_are_queued(web: Web, project_id: int, path: str, queued: bool) -> None:
    response = web.post(dumps(pipeline(project_id=project_id, project_path=path)), headers_for())
    assert (response.status_code == 202) is queued
    assert bool(web.queue.sent) is queued
    if not queued:
        assert response.get_json() == {"status": "ignored", "reason": "project not configured"}


def _calls(tree: ast.AST, names: set[str]) -> list[ast.Call]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in names:
                found.append(node)
    return found


def _url_source(tree: ast.AST, call: ast.Call) -> str:
    """The expression the URL argument of a call comes from, following one local assignment."""
    arg = call.args[0] if call.args else next(k.value for k in call.keywords if k.arg == "url")
    if isinstance(arg, ast.Name):
        for func in ast.walk(tree):
            if isinstance(func, ast.FunctionDef) and call in list(ast.walk(func)):
                for node in ast.walk(func):
                    if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == arg.id for t in node.targets):
                        return ast.unparse(node.value)
    return ast.unparse(arg)


def test_the_token_is_only_sent_to_the_configured_url(sec_settings: Settings) -> None:
    sources = {p: ast.parse(p.read_text()) for d in ("bot", "workers") for p in sorted((ROOT / d).rglob("*.py"))}
    api_calls = [(p, c) for p, tree in sources.items() for c in _calls(tree, {"GitLabApi"})]
    assert api_calls, "GitLabApi is built somewhere"
    for path, call in api_calls:
        first = call.args[0] if call.args else next(k.value for k in call.keywords if k.arg == "settings")
        # GitLabApi takes GitLabSettings, so the URL comes with the validated config: `<settings>.gitlab`.
        assert isinstance(first, ast.Attribute) and first.attr == "gitlab", f"{path}:{call.lineno}"
    # Every client handed the token (python-gitlab's private_token=...) gets the configured URL.
    token_calls = [
        (p, tree, node)
        for p, tree in sources.items()
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and any(k.arg == "private_token" for k in node.keywords)
    ]
    assert token_calls
    for path, tree, call in token_calls:
        assert _url_source(tree, call) in ("settings.url", "settings.gitlab.url"), f"{path}:{call.lineno}"
    api = GitLabApi(sec_settings.gitlab, SecretStr(GITLAB_TOKEN))
    assert api._gl.url == GITLAB_URL and api._gl.api_url == f"{GITLAB_URL}/api/v4"


# --- dedupe of signed and reused-key deliveries -----------------------------------------------------------


def test_a_signed_delivery_resent_with_a_new_idempotency_key_is_a_duplicate(signed_web: Web) -> None:
    body = dumps(pipeline())
    headers = signed_headers(body, msg_id=f"msg_{uuid.uuid4().hex}")
    first = signed_web.post(body, headers | {"Idempotency-Key": str(uuid.uuid4())})
    assert first.status_code == 202 and len(signed_web.queue.sent) == 1  # (post() clears the recorder)
    again = signed_web.post(body, headers | {"Idempotency-Key": str(uuid.uuid4())})  # the replay swaps the key
    assert again.status_code == 200 and again.get_json() == {"status": "duplicate"}
    assert signed_web.queue.sent == []


def test_a_reused_idempotency_key_with_another_body_is_not_dropped(web: Web) -> None:
    key = str(uuid.uuid4())
    one, two = dumps(pipeline(pipeline_id=555001)), dumps(pipeline(pipeline_id=555002))
    assert web.post(one, headers_for() | {"Idempotency-Key": key}).status_code == 202
    assert web.post(two, headers_for() | {"Idempotency-Key": key}).status_code == 202  # another event
    assert len(web.queue.sent) == 1
    assert web.post(two, headers_for() | {"Idempotency-Key": key}).get_json() == {"status": "duplicate"}
