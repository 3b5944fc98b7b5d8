"""Secrets never reach a log line (any logger, any level, any handler) nor the text of an adapter's exception."""

from __future__ import annotations

import logging
import secrets
import socket
import traceback
import uuid
from collections.abc import Iterator

import boto3
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from bot import logs
from bot.adapters.ecr import EcrApi, EcrCallError
from bot.adapters.gitlab import GitLabApi
from bot.core.errors import GateError, PermanentError, TransientError
from bot.core.models import Image
from bot.core.settings import EcrSettings, GitLabSettings
from bot.logs import MASK, RedactingFilter, install_redaction, redact
from tests.fakes.ecr import EcrDouble
from tests.fakes.gitlab import FakeGitLab
from tests.harness import GITLAB_TOKEN

# Shaped like the real thing, unique to this module so a hit can only come from here.
CONFIGURED = "whk-redaction-" + secrets.token_hex(8)
GLPAT = "glpat-" + secrets.token_hex(10)
AKIA = "AKIA" + secrets.token_hex(8).upper()
ASIA = "ASIA" + secrets.token_hex(8).upper()
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/" + secrets.token_hex(9)
SESSION_TOKEN = "FwoGZXIvYXdzE" + secrets.token_hex(24)
ALL = (CONFIGURED, GLPAT, AKIA, ASIA, AWS_SECRET, SESSION_TOKEN)


@pytest.mark.parametrize(
    "text",
    [
        f"webhook secret is {CONFIGURED}!",
        f"token {GLPAT} used",
        f"routable glpat-{secrets.token_hex(12)}.01.{secrets.token_hex(4)} and glcbt-{secrets.token_hex(8)}",
        f"key {AKIA} / {ASIA}",
        f"aws_secret_access_key={AWS_SECRET}",
        f"AWS_SECRET_ACCESS_KEY: {AWS_SECRET}",
        f"{{'AccessKeyId': '{ASIA}', 'SecretAccessKey': '{AWS_SECRET}', 'SessionToken': '{SESSION_TOKEN}'}}",
        f'{{"aws_session_token": "{SESSION_TOKEN}"}}',
        f"headers={{'X-Amz-Security-Token': b'{SESSION_TOKEN}', 'X-Amz-Date': b'20250101T000000Z'}}",
        f"PRIVATE-TOKEN: {GLPAT}",
        f"{{'PRIVATE-TOKEN': '{GLPAT}', 'User-Agent': 'python-gitlab'}}",
        f"private_token={AWS_SECRET}",
        f"X-Gitlab-Token: {CONFIGURED}",
        f"Authorization: Bearer {SESSION_TOKEN}",
        f"'Authorization': 'Basic {AWS_SECRET}'",
        f"GITLAB_TOKEN={AWS_SECRET} GITLAB_WEBHOOK_SECRET={SESSION_TOKEN}",
    ],
)
def test_redact_masks_configured_secrets_and_known_shapes(text: str) -> None:
    out = redact(text, [CONFIGURED])
    assert MASK in out
    for value in ALL:
        assert value not in out, out
    assert "glpat-" not in out.replace(f"glpat-{MASK}", "")


def test_redact_keeps_the_name_so_the_line_still_says_what_was_hidden() -> None:
    assert redact(f"aws_secret_access_key={AWS_SECRET} rest", []) == f"aws_secret_access_key={MASK} rest"
    assert redact(f"PRIVATE-TOKEN: {GLPAT}", []) == f"PRIVATE-TOKEN: {MASK}"
    plain = "nothing secret here: sha 3f1c2d4e, repo app"
    assert redact(plain, [CONFIGURED]) == plain


def test_redact_ignores_empty_and_tiny_secrets() -> None:
    # A 1-3 character "secret" would mask every occurrence of that letter; config refuses none, logs keep text.
    assert redact("a b c", ["", "a"]) == "a b c"


def test_redact_is_idempotent() -> None:
    once = redact(f"PRIVATE-TOKEN: {GLPAT} {CONFIGURED}", [CONFIGURED])
    assert redact(once, [CONFIGURED]) == once


# --- logging ------------------------------------------------------------------------------------------------


