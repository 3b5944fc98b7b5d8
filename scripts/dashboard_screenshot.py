"""Seed a throwaway Redis prefix with a realistic mix of gates, serve the dashboard, save docs/dashboard.png.

    python scripts/dashboard_screenshot.py [--out docs/dashboard.png] [--redis redis://127.0.0.1:6379/15]

Drives Debian's chromium through Playwright (scripts/ensure-chromium.sh installs it); the prefix is deleted after.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import threading
import time
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from playwright.sync_api import sync_playwright  # noqa: E402
from werkzeug.serving import make_server  # noqa: E402

from bot.adapters import store as store_module  # noqa: E402
from bot.adapters.store import Store  # noqa: E402
from bot.core.risk import utc_day  # noqa: E402
from bot.core.settings import Settings  # noqa: E402
from bot.web.app import create_app  # noqa: E402
from tests import configs, harness  # noqa: E402
from tests.dashboard_seed import central_exceptions, chromium, seed  # noqa: E402

USER, PASSWORD = "ecr-scan-gate", secrets.token_urlsafe(16)


class SpreadClock:
    """Store.finish dates each verdict by time.time(): seeded ones are spread over the last hour, as if real."""

    def __init__(self, start: float, step_s: float) -> None:
        self.now, self.step_s = start, step_s

    def time(self) -> float:
        self.now += self.step_s
        return self.now


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "dashboard.png")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    args = parser.parse_args()
    browser_path = chromium()
    if browser_path is None:
        print("chromium is not installed and scripts/ensure-chromium.sh could not install it", file=sys.stderr)
        return 1
    now = time.time()
    prefix = f"esgshot-{secrets.token_hex(4)}"
    config = configs.build_config(
        redis={"url": args.redis, "key_prefix": prefix},
        sweep={"stuck_after_s": 300},
        dashboard={"enabled": True, "username": USER, "recent": 12},
        policy={"exceptions": central_exceptions(utc_day(now))},
    )
    settings = Settings.model_validate({**config, "webhook_secrets": ("unused",), "dashboard_password": PASSWORD})
    store = Store.from_url(args.redis, settings.redis.gate_ttl_s, prefix=prefix)
    server = make_server("127.0.0.1", 0, create_app(settings, store=store))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with mock.patch.object(store_module, "time", SpreadClock(now - 3000, 100)):
            seed(store, now, utc_day(now))
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=browser_path, headless=True)
            page = browser.new_page(
                viewport={"width": 1280, "height": 800}, http_credentials={"username": USER, "password": PASSWORD}
            )
            page.goto(f"http://127.0.0.1:{server.server_port}/dashboard")
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out), full_page=True)
            browser.close()
    finally:
        server.shutdown()
        harness.drop_prefix(args.redis, prefix)
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
