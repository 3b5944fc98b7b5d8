"""Command line: `check` gates a pipeline job on an image's ECR scan; `doctor` finds setup mistakes."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import NoReturn

from bot.core.errors import ConfigError
from bot.core.markdown import clean
from bot.core.models import CONFIG_ERROR_EXIT, Reason
from bot.logs import env_secrets, redact

EXIT_ERROR = Reason.ERROR.exit_code
EXIT_CODES = (
    "0 passed, 1 blocked, 2 scan failed/unsupported/findings unavailable, 3 setup or config "
    "(scan_not_found, access_denied, image_not_found, repository_not_found), 4 timeout, 5 error"
)

Clock = Callable[[], float]
Sleep = Callable[[float], None]


class UsageError(Exception):
    """Bad command-line arguments: exit 3 like any other configuration mistake, not argparse's 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ecr-scan-gate", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    check = sub.add_parser(
        "check",
        help="wait for an image's ECR scan and gate on it",
        description=f"Wait for an image's ECR scan and gate on it. Exit codes: {EXIT_CODES}.",
    )
    check.add_argument("--repository", help="ECR repository name (env ECR_REPO)")
    check.add_argument("--tag", help="image tag (env IMAGE_TAG)")
    check.add_argument("--digest", help="image digest sha256:…; wins over the tag")
    check.add_argument("--registry-id", help="12-digit account owning the registry (default: from ECR_REGISTRY)")
    check.add_argument("--region", help="AWS region (default: from ECR_REGISTRY, config, AWS_REGION)")
    check.add_argument("--fail-on", help="blocking severities, commas or spaces (env FAIL_ON_SEVERITY)")
    check.add_argument(
        "--policy",
        metavar="FILE",
        help="a [policy] table in the repo file format, e.g. .gitlab/ecr-scan-gate.toml (exceptions, fixable, CVSS)",
    )
    check.add_argument("--interval", type=float, help="seconds between polls (default 15)")
    check.add_argument("--timeout", type=float, help="seconds to wait for a final scan (default 600)")
    check.add_argument("--not-found-grace", type=float, help="seconds to re-ask after ScanNotFound/ImageNotFound")
    check.add_argument("--dotenv", metavar="FILE", help="write VULN_*, SCAN_REASON, IMAGE_DIGEST for later jobs")
    check.add_argument("--json", action="store_true", help="print the verdict as one JSON object on stdout")
    check.add_argument(
        "--gitlab-report",
        metavar="FILE",
        help="write a GitLab container scanning report (artifacts:reports:container_scanning), also on failure",
    )
    check.add_argument("--sarif", metavar="FILE", help="write the findings as SARIF 2.1.0, also on failure")
    check.add_argument(
        "--sarif-path",
        metavar="PATH",
        help="the repository file SARIF results point at, e.g. the image's Dockerfile (default Dockerfile)",
    )
    check.add_argument("--config", help="optional TOML config (env ECR_GATE_CONFIG); flags override it")
    doctor = sub.add_parser("doctor", help="check the GitLab and ECR setup; exit 0 only when nothing fails")
    doctor.add_argument("--config", help="TOML config (default $ECR_GATE_CONFIG or config.toml)")
    doctor.add_argument("--start-scan", action="store_true", help="also check ecr:StartImageScan")
    return parser


def main(
    argv: Sequence[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    clock: Clock = time.monotonic,
    sleep: Sleep = time.sleep,
) -> int:
    """Entry point of `python -m bot` and the `ecr-scan-gate` console script; returns the exit code."""
    env = os.environ if env is None else env
    secrets = env_secrets(env)
    try:
        args = build_parser().parse_args(argv)
        if args.command == "check":
            from bot.cli.check import run as check

            return check(args, env, clock, sleep)
        from bot.cli.doctor.main import run as doctor  # python-gitlab is only needed here

        return doctor(args, env)
    except UsageError as exc:
        print(f"{exc}\nusage: ecr-scan-gate {{check,doctor}} --help", file=sys.stderr)
        return CONFIG_ERROR_EXIT
    except ConfigError as exc:
        print("ecr-scan-gate: " + str(exc), file=sys.stderr)
        return CONFIG_ERROR_EXIT
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, never a traceback
        logging.getLogger(__name__).debug("unexpected error", exc_info=True)
        message = clean(redact(f"{type(exc).__name__}: {exc}", secrets), 300)
        print(f"ecr-scan-gate: error (exit {EXIT_ERROR}): {message}", file=sys.stderr)
        return EXIT_ERROR
