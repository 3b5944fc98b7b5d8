"""Load the TOML config and the secrets from the environment into the frozen settings of bot.core.settings."""

from __future__ import annotations

import logging
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from bot.core.errors import ConfigError
from bot.core.ops_settings import DASHBOARD_PASSWORD_ENV, METRICS_TOKEN_ENV
from bot.core.settings import Settings, too_fast

log = logging.getLogger(__name__)

DEFAULT_PATH = "config.toml"

_SECRET_KEYS = {"token", "private_token", "secret", "webhook_secret", "password", "signing_key"}


def _find_secrets_in_file(data: Mapping[str, Any], prefix: str = "") -> list[str]:
    found = []
    for key, value in data.items():
        where = f"{prefix}{key}"
        if isinstance(value, Mapping):
            found += _find_secrets_in_file(value, where + ".")
        elif key.lower() in _SECRET_KEYS:
            found.append(f"{where}: secrets are read from the environment only; remove it from the file")
    return found


def _format_validation(path: str, exc: ValidationError) -> list[str]:
    problems = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (misspelt?)"
        problems.append(f"{path}: {loc}: {msg}")
    return problems


def _env_secrets(env: Mapping[str, str]) -> tuple[dict[str, object], list[str]]:
    problems = []
    token = env.get("GITLAB_TOKEN", "")
    secrets = [s for s in (env.get("GITLAB_WEBHOOK_SECRET", ""), env.get("GITLAB_WEBHOOK_SECRET_PREVIOUS", "")) if s]
    if not token:
        problems.append("environment: GITLAB_TOKEN is not set (the bot's GitLab token, scope `api`)")
    if not env.get("GITLAB_WEBHOOK_SECRET"):
        # _PREVIOUS alone is a rotation left half-done: the secret GitLab is meant to use is missing.
        alone = "; GITLAB_WEBHOOK_SECRET_PREVIOUS alone is not enough" if secrets else ""
        problems.append(f"environment: GITLAB_WEBHOOK_SECRET is not set (the webhook's secret token){alone}")
    return (
        {
            "gitlab_token": token,
            "webhook_secrets": tuple(secrets),
            "signing_key": env.get("GITLAB_WEBHOOK_SIGNING_KEY", ""),
            "metrics_token": env.get(METRICS_TOKEN_ENV, ""),
            "dashboard_password": env.get(DASHBOARD_PASSWORD_ENV, ""),
        },
        problems,
    )


def load_settings(
    path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    require_secrets: bool = True,
) -> Settings:
    """Read the file and the environment; raise ConfigError listing every problem at once."""
    env = os.environ if env is None else env
    path = Path(path or env.get("ECR_GATE_CONFIG") or DEFAULT_PATH)
    problems: list[str] = []
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError([f"{path}: file not found (set ECR_GATE_CONFIG or pass --config)"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None
    secret_keys = _find_secrets_in_file(data)
    problems += [f"{path}: {p}" for p in secret_keys]
    if env.get("REDIS_URL"):
        data.setdefault("redis", {})["url"] = env["REDIS_URL"]
    secrets, secret_problems = _env_secrets(env)
    if require_secrets:
        problems += secret_problems
    try:
        settings = Settings.model_validate({**data, **secrets})
    except ValidationError as exc:
        flagged = {p.split(":")[0] for p in secret_keys}
        problems += [p for p in _format_validation(str(path), exc) if p.split(": ")[1] not in flagged]
        settings = None
    # Only where the secrets are required (web, worker): `check` and `doctor` read the same file without them.
    if require_secrets and settings is not None and settings.dashboard.enabled and not settings.dashboard_password:
        problems.append(f"environment: {DASHBOARD_PASSWORD_ENV} is not set ([dashboard] enabled needs its password)")
    if problems or settings is None:
        raise ConfigError(problems)
    if too_fast(settings.scan.poll_interval_s):
        log.warning(
            "scan.poll_interval_s=%s is below 10 s: sustained polling this fast invites ECR throttling",
            settings.scan.poll_interval_s,
        )
    return settings
