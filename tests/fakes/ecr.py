"""One ECR double for tests and the demo: moto behind a proxy scripting scan timelines, errors, pages."""

from __future__ import annotations

import argparse
import base64
import copy
import hashlib
import http.client
import json
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

DEFAULT_REGION = "us-east-1"
DEFAULT_ACCOUNT = "123456789012"  # moto's default account
SCAN_OP = "DescribeImageScanFindings"
ECR_TARGET_PREFIX = "AmazonEC2ContainerRegistry_V20150921."
FIXTURES_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "ecr"

# botocore's ECR model, ScanStatus enum.
SCAN_STATUSES = frozenset(
    {
        "IN_PROGRESS",
        "COMPLETE",
        "FAILED",
        "UNSUPPORTED_IMAGE",
        "ACTIVE",
        "PENDING",
        "SCAN_ELIGIBILITY_EXPIRED",
        "FINDINGS_UNAVAILABLE",
        "LIMIT_EXCEEDED",
        "IMAGE_ARCHIVED",
    }
)
BASIC_SEVERITIES = frozenset({"INFORMATIONAL", "LOW", "MEDIUM", "HIGH", "CRITICAL", "UNDEFINED"})
ENHANCED_SEVERITIES = frozenset({"INFORMATIONAL", "LOW", "MEDIUM", "HIGH", "CRITICAL", "UNTRIAGED"})

# Descriptions seen in real answers (see tests/fixtures/ecr/SOURCES.md). Statuses whose real text no
# source shows get no description unless the step gives one, rather than an invented one.
_STATUS_DESCRIPTIONS = {
    "COMPLETE": "The scan was completed successfully.",
    "ACTIVE": "Continuous scan is selected for image.",
    "UNSUPPORTED_IMAGE": "UnsupportedImageError: The operating system and/or package manager are not supported.",
}
_ERROR_HTTP = {"ServerException": 500}  # everything else ECR documents for this call is 400

# Step keys by kind; "delay_s" and "repeat" go with any kind.
_COMMON_KEYS = frozenset({"delay_s", "repeat"})
_KIND_KEYS = {
    "status": frozenset({"status", "description", "findings", "enhanced_findings", "counts", "no_findings_object"}),
    "error": frozenset({"error", "http", "message"}),
    "moto": frozenset({"moto"}),
    "response": frozenset({"response", "retarget"}),
}
_STATUS_OPS = frozenset({SCAN_OP, "StartImageScan"})  # ops whose answers have an imageScanStatus

_TOKEN_PREFIX = "ecr-double."
_BAD_MAX_RESULTS = {"__type": "InvalidParameterException", "message": "Invalid parameter at 'maxResults': 1 to 1000"}
_MAX_STORED_ANSWERS = 10_000  # paged answers kept for nextToken reads; oldest dropped first
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# moto's state lives in module globals: one moto per child process keeps every double independent
# (and safe from an in-process mock_aws, whose stop() resets moto). The child serves until its stdin
# closes, so it dies with this process even after a crash.
_MOTO_CHILD = """
import logging, sys
from moto.server import ThreadedMotoServer
if sys.argv[1] != "verbose":
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print(server.get_host_and_port()[1], flush=True)
sys.stdin.read()
"""
_CREDENTIAL_SCOPE = re.compile(r"Credential=[^/]+/\d{8}/([a-z0-9-]+)/")


# ---------------------------------------------------------------------------------------------
# Finding builders and fixtures


def basic_finding(
    cve: str,
    severity: str,
    package: str,
    version: str,
    fixed: str | None = None,
    *,
    description: str | None = None,
    uri: str | None = None,
    cvss2_score: float | None = None,
) -> dict[str, Any]:
    """A basic-scan finding shaped like the AWS API reference example (name, uri, severity, attributes)."""
    if severity not in BASIC_SEVERITIES:
        raise ValueError(f"basic severity must be one of {sorted(BASIC_SEVERITIES)}, got {severity!r}")
    attributes = [{"key": "package_version", "value": version}, {"key": "package_name", "value": package}]
    if cvss2_score is not None:
        attributes.append({"key": "CVSS2_SCORE", "value": str(cvss2_score)})
    if fixed:
        # Only the runbook's example shows this key; AWS's own examples don't. Opt-in for that reason.
        attributes.append({"key": "fixed_in_version", "value": fixed})
    finding: dict[str, Any] = {
        "name": cve,
        "uri": uri or f"https://cve.mitre.org/cgi-bin/cvename.cgi?name={cve}",
        "severity": severity,
        "attributes": attributes,
    }
    if description is not None:
        finding["description"] = description
    return finding