class Capture(logging.Handler):
    """A handler added after install_redaction, as Celery, gunicorn or a log shipper would add theirs."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture
def capture() -> Iterator[Capture]:
    install_redaction([CONFIGURED])
    handler = Capture()
    # A child logger with its own late handler: logger-level filters on "bot" or root never see its records.
    logger = logging.getLogger(f"bot.redaction.{uuid.uuid4().hex[:6]}")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    logger.propagate = False
    handler.logger = logger  # type: ignore[attr-defined]
    yield handler
    logger.removeHandler(handler)


def _assert_clean(text: str) -> None:
    for value in ALL:
        assert value not in text, text


@pytest.mark.parametrize("level", [logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL])
def test_every_level_is_redacted_in_message_and_args(capture: Capture, level: int) -> None:
    log = capture.logger  # type: ignore[attr-defined]
    log.log(level, "configured %s and %r", CONFIGURED, {"PRIVATE-TOKEN": GLPAT})
    log.log(level, f"inline {AKIA} aws_secret_access_key={AWS_SECRET}")
    log.log(level, "dict args %(a)s %(b)s", {"a": ASIA, "b": f"Authorization: Bearer {SESSION_TOKEN}"})
    assert len(capture.lines) == 3
    _assert_clean(capture.text)
    assert capture.text.count(MASK) >= 6


def test_exception_text_and_traceback_are_redacted(capture: Capture) -> None:
    log = capture.logger  # type: ignore[attr-defined]
    try:
        try:
            raise ValueError(f"inner PRIVATE-TOKEN: {GLPAT}")
        except ValueError as inner:
            raise RuntimeError(f"outer {CONFIGURED} {AKIA}") from inner
    except RuntimeError:
        log.exception("failed with %s", CONFIGURED)
        log.debug("again", exc_info=True)
        log.error("as arg: %s", RuntimeError(f"aws_session_token={SESSION_TOKEN}"))
    text = capture.text
    assert "Traceback" in text and "RuntimeError" in text and "ValueError" in text
    _assert_clean(text)


def test_a_bad_format_string_neither_raises_nor_leaks(capture: Capture) -> None:
    log = capture.logger  # type: ignore[attr-defined]
    log.info("two %s %s but one arg", CONFIGURED)  # must not raise out of the log call
    log.info("%d", GLPAT)
    _assert_clean(capture.text)
    assert len(capture.lines) == 2


def test_caplog_and_root_handlers_added_later_see_redacted_records(caplog: pytest.LogCaptureFixture) -> None:
    install_redaction([CONFIGURED])
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("workers.tasks.some.child").debug("secret %s", CONFIGURED)
        logging.getLogger("celery.app.trace").error("boto said %s", {"SecretAccessKey": AWS_SECRET})
        logging.getLogger("urllib3.connectionpool").debug("PRIVATE-TOKEN: %s", GLPAT)
    _assert_clean(caplog.text)
    assert all(MASK in r.getMessage() for r in caplog.records)


def test_secrets_only_in_the_environment_are_redacted(capture: Capture, monkeypatch: pytest.MonkeyPatch) -> None:
    odd = "envonly-" + secrets.token_hex(12)  # no known shape: only its value can find it
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", odd)
    install_redaction([])
    capture.logger.warning("boto3 loaded %s", odd)  # type: ignore[attr-defined]
    assert odd not in capture.text and MASK in capture.text


def test_filter_alone_redacts_records_built_without_the_factory() -> None:
    # makeLogRecord (QueueListener, SocketHandler receivers) bypasses the record factory: the filter covers it.
    handler = Capture()
    handler.addFilter(RedactingFilter([CONFIGURED]))
    record = logging.makeLogRecord(
        {
            "name": "x",
            "levelno": logging.INFO,
            "levelname": "INFO",
            "msg": "%s then %s",
            "args": (CONFIGURED, f"PRIVATE-TOKEN: {GLPAT}"),
        }
    )
    handler.handle(record)
    _assert_clean(handler.text)


def _record(msg: str, *args: object) -> logging.LogRecord:
    return logging.getLogger("bot.test").makeRecord("bot.test", logging.INFO, __file__, 1, msg, args, None)


def test_installed_filters_skip_what_the_factory_redacted_and_redo_what_changed_or_is_newer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The factory's mark lets filters skip a second pass; it must never let a secret through.
    install_redaction([CONFIGURED])
    first = logs._installed[-1]
    passes: list[str] = []
    real = logs._redact_record
    monkeypatch.setattr(logs, "_redact_record", lambda r, s: (passes.append(str(r.msg)), real(r, s))[1])
    done = _record("%s", CONFIGURED)
    mark = getattr(done, logs.MARK)
    assert mark[0] == done.msg and CONFIGURED not in str(mark)  # what was done, never the secrets
    assert first.filter(done) and passes == ["%s"]  # the factory's pass only
    changed = _record("plain")
    changed.msg = f"changed after: {CONFIGURED} and PRIVATE-TOKEN: {GLPAT}"
    first.filter(changed)
    _assert_clean(changed.getMessage())
    # A secret added later: a record the factory made before it is redacted again by the newer filter.
    later = "whk-later-" + secrets.token_hex(8)
    old = _record("%s", later)
    install_redaction([later])
    assert logs._installed[-1].filter(old) and later not in old.getMessage() and MASK in old.getMessage()


def test_a_filter_made_outside_install_redaction_always_redacts() -> None:
    later = "whk-other-" + secrets.token_hex(8)
    knows_more = Capture()
    knows_more.addFilter(RedactingFilter([CONFIGURED, later]))
    knows_more.handle(_record("%s", later))
    assert later not in knows_more.text and MASK in knows_more.text


_FRAGMENTS = [
    "AKIA", "ASIA", "akia", "ABCDEFGHIJKLMNOP", "0123456789ABCDEF", "secret", "SECRET", "Secret_Access_Key",
    "aws_session_token", "x-amz-security-token", "PRIVATE-TOKEN", "private_token", "X-Gitlab-Token",
    "GITLAB_WEBHOOK_SECRET_PREVIOUS", "gitlab_webhook_signing_key", "Authorization", "AUTHORIZATION", "bearer",
    "Basic", "token", "key", "gl", "glpat-", "glcbt-", "GLPAT-", "gloas-", "glagent-", "abcdefghij0123", ".01.",
    "=", ": ", ":", "'", '"', "b'", " ", "\n", "{", "}", ",", "é", "ß", "x",
    # What re's IGNORECASE also takes for i, k and s: the words must be found through them too.
    "ı", "İ", "\u212a", "ſ", "GITLAB_WEBHOOK_", "ecret", "authori", "zation", "ey", "to", "en", "_", "-",
]  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(_FRAGMENTS), max_size=30).map("".join))
@example("GITLAB_WEBHOOK_\u017fECRET=abc")  # long s: IGNORECASE takes it for s, lower() does not
@example("author\u0131zation: Bearer abc")  # dotless i: neither lower() nor casefold() make it i
@example("X-GITLAB-TO\u212aEN: abc")  # Kelvin sign for k
def test_skipping_a_pattern_by_its_words_never_changes_the_result(text: str) -> None:
    """The words each pattern needs (logs._NEEDS) only skip regexes that could not have matched."""
    full = text
    for pattern in logs._PATTERNS:
        full = pattern.sub(lambda m: (m.group(1) + m.group(2) + MASK) if m.lastindex else MASK, full)
    assert redact(text, []) == full


# --- exception text of the adapters --------------------------------------------------------------------------


def _chain_text(exc: BaseException) -> str:
    """Everything a log, Celery's result backend or a traceback could show of this exception."""
    parts, seen, todo = [], set(), [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        parts += [str(current), repr(current), *map(str, current.args)]
        todo += [current.__cause__, current.__context__]
    parts.append("".join(traceback.format_exception(exc)))
    return "\n".join(parts)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_gitlab_unreachable_error_carries_no_token() -> None:
    api = GitLabApi(GitLabSettings(url=f"http://127.0.0.1:{_closed_port()}", timeout_s=2), SecretStr(GLPAT))
    with pytest.raises(TransientError) as caught:
        api.set_status(1, "0" * 40, {"state": "pending", "name": "x"})
    assert GLPAT not in _chain_text(caught.value)


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (401, PermanentError),
        (403, PermanentError),
        (404, PermanentError),
        (429, TransientError),
        (500, TransientError),
        (502, TransientError),
    ],
)
def test_gitlab_http_errors_carry_no_token(fake_gitlab: FakeGitLab, status: int, kind: type[GateError]) -> None:
    project_id = 880000 + status
    fake_gitlab.inject_fault("GET", f"/projects/{project_id}/pipelines/", status=status, retry_after=1)
    api = GitLabApi(GitLabSettings(url=fake_gitlab.url, timeout_s=5), SecretStr(GITLAB_TOKEN))
    with pytest.raises(kind) as caught:
        api.pipeline_status(project_id, 1)
    assert GITLAB_TOKEN not in _chain_text(caught.value)


