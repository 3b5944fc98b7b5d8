"""Session fixtures: one real Redis DB, one fake GitLab, one ECR double and one real Celery worker."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from hypothesis import settings as hypothesis_settings

from bot.config import load_settings
from bot.core.settings import Settings
from bot.web.app import create_app
from tests import harness
from tests.fakes.ecr import EcrDouble
from tests.fakes.gitlab import FakeGitLab

# The test command gates merges, so its property tests draw the same examples every run: a red run
# then means a change broke something, not that the dice found an old edge. `make fuzz` explores
# with fresh random examples each run; what it finds becomes an @example in the test.
hypothesis_settings.register_profile("gate", derandomize=True, database=None)
hypothesis_settings.register_profile("fuzz", derandomize=False)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "gate"))

# DB 15 of the machine's Redis (started by `make test` when none runs); each session uses a key
# prefix of its own and deletes its keys at the end.
SECRETS = (harness.GITLAB_TOKEN, harness.WEBHOOK_SECRET)
REDIS_URL = os.environ.get("ECR_GATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture(scope="session")
def redis_url() -> str:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        pytest.exit(f"no Redis at {REDIS_URL} ({exc}); run the tests with `make test`, which starts one", 2)
    return REDIS_URL


@pytest.fixture(scope="session")
def fake_gitlab() -> Iterator[FakeGitLab]:
    with FakeGitLab(token=harness.GITLAB_TOKEN) as server:
        yield server


@pytest.fixture(scope="session")
def ecr() -> Iterator[EcrDouble]:
    with EcrDouble() as double:
        harness.ensure_repositories(double)
        yield double


@pytest.fixture(scope="session")
def stack_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("stack")


@pytest.fixture(scope="session")
def stack_env(stack_dir: Path, fake_gitlab: FakeGitLab, ecr: EcrDouble, redis_url: str) -> dict[str, str]:
    config = harness.write_config(stack_dir / "config.toml", fake_gitlab.url, redis_url)
    return harness.stack_env(config, ecr)


@pytest.fixture(scope="session")
def settings(stack_env: dict[str, str], redis_url: str) -> Iterator[Settings]:
    loaded = load_settings(stack_env["ECR_GATE_CONFIG"], env=stack_env)
    yield loaded
    leaked = harness.redis_keys_holding(redis_url, loaded.redis.key_prefix, SECRETS)
    harness.drop_prefix(redis_url, loaded.redis.key_prefix)
    assert not leaked, f"secrets stored in Redis (task arguments or gate records): {leaked[:5]}"


@pytest.fixture(scope="session")
def worker(stack_env: dict[str, str], stack_dir: Path) -> Iterator[harness.Process]:
    proc = harness.celery_worker(stack_env, stack_dir).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def app(settings: Settings):
    return create_app(settings)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def scenario(fake_gitlab: FakeGitLab, ecr: EcrDouble, client, worker) -> harness.Scenario:
    """A fresh MR + pipeline with the whole stack (web → Redis → worker → GitLab/ECR) running."""
    return harness.Scenario(fake_gitlab, ecr, harness.webhook_call(client))


class _Everything(logging.Handler):
    """Keeps every record any logger emits during the session, formatted with its traceback."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(logging.Formatter("%(name)s %(message)s").format(record))


@pytest.fixture(scope="session", autouse=True)
def no_secret_leaves_the_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Across the whole suite: no secret in any log record or process log file (Redis: `settings`)."""
    handler = _Everything()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield
    root.removeHandler(handler)
    root.setLevel(old_level)
    leaks = [line[:200] for line in handler.lines if any(s in line for s in SECRETS)]
    base = tmp_path_factory.getbasetemp()
    for log_file in base.rglob("*.log"):
        text = log_file.read_text(errors="replace")
        leaks += [f"{log_file.name}: {s[:6]}…" for s in SECRETS if s in text]
    assert not leaks, f"secrets leaked: {leaks[:10]}"
