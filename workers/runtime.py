"""Per-process singletons for tasks: settings, Redis store and the GitLab and ECR adapters."""

from __future__ import annotations

from dataclasses import dataclass

from bot.adapters.ecr import EcrApi
from bot.adapters.gitlab import GitLabApi
from bot.adapters.store import Store
from bot.config import load_settings
from bot.core.settings import Settings


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    store: Store
    gitlab: GitLabApi
    ecr: EcrApi


def build(settings: Settings) -> Runtime:
    """The adapters for these settings (a worker builds one; in-process tests build their own)."""
    return Runtime(
        settings=settings,
        store=Store.from_url(settings.redis.url, settings.redis.gate_ttl_s, prefix=settings.redis.key_prefix),
        gitlab=GitLabApi(settings.gitlab, settings.gitlab_token),
        ecr=EcrApi(settings.ecr),
    )


_current: Runtime | None = None


def runtime() -> Runtime:
    """Built on first use in each worker process, from the same config the web process reads."""
    global _current
    if _current is None:
        _current = build(load_settings())
    return _current


def use(rt: Runtime | None) -> None:
    """Run the tasks of this process on `rt` (None: build from the config again on next use)."""
    global _current
    _current = rt