def test_gitlab_wrong_token_and_timeout_errors_carry_no_token(fake_gitlab: FakeGitLab) -> None:
    wrong = "glpat-" + secrets.token_hex(10)
    with pytest.raises(PermanentError) as caught:
        GitLabApi(GitLabSettings(url=fake_gitlab.url, timeout_s=5), SecretStr(wrong)).bot_user_id()
    assert wrong not in _chain_text(caught.value)
    fake_gitlab.inject_fault("GET", "/projects/889999/pipelines/", delay_s=1.5)
    api = GitLabApi(GitLabSettings(url=fake_gitlab.url, timeout_s=0.3), SecretStr(GITLAB_TOKEN))
    with pytest.raises(TransientError) as slow:
        api.pipeline_status(889999, 1)
    assert GITLAB_TOKEN not in _chain_text(slow.value)


def test_a_gitlab_error_body_echoing_the_token_is_redacted_when_logged(
    fake_gitlab: FakeGitLab, capture: Capture
) -> None:
    # GitLab does not echo tokens; a proxy in front of it might. The exception keeps GitLab's message (300
    # characters), so logging is the last line of defence.
    install_redaction([GITLAB_TOKEN])
    fake_gitlab.inject_fault(
        "GET", "/projects/889998/pipelines/", status=400, body={"message": f"bad header PRIVATE-TOKEN: {GITLAB_TOKEN}"}
    )
    api = GitLabApi(GitLabSettings(url=fake_gitlab.url, timeout_s=5), SecretStr(GITLAB_TOKEN))
    with pytest.raises(PermanentError) as caught:
        api.pipeline_status(889998, 1)
    capture.logger.error("sync failed: %s", caught.value, exc_info=caught.value)  # type: ignore[attr-defined]
    assert GITLAB_TOKEN not in capture.text and MASK in capture.text


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """AWS credentials shaped like real ones; boto3's default session rebuilt so it reads them."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", AKIA)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    yield monkeypatch


@pytest.mark.parametrize("role_arn", [None, "arn:aws:iam::123456789012:role/redaction-unreachable"])
def test_ecr_unreachable_error_carries_no_aws_secret(aws_env: pytest.MonkeyPatch, role_arn: str | None) -> None:
    aws_env.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_closed_port()}")
    api = EcrApi(EcrSettings(connect_timeout_s=1, read_timeout_s=1))
    with pytest.raises(TransientError) as caught:
        api.scan_findings(Image("app", tag="x", role_arn=role_arn))
    text = _chain_text(caught.value)
    assert AKIA not in text and AWS_SECRET not in text


def test_ecr_refusals_carry_no_aws_secret(aws_env: pytest.MonkeyPatch, ecr: EcrDouble) -> None:
    aws_env.setenv("AWS_ENDPOINT_URL", ecr.endpoint_url)
    api = EcrApi(EcrSettings())
    tag = "redact-" + secrets.token_hex(3)
    ecr.script("app", tag=tag, steps=[{"error": "AccessDeniedException"}])
    result = api.scan_findings(Image("app", tag=tag))
    assert result.reason is not None and result.reason.value == "access_denied"
    assert AKIA not in result.detail and AWS_SECRET not in result.detail
    with pytest.raises(EcrCallError) as caught:
        api.describe_image(Image("no-such-repository-" + secrets.token_hex(3), tag="x"))
    text = _chain_text(caught.value)
    assert AKIA not in text and AWS_SECRET not in text
