"""The dashboard in headless Chromium against the real web process (gunicorn), on gates seeded through the Store."""

from __future__ import annotations

import base64
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.sync_api import Browser, BrowserContext, Page, Response, sync_playwright
from playwright.sync_api import Error as PlaywrightError

from bot.adapters.store import Store
from bot.core.gate import Gate
from bot.core.models import Image, Reason, Verdict
from bot.core.risk import utc_day
from tests import configs, harness
from tests.dashboard_seed import CENTRAL_ID, MR_ID, REPO_ID, central_exceptions, chromium, finish, seed
from tests.stack import free_port

USER, PASSWORD = "dash-admin", secrets.token_urlsafe(18)
HOSTILE_PATH = "evil/<script>alert(1)</script>"


class GitLabPages(BaseHTTPRequestHandler):
    """Stands in for GitLab's web pages: answers every GET, so a link the dashboard renders can be followed."""

    seen: list[tuple[str, str | None]] = []  # (path, Referer header)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path != "/favicon.ico":  # the browser asks for it by itself
            GitLabPages.seen.append((self.path, self.headers.get("Referer")))
        body = f"<html><head><title>GitLab</title></head><body><h1>GitLab page {self.path}</h1></body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: Any) -> None:
        pass


class _NoAws:
    """The web process reads no AWS: there is no ECR double to point it at."""

    def env(self) -> dict[str, str]:
        return {}


@dataclass
class Tab:
    page: Page
    console: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)  # a script that ran would have opened one
    responses: list[Response] = field(default_factory=list)

    def csp_refusals(self) -> list[str]:
        return [m for m in self.console if "Content Security Policy" in m]


@dataclass
class Site:
    url: str
    gitlab_url: str
    web: harness.Process
    browser: Browser
    contexts: list[BrowserContext] = field(default_factory=list)

    def tab(self, credentials: dict[str, str] | None = None) -> Tab:
        """A fresh context (no cached credentials) and page, with what it sees recorded."""
        context = self.browser.new_context(http_credentials=credentials) if credentials else self.browser.new_context()
        self.contexts.append(context)
        tab = Tab(context.new_page())
        tab.page.on("console", lambda message: tab.console.append(message.text))
        tab.page.on("dialog", lambda dialog: (tab.dialogs.append(dialog.message), dialog.dismiss()))
        tab.page.on("response", lambda response: tab.responses.append(response))
        return tab


@pytest.fixture(scope="module")
def site(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    browser_path = chromium()
    if browser_path is None:
        pytest.skip("no chromium on PATH and scripts/ensure-chromium.sh could not install it (apt-get, as root)")
    workdir = Path(tmp_path_factory.mktemp("dashboard"))
    pages = ThreadingHTTPServer(("127.0.0.1", 0), GitLabPages)
    threading.Thread(target=pages.serve_forever, daemon=True).start()
    gitlab_url = f"http://127.0.0.1:{pages.server_port}"
    prefix = f"esgtest-dashweb-{secrets.token_hex(4)}"
    now = time.time()
    config = configs.write_config(
        workdir / "config.toml",
        gitlab={"url": gitlab_url},
        redis={"url": redis_url, "key_prefix": prefix},
        sweep={"stuck_after_s": 300},
        dashboard={"enabled": True, "username": USER},
        policy={"exceptions": central_exceptions(utc_day(now))},
    )
    store = Store.from_url(redis_url, 3600, prefix=prefix)
    seed(store, now, utc_day(now))
    hostile = Gate(
        project_id=7199,
        project_path=HOSTILE_PATH,
        sha="c" * 40,
        ref="main",
        pipeline_id=49_999,
        image=Image("evil"),
        push_job="docker-push",
        status_name="ecr-scan-gate/evil",
        mr_iid=3,
        created_at=now - 50,
    )
    finish(store, hostile, Verdict(Reason.ERROR, "ECR said <img src=x onerror=alert(2)>"))
    env = {**harness.stack_env(config, _NoAws()), "ECR_GATE_DASHBOARD_PASSWORD": PASSWORD}
    port = free_port()
    web = harness.web_server(env, workdir, port, "--workers", "1").start()
    url = f"http://127.0.0.1:{port}"
    harness.wait_for(lambda: _up(url), 30, "the web process")
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=browser_path, headless=True)
            site = Site(url, gitlab_url, web, browser)
            yield site
            for context in site.contexts:
                context.close()
            browser.close()
    finally:
        web.stop()
        pages.shutdown()
        harness.drop_prefix(redis_url, prefix)


def _up(url: str) -> bool:
    try:
        return requests.get(f"{url}/healthz", timeout=2).status_code == 200
    except requests.RequestException:
        return False


@pytest.mark.parametrize("path", ["/dashboard", "/dashboard/projects/7101"])
def test_without_credentials_the_page_answers_401_and_shows_no_gate_data(site: Site, path: str) -> None:
    tab = site.tab()
    try:
        tab.page.goto(site.url + path)
    except PlaywrightError as exc:
        # With no credentials to give, Chromium cancels the Basic auth prompt: the navigation fails.
        assert "ERR_INVALID_AUTH_CREDENTIALS" in str(exc)
    assert [a.status for a in tab.responses] == [401]
    assert tab.responses[0].headers["www-authenticate"] == 'Basic realm="ecr-scan-gate", charset="UTF-8"'
    shown = harness.wait_for(lambda: _content(tab.page), 10, "the page to settle")
    assert "acme/payments-api" not in shown and "Open gates" not in shown
    body = tab.page.request.get(site.url + path)  # the 401's body, without a navigation
    assert body.status == 401 and "acme" not in body.text() and "CVE-" not in body.text()


