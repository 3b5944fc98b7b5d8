"""The receiver under gunicorn, over raw sockets: broken chunked framing is a 400 (no traceback), over-cap is 413."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import harness
from tests.fakes.payloads import pipeline_payload, webhook_headers
from tests.stack import free_port

MAX_BODY = 5 * 1024 * 1024  # the harness config's [webhook] max_body_bytes (the default)


@pytest.fixture(scope="module")
def web(stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, harness.Process]]:
    port = free_port()
    proc = harness.web_server(stack_env, Path(tmp_path_factory.mktemp("framing")), port, "--workers", "1")
    proc.start()
    harness.wait_for(lambda: _healthz(port), 30, "gunicorn")
    yield port, proc
    proc.stop()


def _healthz(port: int) -> bool:
    try:
        status, _ = exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    except OSError:
        return False
    return status in (200, 503)


def exchange(port: int, raw: bytes, timeout: float = 10) -> tuple[int, bytes]:
    """Send raw bytes, half-close, read the whole answer: (status, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(raw)
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def chunked_request(body_chunks: bytes) -> bytes:
    headers = webhook_headers("Pipeline Hook", harness.WEBHOOK_SECRET)
    lines = [b"POST /webhook HTTP/1.1", b"Host: x", b"Transfer-Encoding: chunked", b"Connection: close"]
    lines += [f"{k}: {v}".encode() for k, v in headers.items()]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body_chunks


@pytest.mark.parametrize(
    "framing",
    [
        b"zz\r\n{}\r\n0\r\n\r\n",  # chunk size not hex
        b"5\r\nhello",  # no terminator, the client stops
        b"-5\r\nhello\r\n0\r\n\r\n",  # negative size
        b"5;\x00bad\r\nhello\r\n0\r\n\r\n",  # a broken chunk extension
        b"ffffffffffffffffffff\r\nx\r\n",  # absurd size
    ],
    ids=["bad-size", "no-terminator", "negative", "bad-extension", "huge-size"],
)
def test_broken_chunked_framing_is_a_400_without_a_traceback(web: tuple[int, harness.Process], framing: bytes) -> None:
    port, proc = web
    before = proc.log_text().count("Traceback")
    status, body = exchange(port, chunked_request(framing))
    assert status == 400, body[:300]
    assert proc.log_text().count("Traceback") == before
    assert _healthz(port)


def test_a_chunked_body_over_the_cap_is_refused_not_truncated(web: tuple[int, harness.Process]) -> None:
    port, _ = web
    document = json.dumps(pipeline_payload(project_path="elsewhere/x")).encode()
    document += b" " * (MAX_BODY - len(document))  # a valid document of exactly the cap...
    assert len(document) == MAX_BODY
    garbage = b"x" * 1_000_000  # ...then more
    chunks = b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in (document, garbage)) + b"0\r\n\r\n"
    status, body = exchange(port, chunked_request(chunks), timeout=30)
    assert status == 413, body[:300]
    # Exactly the cap, chunked, is still read whole (and ignored: an unconfigured project).
    exact = f"{len(document):x}\r\n".encode() + document + b"\r\n0\r\n\r\n"
    status, body = exchange(port, chunked_request(exact), timeout=30)
    assert status == 200 and json.loads(body)["status"] == "ignored"


_HEADER_NAMES = st.sampled_from(
    ["Content-Type", "Content-Length", "Transfer-Encoding", "X-Gitlab-Event", "X-Gitlab-Token"]
)
_JUNK = st.binary(max_size=200)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    framing=st.one_of(
        _JUNK.map(lambda b: b"%x\r\n" % len(b) + b + b"\r\n0\r\n\r\n"),  # well-formed chunks of junk
        _JUNK,  # raw junk where chunks should be
        st.lists(st.tuples(st.integers(-5, 10**6), _JUNK), max_size=4).map(
            lambda parts: b"".join(str(n).encode() + b"\r\n" + b + b"\r\n" for n, b in parts)
        ),
    ),
    extra=st.lists(st.tuples(_HEADER_NAMES, st.text(max_size=40)), max_size=3),
    signed=st.booleans(),
)
def test_fuzzed_framing_never_5xx_nor_a_traceback(
    web: tuple[int, harness.Process], framing: bytes, extra: list[tuple[str, str]], signed: bool
) -> None:
    port, proc = web
    before = proc.log_text().count("Traceback")
    headers = webhook_headers("Pipeline Hook", harness.WEBHOOK_SECRET if signed else "wrong")
    lines = [b"POST /webhook HTTP/1.1", b"Host: x", b"Transfer-Encoding: chunked", b"Connection: close"]
    lines += [f"{k}: {v}".encode() for k, v in headers.items()]
    lines += [f"{k}: {v}".encode("utf-8", "replace") for k, v in extra if "\r" not in v and "\n" not in v]
    try:
        status, _ = exchange(port, b"\r\n".join(lines) + b"\r\n\r\n" + framing, timeout=10)
    except (ConnectionResetError, BrokenPipeError, IndexError, ValueError):
        status = 400  # gunicorn refused the request line or headers itself and closed: not a 5xx
    # RFC 9112 6.1: a transfer coding the server does not know is answered 501 (by gunicorn, before the app).
    bad_coding = status == 501 and any(k == "Transfer-Encoding" for k, _ in extra)
    assert status < 500 or bad_coding
    assert proc.log_text().count("Traceback") == before
