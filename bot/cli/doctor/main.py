"""`doctor`: check the GitLab, ECR and events setup behind most silent passes; one line per check, with its fix."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Mapping

from bot.adapters.ecr import EcrApi
from bot.cli.doctor.ecr import ecr_lines
from bot.cli.doctor.events import events_lines
from bot.cli.doctor.gitlab import gitlab_lines
from bot.cli.doctor.lines import Level, Line
from bot.config import load_settings
from bot.core.ops_settings import DASHBOARD_PASSWORD_ENV, METRICS_TOKEN_ENV
from bot.core.settings import Settings, too_fast
from bot.logs import env_secrets

# Shorter passwords fall to an online guessing run against Basic auth (no lock-out); 16 random characters don't.
MIN_DASHBOARD_PASSWORD = 16


def config_lines(settings: Settings) -> Iterator[Line]:
    if not settings.projects:
        yield Line(
            Level.WARN,
            "config",
            "no [[projects]] configured: the bot gates nothing",
            "add a [[projects]] block with [[projects.images]] (config.example.toml)",
        )
    if too_fast(settings.scan.poll_interval_s):
        yield Line(
            Level.WARN,
            "config",
            f"[scan] poll_interval_s = {settings.scan.poll_interval_s:g} is below 10 s: "
            "ECR throttles sustained polling",
            "set [scan] poll_interval_s = 15",
        )


def operations_lines(settings: Settings) -> Iterator[Line]:
    """/metrics and /dashboard: who can read them."""
    if settings.metrics.enabled and not settings.metrics_token.get_secret_value():
        yield Line(
            Level.INFO,
            "metrics",
            "/metrics and the worker's and events' metrics ports answer anyone who reaches them (no token set)",
            f"set {METRICS_TOKEN_ENV} (web, worker, events) and give Prometheus the bearer token, or firewall them",
        )
    if settings.dashboard.enabled:
        password = settings.dashboard_password.get_secret_value()
        if not password:
            yield Line(
                Level.FAIL,
                "dashboard",
                f"[dashboard] enabled but {DASHBOARD_PASSWORD_ENV} is not set: the web process will not start",
                f"set {DASHBOARD_PASSWORD_ENV} in the web process' environment, or turn [dashboard] off",
            )
        elif len(password) < MIN_DASHBOARD_PASSWORD:
            yield Line(
                Level.WARN,
                "dashboard",
                f"{DASHBOARD_PASSWORD_ENV} is {len(password)} characters long: guessable over HTTP Basic auth",
                f"use {MIN_DASHBOARD_PASSWORD} or more random characters (e.g. `openssl rand -base64 24`)",
            )
        else:
            yield Line(Level.PASS, "dashboard", "/dashboard is on, behind HTTP Basic auth with a long password")


def run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """`doctor`: one line per check; exit 1 when any check failed."""
    settings = load_settings(args.config, env, require_secrets=False)
    secrets = env_secrets(env)
    counts = dict.fromkeys(Level, 0)
    for source in (
        config_lines(settings),
        operations_lines(settings),
        gitlab_lines(settings, env),
        ecr_lines(settings, EcrApi(settings.ecr), args.start_scan),
        events_lines(settings),  # the SQS/EventBridge checks; one INFO line while [events] is off
    ):
        for line in source:
            counts[line.level] += 1
            print(line.render(secrets), flush=True)
    warnings = f"{counts[Level.WARN]} warning{'' if counts[Level.WARN] == 1 else 's'}"
    print(
        f"doctor: {counts[Level.PASS]} passed, {warnings}, {counts[Level.FAIL]} failed",
        file=sys.stderr if counts[Level.FAIL] else sys.stdout,
    )
    return 1 if counts[Level.FAIL] else 0