def _content(page: Page) -> str | None:
    """The page's HTML, or None while it navigates (after a refused auth Chromium moves to its error page)."""
    try:
        return page.content()
    except PlaywrightError:
        return None


def test_with_wrong_credentials_the_page_answers_401(site: Site) -> None:
    for credentials in ({"username": USER, "password": PASSWORD + "x"}, {"username": "admin", "password": PASSWORD}):
        page = site.tab(credentials).page
        response = page.goto(f"{site.url}/dashboard")
        assert response is not None and response.status == 401, credentials
        assert "acme/payments-api" not in page.content()


def test_the_main_page_shows_open_stuck_recent_rates_and_expiring(site: Site) -> None:
    tab = site.tab({"username": USER, "password": PASSWORD})
    page = tab.page
    response = page.goto(f"{site.url}/dashboard")
    assert response is not None and response.status == 200
    assert response.headers["content-security-policy"].startswith("default-src 'none'")
    assert page.title() == "ecr-scan-gate dashboard"

    open_rows = page.locator("#open tbody tr")
    assert open_rows.count() == 4  # scanning, waiting, stuck, unposted
    open_text = page.locator("#open").inner_text()
    assert "scanning (IN_PROGRESS)" in open_text and "waiting for the push" in open_text
    assert "passed · status not posted" in open_text

    stuck = page.locator("#stuck tbody tr")
    assert stuck.count() == 2
    assert "platform/auth-service" in stuck.nth(0).inner_text()
    assert "no poll progress for 2 h" in stuck.nth(0).inner_text()
    assert "status not posted for 20 min" in stuck.nth(1).inner_text()

    recent = page.locator("#recent").inner_text()
    for reason in ("passed", "blocked", "timeout", "access_denied", "scan_not_found", "canceled", "skipped", "error"):
        assert reason in recent, reason
    assert "access denied reading the scan" in recent

    rates = page.locator("#rates tbody tr")
    assert rates.count() == 5  # four projects and the hostile one
    payments = page.locator("#rates tbody tr", has_text="acme/payments-api").locator("td").all_inner_texts()
    # 6 passed and 2 blocked of 8 decided; the canceled one is not a decision.
    assert payments == ["acme/payments-api", "8", "6 75 %", "2 25 %", "0 0 %", "1", "0"]

    expiring = page.locator("#expiring").inner_text()
    assert MR_ID in expiring and CENTRAL_ID in expiring and REPO_ID in expiring
    assert "CVE-2022-40897" not in expiring and "CVE-2021-3711" not in expiring  # 80 days away; expired
    assert "all projects" in expiring and "MR !12 comment" in expiring

    # Hostile text shows as text: nothing ran, and the CSP refused nothing (the inline style's hash is right).
    assert HOSTILE_PATH in page.locator("#recent").inner_text()
    assert "<img src=x onerror=alert(2)>" in recent
    assert tab.dialogs == [] and tab.csp_refusals() == []


def test_the_links_go_to_the_configured_gitlab_without_a_referrer(site: Site) -> None:
    page = site.tab({"username": USER, "password": PASSWORD}).page
    page.goto(f"{site.url}/dashboard")
    row = page.locator("#recent tbody tr", has_text="access_denied")
    project = f"{site.gitlab_url}/platform/auth-service"
    hrefs = [
        row.locator(f"a[href^='{project}/-/{kind}/']").get_attribute("href") for kind in ("merge_requests", "pipelines")
    ]
    assert all(hrefs), hrefs
    GitLabPages.seen.clear()
    for href in hrefs:
        page.goto(f"{site.url}/dashboard")
        page.locator(f"#recent a[href='{href}']").click()
        page.wait_for_url(str(href))
        assert page.locator("h1").inner_text() == f"GitLab page {str(href).removeprefix(site.gitlab_url)}"
    assert [path for path, _ in GitLabPages.seen] == [str(h).removeprefix(site.gitlab_url) for h in hrefs]
    assert all(referer is None for _, referer in GitLabPages.seen)  # Referrer-Policy: no-referrer


def test_clicking_a_project_opens_its_page(site: Site) -> None:
    tab = site.tab({"username": USER, "password": PASSWORD})
    page = tab.page
    page.goto(f"{site.url}/dashboard")
    page.locator("#rates a", has_text="platform/auth-service").click()
    page.wait_for_url(f"{site.url}/dashboard/projects/7103")
    assert page.title() == "ecr-scan-gate dashboard · platform/auth-service"
    body = page.locator("main").inner_text()
    assert "no poll progress for 2 h" in body and "access_denied" in body and "timeout" in body
    assert "acme/payments-api" not in body and "data/etl-jobs" not in body
    assert page.locator("#rates tbody tr").count() == 1
    assert CENTRAL_ID in page.locator("#expiring").inner_text()  # a central exception applies to every project
    page.locator("header a", has_text="ecr-scan-gate").click()
    page.wait_for_url(f"{site.url}/dashboard")
    assert page.locator("#rates tbody tr").count() == 5
    assert tab.csp_refusals() == []


def test_the_web_process_never_logged_the_password_or_the_header(site: Site) -> None:
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    log = site.web.log_text()
    assert "Booting worker" in log
    assert PASSWORD not in log and token not in log
