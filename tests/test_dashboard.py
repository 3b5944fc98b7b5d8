"""The dashboard: its pure view model, and /dashboard through Flask's test client on a real Redis."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import secrets
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from pydantic import SecretStr

from bot.adapters.store import Store
from bot.core import dashboard as dash
from bot.core import dashboard_parts as parts
from bot.core.dashboard import Snapshot, Tone, View, build, stuck_reason
from bot.core.dashboard_parts import expiring, gate_exceptions, rates
from bot.core.gate import Gate, GateKind, GateState
from bot.core.models import Acceptance, Image, Reason, Verdict
from bot.core.policy import Policy, failed_verdict
from bot.core.poll import Progress
from bot.core.risk import utc_day
from bot.core.settings import Settings
from bot.web import dashboard as web_dashboard
from bot.web.app import create_app
from tests import configs, harness

NOW = 1_800_000_000.0  # 2027-01-15 08:00 UTC
TODAY = utc_day(NOW)
GITLAB = "https://gitlab.example.com"
VIEW = View(GITLAB, stuck_after_s=300, expiring_within_days=14)
USER, PASSWORD = "dash-user", "correct horse battery staple"
HOSTILE = "<script>alert(1)</script>"
CENTRAL = "CVE-2023-4911"  # the [policy] exception of the Flask tests' config
REAL_TODAY = utc_day(time.time())  # for what the store dates itself (exceptions against the web's clock)


def a_gate(
    project_id: int = 1,
    pipeline_id: int = 10,
    repository: str = "app",
    *,
    state: GateState = GateState.WAITING,
    created: float = NOW - 60,
    last: float = 0.0,
    path: str = "group/app",
    verdict: Verdict | None = None,
    posted: str = "",
    deadline: float = 0.0,
    mr_iid: int = 0,
    policy: Policy | None = None,
    ecr_status: str = "",
    **more: Any,
) -> Gate:
    return Gate(
        project_id=project_id,
        project_path=path,
        sha="a" * 40,
        ref="main",
        pipeline_id=pipeline_id,
        image=Image(repository, tag="4f2a9c1e"),
        push_job="docker-push",
        status_name=f"ecr-scan-gate/{repository}",
        mr_iid=mr_iid,
        policy=policy,
        state=state,
        created_at=created,
        last_progress=last,
        progress=Progress(deadline=deadline, ecr_status=ecr_status),
        posted_state=posted,
        verdict=verdict,
        **more,
    )


def verdict(reason: Reason, summary: str = "") -> Verdict:
    if summary or reason in (Reason.PASSED, Reason.BLOCKED):
        return Verdict(reason, summary or reason.value)
    return failed_verdict(reason, Image("app"))


def snapshot(**kw: Any) -> Snapshot:
    base: dict[str, Any] = {"open_gates": (), "open_read": 0, "open_total": 0, "recent": (), "counts": {}}
    return Snapshot(**{**base, "exceptions": (), **kw})


# --- the pure view model -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(-5, "0 s"), (42, "42 s"), (60, "1 min"), (3599, "59 min"), (3600, "1 h"), (3 * 3600 + 1200, "3 h 20 min"),
     (86400, "1 d"), (2 * 86400 + 4 * 3600 + 59, "2 d 4 h")],
)  # fmt: skip
def test_age_text(seconds: float, text: str) -> None:
    assert parts.age_text(seconds) == text


def test_open_gates_are_listed_oldest_first_with_their_age_and_state() -> None:
    young = a_gate(pipeline_id=1, created=NOW - 30)
    old = a_gate(
        pipeline_id=2,
        state=GateState.POLLING,
        created=NOW - 7200,
        last=NOW - 20,
        deadline=NOW + 60,
        ecr_status="IN_PROGRESS",
    )
    page = build(snapshot(open_gates=[young, old], open_read=2, open_total=2), VIEW, NOW)
    assert [r.pipeline_id for r in page.open_gates] == [2, 1]
    first, second = page.open_gates
    assert (first.age, first.idle, first.state, first.tone) == ("2 h", "20 s", "scanning (IN_PROGRESS)", Tone.PENDING)
    assert (second.age, second.state) == ("30 s", "waiting for the push")
    assert page.stuck == () and page.open_unread == 0


@pytest.mark.parametrize(
    ("gate", "why"),
    [
        (a_gate(state=GateState.POLLING, last=NOW - 301, deadline=NOW + 100), "no poll progress for 5 min"),
        (a_gate(state=GateState.POLLING, last=NOW - 299, deadline=NOW + 100), ""),
        # The sweep looked (it touches the gate), yet the poll never finished it: its deadline is long past.
        (a_gate(state=GateState.POLLING, last=NOW - 10, deadline=NOW - 900), "still polling 15 min past its deadline"),
        (a_gate(created=NOW - 3600, last=NOW - 5), "waiting 1 h for docker-push to succeed"),
        (a_gate(created=NOW - 200), ""),
        (a_gate(state=GateState.DONE, last=NOW - 600, verdict=verdict(Reason.PASSED)),
         "verdict recorded, status not posted for 10 min"),
        (a_gate(state=GateState.DONE, last=NOW - 600, verdict=verdict(Reason.BLOCKED), posted="pending"),
         "verdict recorded, status not posted for 10 min"),
        (a_gate(state=GateState.DONE, last=NOW - 600, verdict=verdict(Reason.BLOCKED), posted="failed"), ""),
        (a_gate(state=GateState.DONE, last=NOW - 60, verdict=verdict(Reason.PASSED)), ""),  # the sync has time
        (a_gate(state=GateState.DONE, last=NOW - 600), "verdict recorded, status not posted for 10 min"),
    ],
)  # fmt: skip
def test_what_is_stuck(gate: Gate, why: str) -> None:
    assert stuck_reason(gate, NOW, 300) == why


def test_stuck_gates_are_the_open_ones_that_look_stuck_and_are_marked_there_too() -> None:
    stuck = a_gate(pipeline_id=1, state=GateState.POLLING, created=NOW - 7500, last=NOW - 7200, deadline=NOW - 6600)
    fine = a_gate(pipeline_id=2, state=GateState.POLLING, created=NOW - 100, last=NOW - 5, deadline=NOW + 500)
    unposted = a_gate(
        pipeline_id=3, state=GateState.DONE, created=NOW - 900, last=NOW - 800, verdict=verdict(Reason.PASSED)
    )
    page = build(snapshot(open_gates=[fine, unposted, stuck], open_read=3, open_total=3), VIEW, NOW)
    assert [r.pipeline_id for r in page.stuck] == [1, 3]
    assert [bool(r.stuck) for r in page.open_gates] == [True, True, False]
    assert page.open_gates[1].state == "passed · status not posted" and page.open_gates[1].tone is Tone.OK
    assert page.stuck_after == "5 min"


def test_a_bounded_read_says_how_many_open_gates_were_not_read() -> None:
    page = build(snapshot(open_gates=[a_gate()], open_read=500, open_total=742), VIEW, NOW)
    assert page.open_unread == 242


def test_rates_count_passed_blocked_and_every_other_failure_as_error_with_canceled_and_skipped_apart() -> None:
    counts = {"passed": 6, "blocked": 2, "timeout": 1, "access_denied": 1, "scan_not_found": 2, "canceled": 3,
              "skipped": 1, "a_reason_from_a_newer_version": 1}  # fmt: skip
    r = rates(5, "group/app", counts)
    assert (r.passed, r.blocked, r.error, r.canceled, r.skipped, r.decided) == (6, 2, 5, 3, 1, 13)
    assert (r.pass_pct, r.block_pct, r.error_pct) == ("46 %", "15 %", "38 %")
    nothing = rates(6, "group/web", {"canceled": 2})
    assert (nothing.decided, nothing.pass_pct, nothing.error_pct) == (0, "–", "–")


def test_rates_list_the_worst_projects_first_and_name_projects_by_their_gates() -> None:
    counts = {
        1: {"passed": 10},
        2: {"passed": 1, "access_denied": 1},
        3: {"passed": 1, "blocked": 1},
        4: {"passed": 2, "blocked": 2},
        5: {},  # its days expired: no row
    }
    seen = [a_gate(project_id=p, pipeline_id=p, path=f"team/p{p}") for p in (1, 2, 3)]
    page = build(snapshot(open_gates=seen, counts=counts), VIEW, NOW)
    assert [(r.project_id, r.project) for r in page.rates] == [
        (2, "team/p2"),  # errors first: 50 %
        (4, "project 4"),  # then blocked, the busier first: 50 % of 4
        (3, "team/p3"),
        (1, "team/p1"),
    ]


def _acc(id_: str, days: int, **kw: Any) -> Acceptance:
    return Acceptance(id_, kw.pop("reason", "accepted"), TODAY + timedelta(days=days), **kw)


def test_expiring_exceptions_are_those_in_force_ending_within_the_window_once_each_soonest_first() -> None:
    central = _acc("CVE-2024-0001", 10, source="central config")
    scoped = [
        (None, central),
        (7, _acc("CVE-2024-0002", 3, source="MR !4 comment", by="@alice", package="openssl")),
        (7, _acc("CVE-2024-0002", 3, source="MR !4 comment", by="@alice", package="openssl")),  # twice: once
        (8, _acc("CVE-2024-0003", 14, source=".gitlab/ecr-scan-gate.toml")),  # the window's last day
        (8, _acc("CVE-2024-0004", 15)),  # past the window
        (8, _acc("CVE-2024-0005", -1)),  # ended yesterday: it no longer applies
        (8, _acc("CVE-2024-0006", 0)),  # ends today: still in force today
        (None, central),
    ]
    rows = expiring(scoped, TODAY, 14, {7: "team/api"})
    assert [(r.id, r.days_left, r.project) for r in rows] == [
        ("CVE-2024-0006", 0, "project 8"),
        ("CVE-2024-0002", 3, "team/api"),
        ("CVE-2024-0001", 10, "all projects"),
        ("CVE-2024-0003", 14, "project 8"),
    ]
    assert (rows[1].package, rows[1].by, rows[1].source) == ("openssl", "@alice", "MR !4 comment")
    assert rows[2].expires == (TODAY + timedelta(days=10)).isoformat()


def test_exceptions_held_in_gate_policies_are_the_projects_unless_they_are_the_central_ones() -> None:
    central = _acc("CVE-2024-0001", 5, source="central config")
    own = _acc("CVE-2024-0009", 5, source=".gitlab/ecr-scan-gate.toml")
    gates = [a_gate(project_id=3, policy=Policy(exceptions=(central, own))), a_gate(project_id=4)]
    assert gate_exceptions(gates, (central,)) == [(None, central), (3, own)]


def test_recent_verdicts_newest_first_with_links_to_the_configured_gitlab_never_the_payloads() -> None:
    older = a_gate(pipeline_id=11, state=GateState.DONE, verdict=verdict(Reason.BLOCKED, "2 blocking"), mr_iid=7)
    newer = a_gate(
        pipeline_id=12,
        state=GateState.DONE,
        verdict=verdict(Reason.ACCESS_DENIED),
        pipeline_url="https://evil.example/x",
    )
    reopened = a_gate(pipeline_id=13, state=GateState.POLLING)  # an MR `recheck` made it poll again
    page = build(snapshot(recent=[(older, NOW - 600), (reopened, NOW - 60), (newer, NOW - 120)]), VIEW, NOW)
    assert [r.pipeline_id for r in page.recent] == [12, 11]
    new, old = page.recent
    assert (new.reason, new.tone, new.ago, new.links.mr) == ("access_denied", Tone.ERROR, "2 min", "")
    assert new.links.pipeline == f"{GITLAB}/group/app/-/pipelines/12"
    assert (old.reason, old.tone, old.summary) == ("blocked", Tone.BLOCK, "2 blocking")
    assert old.links.mr == f"{GITLAB}/group/app/-/merge_requests/7"
    assert old.finished == parts.when_text(NOW - 600) and old.finished.endswith(" UTC")


@pytest.mark.parametrize(
    ("reason", "tone"),
    [(Reason.PASSED, Tone.OK), (Reason.BLOCKED, Tone.BLOCK), (Reason.TIMEOUT, Tone.ERROR),
     (Reason.CONFIG_ERROR, Tone.ERROR), (Reason.CANCELED, Tone.NEUTRAL), (Reason.SKIPPED, Tone.NEUTRAL)],
)  # fmt: skip
def test_each_reason_has_a_tone(reason: Reason, tone: Tone) -> None:
    assert dash.tone(reason) is tone


def test_untrusted_text_is_cleaned_and_bounded() -> None:
    long_path = "group/" + "x" * 5000
    hostile = a_gate(
        path="team/\u202eevil\u202c" + "\x00",
        state=GateState.DONE,
        verdict=verdict(Reason.ERROR, "line one\nline two " + "y" * 5000),
    )
    long = a_gate(path=long_path, pipeline_id=2, state=GateState.DONE, verdict=verdict(Reason.PASSED))
    page = build(snapshot(recent=[(hostile, NOW), (long, NOW)]), VIEW, NOW)
    first, second = page.recent
    assert first.project == "team/evil"  # bidi overrides and NUL are dropped
    assert first.summary.startswith("line one line two ") and len(first.summary) == parts.TEXT_LIMIT
    assert len(second.project) == parts.PATH_LIMIT and second.project.endswith("…")


def test_a_projects_page_keeps_its_own_rows_and_the_central_exceptions() -> None:
    mine = a_gate(project_id=5, pipeline_id=1, path="team/mine")
    theirs = a_gate(project_id=6, pipeline_id=2, path="team/theirs")
    done = a_gate(project_id=6, pipeline_id=3, state=GateState.DONE, verdict=verdict(Reason.PASSED))
    scoped = [(None, _acc("CVE-2024-0001", 2)), (6, _acc("CVE-2024-0002", 2)), (5, _acc("CVE-2024-0003", 2))]
    snap = snapshot(
        open_gates=[mine, theirs], recent=[(done, NOW)], counts={5: {"passed": 1}, 6: {"blocked": 1}}, exceptions=scoped
    )
    page = build(Snapshot(**{**snap.__dict__, "project": 5}), VIEW, NOW)
    assert (page.project_id, page.project) == (5, "team/mine")
    assert [r.project_id for r in page.open_gates] == [5] and page.recent == ()
    assert [r.project_id for r in page.rates] == [5]
    assert [(r.id, r.project_id) for r in page.expiring] == [("CVE-2024-0001", None), ("CVE-2024-0003", 5)]
    unknown = build(Snapshot(**{**snap.__dict__, "project": 99}), VIEW, NOW)
    assert unknown.empty and unknown.project == "project 99"


def test_a_rescan_gate_is_marked_and_has_no_mr_link() -> None:
    rescan = a_gate(pipeline_id=9, state=GateState.POLLING, last=NOW - 5, kind=GateKind.RESCAN)
    (row,) = build(snapshot(open_gates=[rescan]), VIEW, NOW).open_gates
    assert row.rescan and row.links.mr == "" and row.links.pipeline.endswith("/-/pipelines/9")


# --- /dashboard through Flask --------------------------------------------------------------------------------


def settings_for(redis_url: str, prefix: str, **dashboard: Any) -> Settings:
    config = configs.build_config(
        gitlab={"url": GITLAB},
        redis={"url": redis_url, "key_prefix": prefix},
        dashboard={"enabled": True, "username": USER, **dashboard},
        policy={
            "exceptions": [{"id": CENTRAL, "reason": "no setuid binaries", "expires": REAL_TODAY + timedelta(days=4)}]
        },
    )
    return Settings.model_validate({**config, "webhook_secrets": ("s3cret",), "dashboard_password": PASSWORD})


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    name = f"esgtest-dash-{secrets.token_hex(4)}"
    yield name
    harness.drop_prefix(redis_url, name)


@pytest.fixture
def store(redis_url: str, prefix: str) -> Store:
    return Store.from_url(redis_url, 3600, prefix=prefix)


@pytest.fixture
def web(redis_url: str, prefix: str, store: Store) -> Any:
    return create_app(settings_for(redis_url, prefix), store=store).test_client()


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


RIGHT = basic(USER, PASSWORD)


def seed_some(store: Store, path: str = "team/api", summary: str = "") -> tuple[Gate, Gate]:
    """One gate polling for an hour without progress, one finished (blocked) with an MR."""
    now = time.time()
    stuck = a_gate(project_id=41, pipeline_id=501, path=path, created=now - 3600)
    store.create(stuck)
    store.start_polling(stuck.key, now - 3600, now + 600)
    done = a_gate(project_id=41, pipeline_id=502, repository="web", path=path, created=now - 100, mr_iid=7)
    store.create(done)
    store.start_polling(done.key, now - 90, now + 500)
    assert store.finish(done.key, verdict(Reason.BLOCKED, summary or "2 blocking findings (worst CRITICAL) in web"))
    store.set_posted(done.key, "failed")
    store.forget_open(done.key)
    return stuck, done


def test_disabled_the_dashboard_is_absent(redis_url: str, prefix: str, store: Store) -> None:
    web = create_app(settings_for(redis_url, prefix, enabled=False), store=store).test_client()
    for path in ("/dashboard", "/dashboard/", "/dashboard/projects/41"):
        answer = web.get(path, headers=RIGHT)
        assert answer.status_code == 404 and "WWW-Authenticate" not in answer.headers, path


def test_enabled_without_a_password_the_app_refuses_to_start(redis_url: str, prefix: str, store: Store) -> None:
    settings = settings_for(redis_url, prefix).model_copy(update={"dashboard_password": SecretStr("")})
    with pytest.raises(RuntimeError, match="ECR_GATE_DASHBOARD_PASSWORD"):
        create_app(settings, store=store)


def test_without_credentials_401_with_the_challenge_and_no_gate_data(web: Any, store: Store) -> None:
    seed_some(store)
    for path in ("/dashboard", "/dashboard/projects/41", "/dashboard/no-such-page"):
        answer = web.get(path)
        assert answer.status_code == 401, path
        assert answer.headers["WWW-Authenticate"] == 'Basic realm="ecr-scan-gate", charset="UTF-8"'
        assert "team/api" not in answer.get_data(as_text=True)


@pytest.mark.parametrize(
    "authorization",
    [
        basic(USER, PASSWORD + "x")["Authorization"],  # wrong password
        basic(USER.upper(), PASSWORD)["Authorization"],  # wrong user
        basic("", "")["Authorization"],
        basic(USER, "")["Authorization"],
        "Basic " + base64.b64encode(f"{USER}{PASSWORD}".encode()).decode(),  # no colon
        "Basic not-base64!!",
        "Bearer " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode(),  # another scheme, right pair
        "Basic",
        "",
        "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode() + "é",  # not ASCII
    ],
)
def test_wrong_credentials_are_401(web: Any, authorization: str) -> None:
    answer = web.get("/dashboard", headers={"Authorization": authorization})
    assert answer.status_code == 401 and answer.headers["WWW-Authenticate"].startswith("Basic ")


def test_user_and_password_are_both_compared_every_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(web_dashboard.hmac, "compare_digest", counting)
    for header in (RIGHT["Authorization"], basic("nobody", PASSWORD)["Authorization"], "Basic !!", "Digest x"):
        calls.clear()
        web_dashboard.credentials_ok(header, USER, PASSWORD)
        assert len(calls) == 2, header
    assert web_dashboard.credentials_ok(RIGHT["Authorization"].replace("Basic", "basic"), USER, PASSWORD)


def test_non_ascii_credentials_are_compared_as_utf8(redis_url: str, prefix: str, store: Store) -> None:
    settings = settings_for(redis_url, prefix, username="jürgen")
    settings = settings.model_copy(update={"dashboard_password": SecretStr("pässwört")})
    web = create_app(settings, store=store).test_client()
    # Werkzeug's test client sends str headers as latin-1, as a WSGI server hands them over.
    token = base64.b64encode("jürgen:pässwört".encode()).decode()
    assert web.get("/dashboard", headers={"Authorization": f"Basic {token}"}).status_code == 200
    assert web.get("/dashboard", headers=basic("jurgen", "pässwört")).status_code == 401


def test_with_credentials_the_page_shows_gates_verdicts_rates_and_expiring_exceptions(web: Any, store: Store) -> None:
    stuck, done = seed_some(store)
    store.add_exception(41, Acceptance("CVE-2024-2961", "iconv unused", REAL_TODAY + timedelta(days=2), by="@alice",
                                       source="MR !7 comment"))  # fmt: skip
    answer = web.get("/dashboard", headers=RIGHT)
    assert answer.status_code == 200 and answer.mimetype == "text/html"
    html = answer.get_data(as_text=True)
    stuck_section = _section(html, "stuck")
    assert "team/api" in stuck_section and "app:4f2a9c1e" in stuck_section
    assert "no poll progress for 1 h" in stuck_section
    assert "web:4f2a9c1e" not in _section(html, "open")  # finished, its status posted: no longer open
    recent = _section(html, "recent")
    assert "blocked" in recent and "2 blocking findings (worst CRITICAL) in web" in recent
    assert f'href="{GITLAB}/team/api/-/merge_requests/7"' in recent
    assert f'href="{GITLAB}/team/api/-/pipelines/502"' in recent
    assert 'href="/dashboard/projects/41"' in recent
    rates_section = _section(html, "rates")
    assert re.search(r"team/api</a></td>\s*<td class=\"num\">1</td>", rates_section)
    expiring_section = _section(html, "expiring")
    assert "CVE-2024-2961" in expiring_section and "MR !7 comment" in expiring_section
    assert CENTRAL in expiring_section and "all projects" in expiring_section


def _section(html: str, name: str) -> str:
    found = re.search(rf'<section id="{name}">(.*?)</section>', html, re.S)
    assert found, name
    return found.group(1)


def test_hostile_project_paths_and_summaries_are_escaped(web: Any, store: Store) -> None:
    seed_some(store, path=f"team/{HOSTILE}", summary=f'<img src=x onerror="alert(2)"> {HOSTILE}')
    html = web.get("/dashboard", headers=RIGHT).get_data(as_text=True)
    assert "<script" not in html and "<img" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "&lt;img src=x onerror=&#34;alert(2)&#34;&gt;" in html
    # In a link the path is percent-encoded by the URL builder, then escaped as an attribute.
    assert f"{GITLAB}/team/%3Cscript%3Ealert%281%29%3C/script%3E/-/merge_requests/7" in html


def test_every_dashboard_answer_carries_the_security_headers(web: Any, store: Store) -> None:
    seed_some(store)
    answers = [
        web.get("/dashboard", headers=RIGHT),
        web.get("/dashboard/projects/41", headers=RIGHT),
        web.get("/dashboard/projects/999", headers=RIGHT),  # 404
        web.get("/dashboard/nothing/here", headers=RIGHT),  # 404
        web.get("/dashboard"),  # 401
        web.post("/dashboard", headers=RIGHT),  # 405
    ]
    assert [a.status_code for a in answers] == [200, 200, 404, 404, 401, 405]
    for answer in answers:
        assert answer.headers["Cache-Control"] == "no-store"
        assert answer.headers["X-Frame-Options"] == "DENY"
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert answer.headers["Referrer-Policy"] == "no-referrer"
        csp = answer.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "script-src" not in csp and "frame-ancestors 'none'" in csp
    assert "Content-Security-Policy" not in web.get("/healthz").headers  # only the dashboard's


def test_the_csp_allows_exactly_the_inline_style_and_nothing_else(web: Any) -> None:
    answer = web.get("/dashboard", headers=RIGHT)
    html = answer.get_data(as_text=True)
    (style,) = re.findall(r"<style>(.*?)</style>", html, re.S)
    digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
    assert f"style-src 'sha256-{digest}'" in answer.headers["Content-Security-Policy"]
    assert "<script" not in html and " style=" not in html and "<link" not in html


def test_a_projects_page_and_an_unknown_project(web: Any, store: Store) -> None:
    seed_some(store)
    page = web.get("/dashboard/projects/41", headers=RIGHT)
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "<title>ecr-scan-gate dashboard · team/api</title>" in html and 'href="/dashboard"' in html
    assert web.get("/dashboard/projects/42", headers=RIGHT).status_code == 404
    assert web.get("/dashboard/projects/abc", headers=RIGHT).status_code == 404


def test_open_gates_past_the_read_limit_are_counted_and_said(
    web: Any, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(web_dashboard, "OPEN_READ", 2)
    for i in range(5):
        store.create(a_gate(project_id=41, pipeline_id=600 + i, created=NOW + i))
    html = web.get("/dashboard", headers=RIGHT).get_data(as_text=True)
    assert "5 gates are open: the oldest 2 were read, the 3 newer ones are not shown." in html
    assert _section(html, "open").count("<tr>") + _section(html, "open").count('<tr class="stuck">') == 3  # head + 2


def test_redis_down_is_a_503_not_a_traceback(redis_url: str, prefix: str) -> None:
    from tests.stack import free_port

    dead = Store.from_url(f"redis://127.0.0.1:{free_port()}/0", 3600, socket_timeout_s=0.5, prefix=prefix)
    web = create_app(settings_for(redis_url, prefix), store=dead).test_client()
    answer = web.get("/dashboard", headers=RIGHT)
    assert answer.status_code == 503 and "Redis is unreachable" in answer.get_data(as_text=True)


def test_the_authorization_header_and_the_password_are_never_logged(
    web: Any, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    seed_some(store)
    with caplog.at_level(logging.DEBUG):
        web.get("/dashboard", headers=RIGHT)
        web.get("/dashboard", headers=basic(USER, "a wrong guess"))
    logged = "\n".join(r.getMessage() for r in caplog.records)
    token = RIGHT["Authorization"].split()[1]
    assert token not in logged and PASSWORD not in logged and "a wrong guess" not in logged


# --- failed logins ---------------------------------------------------------------------------------------------


class Clock:
    """Stands in for the dashboard module's `time`: the window's minute moves only when the test says."""

    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock(60 * (int(time.time()) // 60) + 5.0)  # 5 s into a minute: 55 s of it left
    monkeypatch.setattr(web_dashboard, "time", fake)
    return fake


def test_past_the_limit_every_login_gets_429_until_the_minute_ends(
    redis_url: str, prefix: str, store: Store, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    seed_some(store)
    web = create_app(settings_for(redis_url, prefix, failed_logins_per_minute=3), store=store).test_client()
    wrong = basic(USER, "guess")
    for _ in range(5):  # a browser's first request carries no credentials: never a failed login
        assert web.get("/dashboard").status_code == 401
    assert web.get("/dashboard", headers=RIGHT).status_code == 200
    with caplog.at_level(logging.WARNING, logger="bot.web.dashboard"):
        assert [web.get("/dashboard", headers=wrong).status_code for _ in range(3)] == [401, 401, 401]
    warned = [r.getMessage() for r in caplog.records if "wrong logins" in r.getMessage()]
    assert len(warned) == 1 and "3 wrong logins this minute" in warned[0] and "55 s" in warned[0]
    assert "guess" not in warned[0] and PASSWORD not in warned[0]
    # Locked: the right pair is refused exactly like a wrong one, so a guesser learns nothing.
    for headers in (RIGHT, wrong):
        answer = web.get("/dashboard", headers=headers)
        assert answer.status_code == 429 and answer.headers["Retry-After"] == "55"
        assert "team/api" not in answer.get_data(as_text=True)
        assert answer.headers["Cache-Control"] == "no-store"  # the security headers still apply
    assert web.get("/dashboard/projects/41", headers=RIGHT).status_code == 429
    assert store.failed_logins(clock.now) == 3  # refused logins are not counted on: the lock ends on time
    clock.now += 54.5
    assert web.get("/dashboard", headers=RIGHT).headers["Retry-After"] == "1"
    clock.now += 1  # the next minute
    assert web.get("/dashboard", headers=RIGHT).status_code == 200
    assert web.get("/dashboard", headers=wrong).status_code == 401


def test_failed_logins_are_counted_across_web_processes_and_expire(
    redis_url: str, prefix: str, store: Store, clock: Clock
) -> None:
    settings = settings_for(redis_url, prefix, failed_logins_per_minute=2)
    # Two apps on one Redis stand for two gunicorn workers (or replicas): the count is theirs together.
    one, two = (create_app(settings, store=Store.from_url(redis_url, 3600, prefix=prefix)).test_client() for _ in "12")
    assert one.get("/dashboard", headers=basic(USER, "a")).status_code == 401
    assert two.get("/dashboard", headers=basic(USER, "b")).status_code == 401
    assert one.get("/dashboard", headers=RIGHT).status_code == 429
    assert two.get("/dashboard", headers=RIGHT).status_code == 429
    keys = [k for k in store.r.scan_iter(f"{prefix}:dashboard:failed-logins:*")]
    assert len(keys) == 1 and 0 < store.r.ttl(keys[0]) <= 120  # Redis drops the minute's counter itself


def test_the_limit_setting_is_bounded() -> None:
    from pydantic import ValidationError

    from bot.core.ops_settings import DashboardSettings

    assert DashboardSettings().failed_logins_per_minute == 20
    for bad in (0, -1, 10_001):
        with pytest.raises(ValidationError):
            DashboardSettings(failed_logins_per_minute=bad)