def enhanced_finding(
    cve: str,
    severity: str,
    package: str,
    version: str,
    fixed: str | None = None,
    *,
    status: str = "ACTIVE",
    score: float | None = None,
    title: str | None = None,
    description: str | None = None,
    exploit_available: str = "NO",
    account_id: str = DEFAULT_ACCOUNT,
    region: str = DEFAULT_REGION,
) -> dict[str, Any]:
    """An enhanced (Inspector) finding shaped like the AWS API reference's enhanced example."""
    if severity not in ENHANCED_SEVERITIES:
        raise ValueError(f"enhanced severity must be one of {sorted(ENHANCED_SEVERITIES)}, got {severity!r}")
    if status not in {"ACTIVE", "SUPPRESSED", "CLOSED"}:
        raise ValueError(f"enhanced finding status must be ACTIVE, SUPPRESSED or CLOSED, got {status!r}")
    now = time.time()
    source_url = f"https://nvd.nist.gov/vuln/detail/{cve}"
    finding: dict[str, Any] = {
        "awsAccountId": account_id,
        "description": description if description is not None else f"{cve} in {package} {version}.",
        "findingArn": f"arn:aws:inspector2:{region}:{account_id}:finding/{uuid.uuid4().hex}",
        "firstObservedAt": now,
        "lastObservedAt": now,
        "updatedAt": now,
        "packageVulnerabilityDetails": {
            "referenceUrls": [source_url],
            "relatedVulnerabilities": [],
            "source": "NVD",
            "sourceUrl": source_url,
            "vulnerabilityId": cve,
            "vulnerablePackages": [
                {
                    "epoch": 0,
                    "name": package,
                    "packageManager": "OS",
                    "version": version,
                    # The AWS example says "NotAvailable" (not an absent key) when there is no fix.
                    "fixedInVersion": fixed or "NotAvailable",
                }
            ],
        },
        "remediation": {"recommendation": {"text": f"Upgrade {package} to {fixed}." if fixed else "None Provided"}},
        "severity": severity,
        "status": status,
        "title": title or f"{cve} - {package}",
        "type": "PACKAGE_VULNERABILITY",
        "fixAvailable": "YES" if fixed else "NO",
        "exploitAvailable": exploit_available,
    }
    if score is not None:
        finding["score"] = score
    return finding


def load_fixture(name: str) -> dict[str, Any]:
    """A recorded ECR answer from tests/fixtures/ecr/ (see SOURCES.md there)."""
    path = FIXTURES_DIR / name
    if not path.is_file():
        raise ValueError(f"no ECR fixture {name!r} in {FIXTURES_DIR}")
    return json.loads(path.read_text())


