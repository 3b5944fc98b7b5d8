"""Per-process singletons for tasks: settings, Redis store and the GitLab and ECR adapters."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from bot.config import Settings, load_settings
from bot.ecr_api import EcrApi
from bot.gitlab_api import GitLabApi
from bot.state import Store


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    store: Store
    gitlab: GitLabApi
    ecr: EcrApi


@functools.cache
def runtime() -> Runtime:
    """Built on first use in each worker process, from the same config the web process reads."""
    settings = load_settings()
    return Runtime(
        settings=settings,
        store=Store.from_url(settings.redis.url, settings.redis.gate_ttl_s, prefix=settings.redis.key_prefix),
        gitlab=GitLabApi(settings.gitlab, settings.gitlab_token),
        ecr=EcrApi(settings.ecr),
    )
