"""`check`'s security reports (GitLab container scanning, SARIF): written whole, on every way `check` ends."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

from bot.cli.options import ReportFiles
from bot.cli.output import write_atomic
from bot.core import gitlab_report, sarif
from bot.core.models import Image, Reason, ScanResult, Verdict
from bot.core.policy import Policy, failed_verdict
from bot.core.security_report import GateRun


def now() -> datetime:
    return datetime.now(UTC)


def tool_version() -> str:
    try:
        return metadata.version("ecr-scan-gate")
    except metadata.PackageNotFoundError:
        return "0.0.0+unknown"  # run from a checkout that was never installed


def write_reports(
    files: ReportFiles,
    image: Image,
    verdict: Verdict,
    policy: Policy,
    started: datetime,
    scan: ScanResult | None = None,
) -> None:
    """Write the reports asked for. Without a completed scan they say "failure", never "no vulnerabilities"."""
    if not (files.gitlab or files.sarif):
        return
    run = GateRun(image, verdict, policy, started, now(), tool_version(), scan)
    if files.gitlab:
        write_atomic(files.gitlab, _dump(gitlab_report.render(run)))
    if files.sarif:
        write_atomic(files.sarif, _dump(sarif.render(run, files.sarif_path)))


def crashed(image: Image, exc: BaseException) -> Verdict:
    # Only the exception's type: its text can hold anything (a token in a URL), and the job log has it redacted.
    detail = f"the gate stopped with {type(exc).__name__} before a verdict; the job log has the error"
    return failed_verdict(Reason.ERROR, image, detail=detail, status="none")


def write_config_error_reports(
    args: argparse.Namespace, env: Mapping[str, str], problems: Sequence[str], started: datetime
) -> None:
    """Bad arguments or config: the reports still say why nothing was scanned (names as given, unchecked)."""
    files = ReportFiles.from_args(args)
    if not (files.gitlab or files.sarif):
        return
    image = Image(
        repository=args.repository or env.get("ECR_REPO", "") or "unknown",
        tag=args.tag or env.get("IMAGE_TAG", ""),
        digest=args.digest or "",
    )
    verdict = failed_verdict(
        Reason.CONFIG_ERROR, image, detail="; ".join(problems), status="invalid arguments or config"
    )
    write_reports(files, image, verdict, Policy(), started)


def _dump(document: dict[str, Any]) -> str:
    # ASCII with \u escapes: whatever characters ECR's text holds, the file is plain JSON to every reader.
    return json.dumps(document, indent=2, ensure_ascii=True) + "\n"
