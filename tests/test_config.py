"""Config: the documented example loads, bad files list every problem, secrets come only from the env."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import load_settings
from bot.core.errors import ConfigError
from bot.core.models import Severity
from bot.core.settings import ref_slug

ROOT = Path(__file__).resolve().parent.parent
ENV = {"GITLAB_TOKEN": "t0ken-value", "GITLAB_WEBHOOK_SECRET": "s3cret-value"}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_example_config_loads_with_every_documented_key():
    settings = load_settings(ROOT / "config.example.toml", env=ENV)
    assert settings.gitlab.url == "https://gitlab.example.com"
    assert settings.policy.fail_on == (Severity.CRITICAL, Severity.HIGH)
    image = settings.projects[0].images[0]
    assert (image.repository, image.push_job, image.registry_id) == ("app", "docker-push", "123456789012")
    assert [s.get_secret_value() for s in settings.webhook_secrets] == ["s3cret-value"]


def test_issue_shape_is_accepted(tmp_path):
    path = write(
        tmp_path,
        """
[gitlab]
url = "https://gitlab.example.com"
[redis]
url = "redis://127.0.0.1:6379/0"
[policy]
fail_on = ["CRITICAL", "HIGH"]
[scan]
poll_interval_s = 15
timeout_s = 600
[[projects]]
path = "group/app"
  [[projects.images]]
  repository = "app"
  tag = "{short_sha}"
  push_job = "docker-push"
  registry_id = "123456789012"
  region = "us-east-1"
""",
    )
    settings = load_settings(path, env=ENV)
    assert settings.project_for(1, "group/app") is not None
    assert settings.project_for(1, "group/other") is None


def test_every_problem_is_listed_at_once(tmp_path):
    path = write(
        tmp_path,
        """
[gitlab]
url = "ftp://nope"
token = "should-not-be-here"
[scan]
poll_interval_s = 0
timout_s = 5
[policy]
fail_on = ["CRITICAL", "SEVERE"]
[[projects]]
path = "g/*"
  [[projects.images]]
  repository = "Bad Name"
  tag = "{sha}-{nope}"
""",
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env={})
    text = "\n".join(caught.value.problems)
    for expected in (
        "gitlab.url",
        "gitlab.token: secrets are read from the environment",
        "poll_interval_s",
        "timout_s: unknown key",
        "SEVERE",
        "repository",
        "nope",
        "push_job",
        "GITLAB_TOKEN is not set",
        "GITLAB_WEBHOOK_SECRET is not set",
    ):
        assert expected in text, expected
    assert str(path) in text
    assert "should-not-be-here" not in str(caught.value)


def test_missing_and_unparsable_files_are_one_clear_line(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_settings(tmp_path / "absent.toml", env=ENV)
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write(tmp_path, "[gitlab\nurl="), env=ENV)


def test_redis_url_from_env_overrides_file_and_path_from_env(tmp_path):
    path = write(tmp_path, '[gitlab]\nurl = "https://g.example"\n[redis]\nurl = "redis://file:6379/0"\n')
    settings = load_settings(env={**ENV, "ECR_GATE_CONFIG": str(path), "REDIS_URL": "redis://env:6379/3"})
    assert settings.redis.url == "redis://env:6379/3"


def test_fast_polling_is_accepted_with_a_warning(tmp_path, caplog):
    path = write(tmp_path, '[gitlab]\nurl = "https://g.example"\n[scan]\npoll_interval_s = 1\n')
    assert load_settings(path, env=ENV).scan.poll_interval_s == 1
    assert "throttling" in caplog.text


def test_secrets_are_not_in_repr(tmp_path):
    settings = load_settings(write(tmp_path, '[gitlab]\nurl = "https://g.example"\n'), env=ENV)
    assert "t0ken-value" not in repr(settings) and "s3cret-value" not in repr(settings)


def test_previous_secret_is_accepted_for_rotation(tmp_path):
    path = write(tmp_path, '[gitlab]\nurl = "https://g.example"\n')
    settings = load_settings(path, env={**ENV, "GITLAB_WEBHOOK_SECRET_PREVIOUS": "old-secret"})
    assert [s.get_secret_value() for s in settings.webhook_secrets] == ["s3cret-value", "old-secret"]


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{short_sha}", "0123abcd"),
        ("{sha}", "0123abcd" + "e" * 32),
        ("{ref_slug}-{pipeline_id}", "feature-ecr-gate-77"),
    ],
)
def test_tag_templates(tmp_path, template, expected):
    path = write(
        tmp_path,
        f"""
[gitlab]
url = "https://g.example"
[[projects]]
id = 5
  [[projects.images]]
  repository = "app"
  tag = "{template}"
  push_job = "push"
""",
    )
    image = load_settings(path, env=ENV).projects[0].images[0]
    assert image.render_tag("0123abcd" + "e" * 32, "Feature/ECR_Gate", 77) == expected


def test_ref_slug_matches_gitlab():
    assert ref_slug("Feature/ECR_Gate") == "feature-ecr-gate"
    assert ref_slug("-x-" + "a" * 80) == ("x-" + "a" * 80)[:62]
