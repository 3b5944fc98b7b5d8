"""[logging] format = "json": one object per line, the gate's fields on every line, redaction kept."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator

import pytest

from bot import logs
from bot.config import load_settings
from bot.core.errors import ConfigError
from bot.core.ops_settings import DASHBOARD_PASSWORD_ENV, LogFormat
from tests import configs

SECRET = "glpat-abcdefghijklmnopqrstuvwx"


@pytest.fixture
def json_logger() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    logs.install_redaction([SECRET])
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger("test.jsonlogs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, out
    logger.removeHandler(handler)


def lines(out: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_every_line_has_the_fields_null_when_unknown(json_logger):
    logger, out = json_logger
    logger.info("starting up")
    (line,) = lines(out)
    assert line["message"] == "starting up" and line["level"] == "INFO" and line["logger"] == "test.jsonlogs"
    assert {k: line[k] for k in logs.CONTEXT_FIELDS} == dict.fromkeys(logs.CONTEXT_FIELDS)
    assert line["time"].endswith("+00:00")


def test_bound_fields_and_extra_reason_appear_and_unbinding_removes_them(json_logger):
    logger, out = json_logger
    token = logs.bind(**logs.gate_fields("gate:12:345:team/app"))
    logger.info("gate %s: %s", "gate:12:345:team/app", "blocked", extra={"reason": "blocked"})
    logs.unbind(token)
    logger.info("after")
    first, after = lines(out)
    assert (first["gate"], first["project"], first["pipeline"], first["reason"]) == (
        "gate:12:345:team/app",
        12,
        345,
        "blocked",
    )
    assert after["gate"] is None and after["project"] is None


def test_secrets_are_masked_in_the_message_the_fields_and_the_traceback(json_logger):
    logger, out = json_logger
    token = logs.bind(project=1, gate=f"gate:1:2:{SECRET}")
    try:
        raise RuntimeError(f"token={SECRET}")
    except RuntimeError:
        logger.exception("failed with %s", SECRET, extra={"reason": SECRET})
    logs.unbind(token)
    text = out.getvalue()
    assert SECRET not in text and logs.MASK in text
    (line,) = lines(out)  # still one valid JSON object per line
    assert "RuntimeError" in line["exception"]


def test_context_does_not_leak_between_threads(json_logger):
    logger, out = json_logger
    token = logs.bind(project=1)
    seen: list[object] = []
    thread = threading.Thread(target=lambda: (logger.info("other"), seen.append(1)))
    thread.start()
    thread.join()
    logs.unbind(token)
    other = lines(out)[0]
    assert other["project"] is None and seen == [1]


@pytest.mark.parametrize(
    ("args", "fields"),
    [
        (("gate:7:8:app", 3), {"gate": "gate:7:8:app", "project": 7, "pipeline": 8}),
        (("rescan:7:app:sha256:" + "a" * 64,), {"gate": "rescan:7:app:sha256:" + "a" * 64, "project": 7}),
        (({"project_id": 7, "pipeline_id": 9, "kind": "pipeline"},), {"project": 7, "pipeline": 9}),
        ((7, "abc", 9, 3, "gate:7:9:app"), {"project": 7, "pipeline": 9, "gate": "gate:7:9:app"}),
        (("not-a-key",), {}),
        ((), {}),
    ],
)
def test_task_fields_from_each_task_shape(args, fields):
    assert logs.task_fields(args) == fields


def test_the_config_takes_only_known_formats(tmp_path):
    env = {"GITLAB_TOKEN": "t" * 20, "GITLAB_WEBHOOK_SECRET": "s" * 20}
    good = configs.write_config(tmp_path / "good.toml", logging={"format": "json", "level": "DEBUG"})
    assert load_settings(good, env).logging.format is LogFormat.JSON
    bad = configs.write_config(tmp_path / "bad.toml", logging={"format": "xml"})
    with pytest.raises(ConfigError) as err:
        load_settings(bad, env)
    assert "logging.format" in str(err.value)


def test_an_enabled_dashboard_needs_its_password_from_the_environment(tmp_path):
    env = {"GITLAB_TOKEN": "t" * 20, "GITLAB_WEBHOOK_SECRET": "s" * 20}
    path = configs.write_config(tmp_path / "dash.toml", dashboard={"enabled": True})
    with pytest.raises(ConfigError) as err:
        load_settings(path, env)
    assert DASHBOARD_PASSWORD_ENV in str(err.value)
    loaded = load_settings(path, {**env, DASHBOARD_PASSWORD_ENV: "a-long-password"})
    assert loaded.dashboard_password.get_secret_value() == "a-long-password"
    assert "a-long-password" in loaded.secret_values()  # so every log line masks it


def test_records_from_before_logging_is_set_up_are_replayed_in_its_format_redacted():
    logs.install_redaction([SECRET])
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers = []
    out = io.StringIO()
    try:
        held = logs.hold()
        logging.getLogger("bot.config").warning("poll interval low (token %s)", SECRET)
        held.detach()
        handler = logging.StreamHandler(out)
        handler.setFormatter(logs.JsonFormatter())
        root.addHandler(handler)
        assert out.getvalue() == ""  # kept, not written as plain text by logging's last resort
        held.replay()
        held.replay()  # once only
        (line,) = lines(out)
        assert line["logger"] == "bot.config" and line["level"] == "WARNING"
        assert line["message"].startswith("poll interval low") and SECRET not in out.getvalue()
        assert held not in root.handlers
        bounded = logs.hold()
        for i in range(bounded.capacity + 50):
            logging.getLogger("bot.config").warning("line %d", i)
        assert len(bounded.buffer) == bounded.capacity  # kept up to its capacity, never more
        bounded.detach()
    finally:
        root.handlers = saved