def severity_counts(findings: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Counts per severity of every finding listed; zero counts are absent keys, as ECR sends them."""
    counts: dict[str, int] = {}
    for finding in findings:
        counts[finding["severity"]] = counts.get(finding["severity"], 0) + 1
    return counts


# ---------------------------------------------------------------------------------------------
# Steps


def normalize_steps(steps: Sequence[Mapping[str, Any]], op: str = SCAN_OP) -> list[dict[str, Any]]:
    """Check steps, load fixtures and expand "repeat"; raises ValueError naming the bad step."""
    if isinstance(steps, Mapping) or not steps:
        raise ValueError("steps must be a non-empty list of step objects")
    out: list[dict[str, Any]] = []
    for index, raw in enumerate(steps):
        try:
            step = _normalize_step(raw, op)
        except ValueError as exc:
            raise ValueError(f"step {index}: {exc}") from None
        repeat = step.pop("repeat", 1)
        out.extend(copy.deepcopy(step) for _ in range(repeat))
    return out


def _normalize_step(raw: Mapping[str, Any], op: str) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise ValueError(f"a step is an object, got {type(raw).__name__}")
    step = dict(raw)
    if "fixture" in step:
        step = {**_fixture_step(str(step.pop("fixture"))), **step}
    kinds = [kind for kind in _KIND_KEYS if kind in step]
    if len(kinds) > 1:
        raise ValueError(f"a step is one of status/error/moto/response, got {kinds}")
    kind = kinds[0] if kinds else "moto"  # a bare {"delay_s": n} is a slow pass-through
    unknown = set(step) - _KIND_KEYS[kind] - _COMMON_KEYS
    if unknown:
        raise ValueError(f"unknown keys for a {kind} step: {sorted(unknown)}")
    _check_common(step)
    if kind == "status":
        _check_status_step(step, op)
    elif kind == "error":
        if not isinstance(step["error"], str) or not step["error"]:
            raise ValueError("error must be an error code such as 'ThrottlingException'")
        http = step.get("http", _ERROR_HTTP.get(step["error"], 400))
        if not isinstance(http, int) or not 400 <= http <= 599:
            raise ValueError(f"http must be a 4xx/5xx status, got {http!r}")
        if "message" in step and not isinstance(step["message"], str):
            raise ValueError("message must be a string")
    elif kind == "moto" and step.get("moto", True) is not True:
        raise ValueError("moto must be true")
    elif kind == "response" and not isinstance(step["response"], Mapping):
        raise ValueError("response must be a JSON object")
    return step


def _fixture_step(name: str) -> dict[str, Any]:
    body = load_fixture(name)
    if "__type" in body:
        return {"error": body["__type"], "message": body.get("message", "")}
    return {"response": body}


def _check_common(step: Mapping[str, Any]) -> None:
    delay = step.get("delay_s", 0)
    if isinstance(delay, bool) or not isinstance(delay, int | float) or delay < 0:
        raise ValueError(f"delay_s must be a number >= 0, got {delay!r}")
    repeat = step.get("repeat", 1)
    if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
        raise ValueError(f"repeat must be an integer >= 1, got {repeat!r}")


def _check_status_step(step: Mapping[str, Any], op: str) -> None:
    if op not in _STATUS_OPS:
        raise ValueError(f"status steps answer {sorted(_STATUS_OPS)}, not {op}")
    if step["status"] not in SCAN_STATUSES:
        raise ValueError(f"status must be one of {sorted(SCAN_STATUSES)}, got {step['status']!r}")
    has_basic, has_enhanced = "findings" in step, "enhanced_findings" in step
    if has_basic and has_enhanced:
        raise ValueError("give findings (basic) or enhanced_findings, not both")
    if step.get("no_findings_object") and (has_basic or has_enhanced or "counts" in step):
        raise ValueError("no_findings_object excludes findings and counts")
    if op != SCAN_OP and (has_basic or has_enhanced or "counts" in step):
        raise ValueError(f"{op} answers carry no findings")
    for key in ("findings", "enhanced_findings"):
        if key in step and not (isinstance(step[key], list) and all(isinstance(f, Mapping) for f in step[key])):
            raise ValueError(f"{key} must be a list of finding objects")
    counts = step.get("counts")
    if counts is not None and not (
        isinstance(counts, Mapping) and all(isinstance(v, int) and not isinstance(v, bool) for v in counts.values())
    ):
        raise ValueError("counts must be an object of severity -> integer, or null to omit it")


def scan_body(
    step: Mapping[str, Any],
    *,
    registry_id: str,
    repository: str,
    image_id: Mapping[str, str],
    completed_at: float | None = None,
) -> dict[str, Any]:
    """The DescribeImageScanFindings (or StartImageScan) answer a status step stands for."""
    status = step["status"]
    scan_status = {"status": status}
    description = step.get("description", _STATUS_DESCRIPTIONS.get(status))
    if description is not None:
        scan_status["description"] = description
    body: dict[str, Any] = {
        "registryId": registry_id,
        "repositoryName": repository,
        "imageId": dict(image_id),
        "imageScanStatus": scan_status,
    }
    listed = "findings" in step or "enhanced_findings" in step
    if step.get("no_findings_object") or (status != "COMPLETE" and not listed):
        return body
    key = "enhancedFindings" if "enhanced_findings" in step else "findings"
    items = copy.deepcopy(list(step.get("enhanced_findings", step.get("findings", []))))
    when = completed_at or time.time()
    findings: dict[str, Any] = {"imageScanCompletedAt": when, "vulnerabilitySourceUpdatedAt": when, key: items}
    counts = step["counts"] if "counts" in step else severity_counts(items)
    if counts is not None:  # counts None: the key is left out, as in an answer ECR sent mid-scan
        findings["findingSeverityCounts"] = dict(counts)
    body["imageScanFindings"] = findings
    return body


def _default_message(code: str, ctx: _CallContext) -> str:
    # Texts follow real ECR answers where a source shows them (SOURCES.md); the rest are plain.
    asked = ctx.image_id
    image_rep = f"{{imageDigest:'{asked.get('imageDigest') or 'null'}', imageTag:'{asked.get('imageTag') or 'null'}'}}"
    repo_arn = f"arn:aws:ecr:{ctx.region}:{ctx.registry_id}:repository/{ctx.repository}"
    messages = {
        "ThrottlingException": "Rate exceeded",
        "AccessDeniedException": (
            f"User: arn:aws:sts::{ctx.caller_account}:assumed-role/ci/x is not authorized to perform: "
            f"ecr:{ctx.op} on resource: {repo_arn} because no identity-based policy allows the "
            f"ecr:{ctx.op} action"
        ),
        "ServerException": "An internal server error has occured",  # sic: ECR's spelling
        "ScanNotFoundException": (
            f"Image scan does not exist for the image with '{image_rep}' in the repository with name "
            f"'{ctx.repository}' in the registry with id '{ctx.registry_id}'"
        ),
        "ImageNotFoundException": (
            f"The image with imageId {image_rep} does not exist within the repository with name "
            f"'{ctx.repository}' in the registry with id '{ctx.registry_id}'"
        ),
        "RepositoryNotFoundException": (
            f"The repository with name '{ctx.repository}' does not exist in the registry with id '{ctx.registry_id}'"
        ),
        "LimitExceededException": "The scan quota per image has been exceeded. Wait and try again.",
    }
    return messages.get(code, f"{code} (scripted by the ECR double)")


# ---------------------------------------------------------------------------------------------
# Scripts and the call log


@dataclass
class Call:
    """One request that went through the proxy."""

    op: str  # ECR operation ("DescribeImageScanFindings"), or "METHOD /path" for non-ECR requests
    repository: str | None
    image: str | None  # the tag or digest the caller named
    registry_id: str | None
    region: str | None
    time: float  # time.time() when the request arrived: what ECR's throttling would count
    answered_by: str  # "script" or "moto"
    http_status: int
    error: str | None  # error code answered, if any
    next_token: bool  # a follow-up page of a paginated read
    step: int | None  # index of the scripted step served (same index for follow-up pages)


@dataclass
class _Script:
    op: str
    repository: str
    tag: str | None
    digest: str | None
    registry_id: str | None
    steps: list[dict[str, Any]]
    served: int = 0
    completed_at: float | None = None  # first answer with findings; repeats keep it, as ECR's do

    def covers(self, registry_id: str) -> bool:
        return self.registry_id is None or self.registry_id == registry_id


@dataclass(frozen=True)
class _CallContext:
    op: str
    region: str | None
    registry_id: str | None
    repository: str | None
    image_id: Mapping[str, str]  # as the caller asked
    next_token: bool = False
    caller_account: str = DEFAULT_ACCOUNT


@dataclass
class _Book:
    """Scripts, paged answers and the call log, shared by the proxy threads under one lock."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    scripts: dict[tuple[str, str | None, str, str | None, str | None], _Script] = field(default_factory=dict)
    answers: OrderedDict[str, tuple[dict[str, Any], int]] = field(default_factory=OrderedDict)
    log: list[Call] = field(default_factory=list)

    def add(self, script: _Script) -> None:
        key = (script.op, script.registry_id, script.repository, script.tag, script.digest)
        with self.lock:
            self.scripts[key] = script  # registering the same image again starts a fresh timeline

    def _find(
        self, op: str, registry_id: str, repository: str, tag: str | None, digest: str | None, exact: bool = False
    ) -> _Script | None:
        """The script for a call: by digest, then by tag, then repository-wide. Caller holds the lock."""
        candidates = [
            s for s in self.scripts.values() if s.op == op and s.repository == repository and s.covers(registry_id)
        ]
        for matches in (
            lambda s: bool(digest) and s.digest == digest,
            lambda s: bool(tag) and s.tag == tag,
            lambda s: not exact and s.tag is None and s.digest is None,
        ):
            for script in candidates:
                if matches(script):
                    return script
        return None

    def has_exact(self, op: str, registry_id: str, repository: str, tag: str | None, digest: str | None) -> bool:
        with self.lock:
            return self._find(op, registry_id, repository, tag, digest, exact=True) is not None

    def unresolved(self, op: str, repository: str) -> list[_Script]:
        with self.lock:
            return [
                s for s in self.scripts.values() if s.op == op and s.repository == repository and s.tag and not s.digest
            ]

    def stamp(self, script: _Script) -> float:
        with self.lock:
            script.completed_at = script.completed_at or time.time()
            return script.completed_at

    def set_digest(self, script: _Script, digest: str) -> str:
        """Fix a tag script's digest once; returns the digest it ends up with."""
        with self.lock:
            script.digest = script.digest or digest
            return script.digest

    def take(
        self, op: str, registry_id: str, repository: str, tag: str | None, digest: str | None
    ) -> tuple[_Script, dict[str, Any], int] | None:
        """Match and consume one step: the last step repeats forever."""
        with self.lock:
            script = self._find(op, registry_id, repository, tag, digest)
            if script is None:
                return None
            index = min(script.served, len(script.steps) - 1)
            script.served += 1
            return script, script.steps[index], index

    def store(self, body: dict[str, Any], step: int) -> str:
        """Keep a paged answer for its follow-up pages; returns the id its nextTokens carry."""
        answer_id = uuid.uuid4().hex
        with self.lock:
            self.answers[answer_id] = (body, step)
            while len(self.answers) > _MAX_STORED_ANSWERS:
                self.answers.popitem(last=False)
        return answer_id

    def stored(self, answer_id: str) -> tuple[dict[str, Any], int] | None:
        with self.lock:
            return self.answers.get(answer_id)

    def record(self, call: Call) -> None:
        with self.lock:
            self.log.append(call)

    def calls(self, op: str | None = None, repository: str | None = None) -> list[Call]:
        with self.lock:
            found = [
                c for c in self.log if (op is None or c.op == op) and (repository is None or c.repository == repository)
            ]
        return sorted(found, key=lambda c: c.time)  # logged when answered; listed in order of arrival

    def clear_calls(self) -> int:
        with self.lock:
            count = len(self.log)
            self.log.clear()
            return count

    def reset(self) -> None:
        with self.lock:
            self.scripts.clear()
            self.answers.clear()
            self.log.clear()


def _paginate(body: dict[str, Any], offset: int, max_results: int) -> tuple[dict[str, Any], bool]:
    """One page of every findings list in the answer; True when more follow."""
    findings = body.get("imageScanFindings")
    if not isinstance(findings, dict):
        return body, False
    page = copy.copy(body)
    page["imageScanFindings"] = dict(findings)
    more = False
    for key in ("findings", "enhancedFindings"):
        items = findings.get(key)
        if isinstance(items, list):
            page["imageScanFindings"][key] = items[offset : offset + max_results]
            more = more or len(items) > offset + max_results
    return page, more


def _token(answer_id: str, offset: int) -> str:
    raw = json.dumps({"a": answer_id, "o": offset}).encode()
    return _TOKEN_PREFIX + base64.urlsafe_b64encode(raw).decode()


def _untoken(token: str) -> tuple[str, int] | None:
    try:
        data = json.loads(base64.urlsafe_b64decode(token[len(_TOKEN_PREFIX) :].encode()))
        return str(data["a"]), int(data["o"])
    except (ValueError, KeyError, TypeError):
        return None


# ---------------------------------------------------------------------------------------------
# The proxy


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    double: EcrDouble

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out on a delay_s step hangs up before its answer: expected, not an error.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as botocore's connection pool expects
    _arrived: float = 0.0
    # Headers and body go out in two writes; with Nagle on, the client's delayed ACK adds ~40 ms a call.
    disable_nagle_algorithm = True
    server: _ProxyServer

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.double.verbose:
            super().log_message(format, *args)

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_GET

    # -- dispatch --------------------------------------------------------------------------

    def _handle(self) -> None:
        self._arrived = time.time()
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            # Fail loudly: botocore's JSON protocols always send Content-Length.
            self._send_json(501, {"error": "the ECR double does not read chunked request bodies"})
            return
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        path = urlsplit(self.path).path
        if path.startswith("/_ecr/"):
            self._control(path, body)
            return
        target = self.headers.get("X-Amz-Target", "")
        if target.startswith(ECR_TARGET_PREFIX):
            self._ecr(target[len(ECR_TARGET_PREFIX) :], body)
            return
        status, headers, answer = self._forward(body)
        if not path.startswith("/moto-api"):  # moto's own API is set-up, not traffic to measure
            ctx = _CallContext(target or f"{self.command} {path}", None, None, None, {})
            self._log(ctx, "moto", status, _error_code(status, answer))
        self._send_raw(status, headers, answer)

    def _ecr(self, op: str, raw: bytes) -> None:
        double = self.server.double
        try:
            request = json.loads(raw or b"{}")
        except ValueError:
            request = {}
        request = request if isinstance(request, dict) else {}
        repository = request.get("repositoryName")
        token = request.get("nextToken")
        ctx = _CallContext(
            op,
            _region(self.headers.get("Authorization", "")) or double.region,
            str(request.get("registryId") or double.account_id),
            repository if isinstance(repository, str) else None,
            _asked_image(request),
            next_token=bool(token),
            caller_account=double.account_id,
        )
        if isinstance(token, str) and token.startswith(_TOKEN_PREFIX):
            self._next_page(ctx, request, token)
            return
        taken = double._take(ctx) if ctx.repository else None
        if taken is None:
            self._pass_through(ctx, raw, None)
            return
        script, step, index = taken
        if step.get("delay_s"):
            time.sleep(step["delay_s"])  # a slow ECR, for client timeouts; this proxy thread just waits
        if not {"status", "error", "response"} & step.keys():
            self._pass_through(ctx, raw, index)
            return
        status, body = self._render(step, ctx, script)
        if status == 200 and op == SCAN_OP:
            max_results = _max_results(request)
            if max_results is None:
                status, body = 400, dict(_BAD_MAX_RESULTS)
            else:
                full = body
                body, more = _paginate(full, 0, max_results)
                if more:
                    body["nextToken"] = _token(double._book.store(full, index), max_results)
        self._log(ctx, "script", status, body.get("__type"), index)
        self._send_aws(status, body)

    def _render(self, step: Mapping[str, Any], ctx: _CallContext, script: _Script) -> tuple[int, dict[str, Any]]:
        if "error" in step:
            code = step["error"]
            message = step["message"] if "message" in step else _default_message(code, ctx)
            return step.get("http", _ERROR_HTTP.get(code, 400)), {"__type": code, "message": message}
        registry_id, repository = ctx.registry_id or "", ctx.repository or ""
        if "status" in step:
            image_id = self._answered_image_id(ctx, script)
            stamp = self.server.double._book.stamp(script)
            return 200, scan_body(
                step, registry_id=registry_id, repository=repository, image_id=image_id, completed_at=stamp
            )
        body = copy.deepcopy(dict(step["response"]))
        if step.get("retarget", True) and ctx.op in _STATUS_OPS:
            # A recorded answer speaks for the image asked about, so the bot sees one consistent digest.
            body.update(registryId=registry_id, repositoryName=repository, imageId=self._answered_image_id(ctx, script))
        return 200, body

    def _answered_image_id(self, ctx: _CallContext, script: _Script) -> dict[str, str]:
        # Asked by digest, ECR echoes the digest only; asked by tag, it adds the digest (AWS examples).
        asked = ctx.image_id
        if asked.get("imageDigest") or not asked.get("imageTag"):
            return dict(asked)
        tag = asked["imageTag"]
        if script.tag == tag and script.digest:
            return {"imageDigest": script.digest, "imageTag": tag}
        double = self.server.double
        digest = double._resolve_digest(ctx.region or double.region, ctx.registry_id or "", ctx.repository or "", tag)
        if script.tag == tag:
            # Fixed from now on, so that later calls by this digest find the same script.
            digest = double._book.set_digest(script, digest)
        return {"imageDigest": digest, "imageTag": tag}

    def _next_page(self, ctx: _CallContext, request: Mapping[str, Any], token: str) -> None:
        # A follow-up page reads the answer the first page came from; it consumes no step.
        parsed = _untoken(token)
        stored = self.server.double._book.stored(parsed[0]) if parsed else None
        max_results = _max_results(request)
        step = stored[1] if stored else None
        if stored is None or parsed is None:
            status, body = 400, {"__type": "InvalidParameterException", "message": "Invalid parameter at 'nextToken'"}
        elif max_results is None:
            status, body = 400, dict(_BAD_MAX_RESULTS)
        else:
            status, (body, more) = 200, _paginate(stored[0], parsed[1], max_results)
            if more:
                body["nextToken"] = _token(parsed[0], parsed[1] + max_results)
        self._log(ctx, "script", status, body.get("__type"), step)
        self._send_aws(status, body)

    def _pass_through(self, ctx: _CallContext, raw: bytes, step: int | None) -> None:
        status, headers, answer = self._forward(raw)
        self._log(ctx, "moto", status, _error_code(status, answer), step)
        self._send_raw(status, headers, answer)

    # -- control routes --------------------------------------------------------------------

    def _control(self, path: str, raw: bytes) -> None:
        double = self.server.double
        route = (self.command, path.rstrip("/"))
        try:
            payload = json.loads(raw) if raw else {}
            if not isinstance(payload, dict):
                raise ValueError("the request body must be a JSON object")
            if route == ("GET", "/_ecr/info"):
                self._send_json(200, double.info())
            elif route == ("POST", "/_ecr/script"):
                digest = double.script(
                    _required(payload, "repository"),
                    steps=_required(payload, "steps"),
                    tag=payload.get("tag"),
                    digest=payload.get("digest"),
                    op=payload.get("op", SCAN_OP),
                    registry_id=payload.get("registry_id"),
                )
                self._send_json(200, {"digest": digest})
            elif route == ("GET", "/_ecr/calls"):
                query = parse_qs(urlsplit(self.path).query)
                calls = double.calls(op=query.get("op", [None])[0], repository=query.get("repository", [None])[0])
                self._send_json(200, {"calls": [asdict(c) for c in calls]})
            elif route == ("DELETE", "/_ecr/calls"):
                self._send_json(200, {"cleared": double.clear_calls()})
            elif route == ("POST", "/_ecr/reset"):
                double.reset(moto=bool(payload.get("moto", False)))
                self._send_json(200, {"ok": True})
            else:
                self._send_json(404, {"error": f"no control route {self.command} {path}"})
        except (ValueError, TypeError) as exc:
            self._send_json(400, {"error": str(exc)})

    # -- wire ------------------------------------------------------------------------------

    def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        host, port = self.server.double._moto_address
        conn = http.client.HTTPConnection(host, port, timeout=60)
        try:
            # The request goes on as it came: same method, path, headers (Host included) and body.
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in _HOP_BY_HOP:
                    conn.putheader(name, value)
            conn.endheaders(body or None)
            response = conn.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            conn.close()

    def _send_raw(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response_only(status)
        for name, value in headers:
            lower = name.lower()
            if lower in _HOP_BY_HOP or (lower == "content-length" and self.command != "HEAD"):
                continue
            self.send_header(name, value)
        if self.command != "HEAD":
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self.end_headers()

    def _send_aws(self, status: int, body: Mapping[str, Any]) -> None:
        # AWS JSON 1.1 wire shape; botocore reads the error code from "__type".
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        if "__type" in body:
            self.send_header("x-amzn-ErrorType", str(body["__type"]))
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _send_json(self, status: int, body: Mapping[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _log(
        self, ctx: _CallContext, answered_by: str, status: int, error: str | None, step: int | None = None
    ) -> None:
        # Called before the answer is written: a client that got its answer always finds its call logged.
        image = ctx.image_id.get("imageTag") or ctx.image_id.get("imageDigest")
        call = Call(
            ctx.op,
            ctx.repository,
            image,
            ctx.registry_id,
            ctx.region,
            self._arrived,
            answered_by,
            status,
            error,
            ctx.next_token,
            step,
        )
        self.server.double._book.record(call)


def _asked_image(request: Mapping[str, Any]) -> dict[str, str]:
    image_id = request.get("imageId")
    if image_id is None:
        # DescribeImages / BatchGetImage name images in a list; one image is scriptable, more are not.
        ids = request.get("imageIds")
        image_id = ids[0] if isinstance(ids, list) and len(ids) == 1 else None
    if not isinstance(image_id, dict):
        return {}
    return {k: v for k, v in image_id.items() if k in ("imageTag", "imageDigest") and isinstance(v, str) and v}


def _max_results(request: Mapping[str, Any]) -> int | None:
    value = request.get("maxResults", 100)  # ECR's default page size
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1000:
        return None
    return value


def _region(authorization: str) -> str | None:
    match = _CREDENTIAL_SCOPE.search(authorization)
    return match.group(1) if match else None


def _error_code(status: int, body: bytes) -> str | None:
    if status < 400:
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return str(status)  # e.g. moto's IAM refusals: HTTP 403 with an XML body
    code = data.get("__type") if isinstance(data, dict) else None
    return str(code).rsplit("#", 1)[-1] if code else str(status)


def _required(payload: Mapping[str, Any], key: str) -> Any:
    if key not in payload:
        raise ValueError(f"missing {key!r}")
    return payload[key]


# ---------------------------------------------------------------------------------------------
# Set-up helpers shared by the in-process double and the remote control


class _Helpers:
    """Set-up (repositories, images, scans, injected results) through some boto3 client."""

    region: str
    account_id: str

    def _setup_client(self, region: str | None) -> Any:
        raise NotImplementedError

    def _moto_api(self, path: str, payload: Mapping[str, Any]) -> None:
        raise NotImplementedError

    def digest_of(self, repository: str, tag: str, region: str | None = None) -> str | None:
        """The digest moto holds for repository:tag, or None."""
        return self._lookup_digest(region or self.region, self.account_id, repository, tag)

    def _lookup_digest(self, region: str, registry_id: str, repository: str, tag: str) -> str | None:
        try:
            answer = self._setup_client(region).describe_images(
                registryId=registry_id, repositoryName=repository, imageIds=[{"imageTag": tag}]
            )
        except ClientError:
            return None
        details = answer.get("imageDetails") or []
        return details[0].get("imageDigest") if details else None

    def create_repository(
        self, name: str, scan_on_push: bool = False, mutability: str = "MUTABLE", region: str | None = None
    ) -> dict[str, Any]:
        """Create a repository in moto; returns ECR's repository object."""
        return self._setup_client(region).create_repository(
            repositoryName=name,
            imageTagMutability=mutability,
            imageScanningConfiguration={"scanOnPush": scan_on_push},
        )["repository"]

    def push_image(self, repository: str, tag: str, region: str | None = None) -> str:
        """Put an image with a unique, valid manifest; returns its digest. moto starts no scan for it."""
        nonce = uuid.uuid4().hex
        layer = "sha256:" + hashlib.sha256(f"layer:{repository}:{tag}:{nonce}".encode()).hexdigest()
        config = "sha256:" + hashlib.sha256(f"config:{nonce}".encode()).hexdigest()
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 1469, "digest": config},
            "layers": [
                {"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 2811478, "digest": layer}
            ],
        }
        answer = self._setup_client(region).put_image(
            repositoryName=repository, imageManifest=json.dumps(manifest), imageTag=tag
        )
        return answer["image"]["imageId"]["imageDigest"]

    def start_scan(
        self, repository: str, tag: str | None = None, digest: str | None = None, region: str | None = None
    ) -> dict[str, Any]:
        """moto's StartImageScan: afterwards moto answers COMPLETE (its canned or injected result)."""
        return self._setup_client(region).start_image_scan(repositoryName=repository, imageId=_image_id(tag, digest))

    def inject_results(
        self,
        repository: str,
        step: Mapping[str, Any],
        *,
        tag: str | None = None,
        digest: str | None = None,
        region: str | None = None,
    ) -> dict[str, Any]:
        """Give moto the answer a status step stands for (moto binds it to the first image that asks).

        Unlike a script it is moto's own behaviour: fixed once bound, ScanNotFound until a scan starts.
        """
        checked = normalize_steps([step], SCAN_OP)[0]
        if "status" not in checked:
            raise ValueError("inject_results takes a status step")
        if tag and not digest:
            digest = self.digest_of(repository, tag, region)  # as ECR would answer a call by tag
        image_id = _image_id(tag, digest)
        body = scan_body(checked, registry_id=self.account_id, repository=repository, image_id=image_id)
        self._moto_api(
            "/moto-api/static/ecr/scan-finding-results",
            {"results": [body], "region": region or self.region, "account_id": self.account_id},
        )
        return body


def _image_id(tag: str | None, digest: str | None) -> dict[str, str]:
    if not tag and not digest:
        raise ValueError("name the image by tag or digest")
    return {k: v for k, v in (("imageTag", tag), ("imageDigest", digest)) if v}


def _dummy_client(endpoint_url: str, region: str, attempts: int = 1, **config: Any) -> Any:
    return boto3.client(
        "ecr",
        region_name=region,
        endpoint_url=endpoint_url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # moto's dummy credentials
        config=Config(retries={"total_max_attempts": attempts}, **config),
    )


def _post_json(url: str, payload: Mapping[str, Any], method: str = "POST") -> Any:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            data = response.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        raise ValueError(f"{method} {url} -> HTTP {exc.code}: {detail}") from None
    return json.loads(data) if data else None


# ---------------------------------------------------------------------------------------------
# Public entry points


class EcrDouble(_Helpers):
    """A moto server (its own child process, so doubles never share state) behind a scripting proxy.

    The proxy runs in a thread of this process. Point boto3 at `endpoint_url`, or give a subprocess
    `env()`.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        region: str = DEFAULT_REGION,
        account_id: str = DEFAULT_ACCOUNT,
        verbose: bool = False,
    ) -> None:
        self.host, self.port, self.region, self.account_id, self.verbose = host, port, region, account_id, verbose
        self._book = _Book()
        self._moto: subprocess.Popen[bytes] | None = None
        self._moto_errors: Any = None  # the child's stderr, read if it fails to start
        self._moto_address: tuple[str, int] = ("127.0.0.1", 0)
        self._proxy: _ProxyServer | None = None
        self._thread: threading.Thread | None = None
        self._clients: dict[str, Any] = {}
        self._clients_lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> EcrDouble:
        if self._proxy is not None:
            return self
        self._moto_address = ("127.0.0.1", self._start_moto())
        try:
            self._proxy = _ProxyServer((self.host, self.port), _ProxyHandler)
        except OSError:
            self.stop()  # e.g. the port is taken: don't leave moto running
            raise
        self._proxy.double = self
        self._thread = threading.Thread(
            target=self._proxy.serve_forever, kwargs={"poll_interval": 0.1}, name="ecr-double-proxy", daemon=True
        )
        self._thread.start()
        return self

    def _start_moto(self) -> int:
        errors = self._moto_errors = None if self.verbose else tempfile.TemporaryFile()
        self._moto = subprocess.Popen(
            [sys.executable, "-c", _MOTO_CHILD, "verbose" if self.verbose else "quiet"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors,
        )
        assert self._moto.stdout is not None
        line = self._moto.stdout.readline().strip()
        if not line.isdigit():
            self._moto.kill()
            self._moto.wait()
            self._moto = None
            detail = b""
            if errors is not None:
                errors.seek(0)
                detail = errors.read()[-2000:]
            raise RuntimeError(f"the moto server did not start: {detail.decode(errors='replace')}")
        return int(line)

    def stop(self) -> None:
        if self._proxy is not None:
            self._proxy.shutdown()
            self._proxy.server_close()
            self._proxy = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._moto is not None:
            assert self._moto.stdin is not None and self._moto.stdout is not None
            self._moto.stdin.close()  # the child's signal to exit
            try:
                self._moto.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._moto.kill()
                self._moto.wait()
            self._moto.stdout.close()
            self._moto = None
        if self._moto_errors is not None:
            self._moto_errors.close()
            self._moto_errors = None
        with self._clients_lock:
            self._clients.clear()  # they point at this moto's port

    def __enter__(self) -> EcrDouble:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- where it is -----------------------------------------------------------------------

    @property
    def endpoint_url(self) -> str:
        if self._proxy is None:
            raise RuntimeError("the ECR double is not started")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self._proxy.server_address[1]}"

    @property
    def moto_url(self) -> str:
        return f"http://{self._moto_address[0]}:{self._moto_address[1]}"

    def info(self) -> dict[str, str]:
        return {
            "endpoint_url": self.endpoint_url,
            "moto_url": self.moto_url,
            "region": self.region,
            "account_id": self.account_id,
        }

    def env(self) -> dict[str, str]:
        """Environment for a process (a Celery worker) whose boto3 should talk to this double."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": self.region,
        }

    def client(self, region: str | None = None, attempts: int = 1, **config: Any) -> Any:
        """A boto3 ECR client through the proxy; one attempt, so a test sees every scripted answer."""
        return _dummy_client(self.endpoint_url, region or self.region, attempts, **config)

    # -- scripting -------------------------------------------------------------------------

    def script(
        self,
        repository: str,
        *,
        steps: Sequence[Mapping[str, Any]],
        tag: str | None = None,
        digest: str | None = None,
        op: str = SCAN_OP,
        registry_id: str | None = None,
    ) -> str | None:
        """Answer `op` for this image (or, with neither tag nor digest, the whole repository) from steps.

        One step per call (follow-up pages excluded); the last repeats. A tag script also answers calls
        by that image's digest: given, or looked up in moto (now or at the first call), or derived from
        the tag when moto has no such image. Returns the digest when already known.
        """
        if not isinstance(repository, str) or not repository:
            raise ValueError("repository must be a non-empty string")
        if not isinstance(op, str) or not op:
            raise ValueError("op must be an ECR operation name")
        if registry_id is not None and not re.fullmatch(r"\d{12}", str(registry_id)):
            raise ValueError(f"registry_id must be 12 digits, got {registry_id!r}")
        normalized = normalize_steps(steps, op)
        if tag and not digest:
            digest = self._lookup_digest(self.region, registry_id or self.account_id, repository, tag)
        script = _Script(op, repository, tag or None, digest or None, registry_id, normalized)
        self._book.add(script)
        return script.digest

    def calls(self, op: str | None = None, repository: str | None = None) -> list[Call]:
        """Answered requests through the proxy (not set-up helpers, not /moto-api), by arrival time.

        A call is logged as its answer goes out, so one still sleeping in a `delay_s` step is not here yet.
        """
        return self._book.calls(op, repository)

    def clear_calls(self) -> int:
        return self._book.clear_calls()

    def reset(self, moto: bool = False) -> None:
        """Forget scripts, paged answers and the call log; with moto=True also this double's moto state."""
        self._book.reset()
        if moto:
            _post_json(f"{self.moto_url}/moto-api/reset", {})

    # -- internals used by the proxy -------------------------------------------------------

    def _take(self, ctx: _CallContext) -> tuple[_Script, dict[str, Any], int] | None:
        op, registry_id, repository = ctx.op, ctx.registry_id or self.account_id, ctx.repository or ""
        tag, digest = ctx.image_id.get("imageTag"), ctx.image_id.get("imageDigest")
        if digest and not self._book.has_exact(op, registry_id, repository, tag, digest):
            # Maybe an image scripted by tag whose digest wasn't known yet: look those up in moto.
            for script in self._book.unresolved(op, repository):
                if self._lookup_digest(ctx.region or self.region, registry_id, repository, script.tag or "") == digest:
                    self._book.set_digest(script, digest)
        return self._book.take(op, registry_id, repository, tag, digest)

    def _resolve_digest(self, region: str, registry_id: str, repository: str, tag: str) -> str:
        found = self._lookup_digest(region, registry_id, repository, tag)
        # No such image in moto: a stable digest derived from the name, so tag and digest still agree.
        return found or "sha256:" + hashlib.sha256(f"{registry_id}/{repository}:{tag}".encode()).hexdigest()

    def _setup_client(self, region: str | None) -> Any:
        # Straight to moto, not through the proxy: set-up is not traffic the call log should count.
        region = region or self.region
        with self._clients_lock:
            if region not in self._clients:
                self._clients[region] = _dummy_client(self.moto_url, region)
            return self._clients[region]

    def _moto_api(self, path: str, payload: Mapping[str, Any]) -> None:
        _post_json(f"{self.moto_url}{path}", payload)


class EcrControl(_Helpers):
    """The same control, from another process, through the proxy's /_ecr/ routes."""

    def __init__(self, endpoint_url: str, region: str = DEFAULT_REGION, account_id: str = DEFAULT_ACCOUNT) -> None:
        self.endpoint_url, self.region, self.account_id = endpoint_url.rstrip("/"), region, account_id

    def script(
        self,
        repository: str,
        *,
        steps: Sequence[Mapping[str, Any]],
        tag: str | None = None,
        digest: str | None = None,
        op: str = SCAN_OP,
        registry_id: str | None = None,
    ) -> str | None:
        payload = {
            "repository": repository,
            "steps": list(steps),
            "tag": tag,
            "digest": digest,
            "op": op,
            "registry_id": registry_id,
        }
        return _post_json(f"{self.endpoint_url}/_ecr/script", payload)["digest"]

    def calls(self, op: str | None = None, repository: str | None = None) -> list[Call]:
        query = urlencode({k: v for k, v in (("op", op), ("repository", repository)) if v is not None})
        url = f"{self.endpoint_url}/_ecr/calls" + (f"?{query}" if query else "")
        with urllib.request.urlopen(url, timeout=30) as response:
            return [Call(**c) for c in json.loads(response.read())["calls"]]

    def clear_calls(self) -> int:
        return _post_json(f"{self.endpoint_url}/_ecr/calls", {}, method="DELETE")["cleared"]

    def reset(self, moto: bool = False) -> None:
        _post_json(f"{self.endpoint_url}/_ecr/reset", {"moto": moto})

    def client(self, region: str | None = None, attempts: int = 1, **config: Any) -> Any:
        return _dummy_client(self.endpoint_url, region or self.region, attempts, **config)

    def _setup_client(self, region: str | None) -> Any:
        return self.client(region)

    def _moto_api(self, path: str, payload: Mapping[str, Any]) -> None:
        _post_json(f"{self.endpoint_url}{path}", payload)  # the proxy forwards /moto-api/ to moto


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fakes.ecr", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5555, help="proxy port (0: any free port)")
    parser.add_argument("--region", default=DEFAULT_REGION)
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = parser.parse_args(argv)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    with EcrDouble(host=args.host, port=args.port, region=args.region, verbose=args.verbose) as double:
        print(f"AWS_ENDPOINT_URL={double.endpoint_url}", flush=True)
        print(
            f"ECR double: {double.endpoint_url} (moto at {double.moto_url}); control: "
            f"{double.endpoint_url}/_ecr/{{info,script,calls,reset}}",
            flush=True,
        )
        try:
            while not stopped.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
