"""`check`: poll one image's ECR scan with the bot's polling rule, then gate the pipeline job on the verdict."""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import replace

from bot.adapters.ecr import EcrApi, EcrCallError
from bot.cli.main import Clock, Sleep
from bot.cli.options import CheckOptions, check_options
from bot.cli.output import Outcome, as_json, failure_lines, summary_lines, write_dotenv
from bot.cli.reports import crashed, now, write_config_error_reports, write_reports
from bot.core import dotenv
from bot.core import poll as rule
from bot.core.coverage import coverage
from bot.core.errors import ConfigError, TransientError
from bot.core.markdown import clean
from bot.core.models import CONFIG_ERROR_EXIT, Image, Phase, Reason, ScanResult, Verdict
from bot.core.policy import scan_not_found_explained
from bot.core.risk import utc_day
from bot.core.settings import MIN_SAFE_INTERVAL_S, too_fast


def run_check(
    opts: CheckOptions,
    api: EcrApi,
    progress: Callable[[str], None],
    *,
    clock: Clock = time.monotonic,
    sleep: Sleep = time.sleep,
    rng: random.Random | None = None,
) -> Outcome:
    """Ask ECR until the polling rule finishes the gate: one DescribeImageScanFindings call per attempt."""
    rng = rng or random.Random()  # noqa: S311 - jitter, not crypto
    start = clock()
    image, state = opts.image, rule.start(start, opts.scan)
    while True:
        answer: ScanResult | TransientError
        try:
            answer = api.scan_findings(image, opts.scan.page_size)
        except TransientError as exc:
            answer = exc
        now = clock()
        # The clock is monotonic (tests fake it): exception dates are judged on the wall clock's UTC day.
        step = rule.next_step(image, state, answer, now, opts.scan, opts.policy, rng, utc_day(time.time()))
        line = _progress_line(step, answer, now - start)
        if line:
            progress(line)
        if isinstance(step, rule.Finish):
            read = answer if isinstance(answer, ScanResult) and answer.phase is Phase.COMPLETE else None
            return Outcome(step.verdict, step.progress.attempts, clock() - start, read)
        image, state = step.image, step.progress
        sleep(step.after_s)


def _progress_line(step: rule.Step, answer: ScanResult | TransientError, elapsed: float) -> str:
    attempt = step.progress.attempts
    if isinstance(answer, TransientError):
        error = step.progress.last_error
        if isinstance(step, rule.Finish):  # every attempt counted in the summary has its line
            return f"attempt {attempt}: {error} (elapsed {elapsed:.0f}s); the time is up"
        return f"attempt {attempt}: {error}; retrying in {step.after_s:.1f}s (elapsed {elapsed:.0f}s)"
    status = clean(answer.ecr_status, 60) or "no status"
    early = answer.is_final and isinstance(step, rule.Wait)
    note = "; ECR may still be catching up after the push, asking again" if early else ""
    return f"attempt {attempt}: {status} (elapsed {elapsed:.0f}s){note}"


def _explained(api: EcrApi, image: Image, verdict: Verdict) -> Verdict:
    """scan_not_found in words that are true: read the repository's and the registry's scanning settings."""
    try:
        repo = api.describe_repository(image)
    except (EcrCallError, TransientError) as exc:
        return scan_not_found_explained(verdict, image, None, clean(str(exc), 200))
    try:
        registry = api.registry_scanning(image)
    except (EcrCallError, TransientError):
        registry = None  # e.g. ecr:GetRegistryScanningConfiguration not granted to the CI role
    return scan_not_found_explained(verdict, image, coverage(image.repository, repo.scan_on_push, registry))


def run(args: argparse.Namespace, env: Mapping[str, str], clock: Clock, sleep: Sleep) -> int:
    """`check`: the exit code of the verdict (README: exit codes); config errors exit 3."""

    def err(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    started = now()
    try:
        opts = check_options(args, env)
    except ConfigError as exc:
        if args.dotenv:
            write_dotenv(args.dotenv, None, dotenv.CONFIG_ERROR_REASON)
        write_config_error_reports(args, env, exc.problems, started)
        err("ecr-scan-gate: " + str(exc))
        if args.json:
            print(
                json.dumps(
                    {"reason": dotenv.CONFIG_ERROR_REASON, "exit_code": CONFIG_ERROR_EXIT, "problems": exc.problems}
                ),
                flush=True,
            )
        return CONFIG_ERROR_EXIT
    out = err if opts.json else (lambda line: print(line, flush=True))
    if too_fast(opts.scan.poll_interval_s):
        err(
            f"ecr-scan-gate: warning: --interval {opts.scan.poll_interval_s:g}s is below {MIN_SAFE_INTERVAL_S:g}s; "
            "ECR throttles sustained polling (15 s is the safe floor)"
        )
    image = opts.image
    out(
        f"checking {image.repository}:{image.tag or image.digest} in {image.region}"
        + (f" (registry {image.registry_id})" if image.registry_id else "")
        + f"; blocking on {'/'.join(opts.policy.fail_on)}; every {opts.scan.poll_interval_s:g}s"
        f" for up to {opts.scan.timeout_s:g}s"
    )
    try:
        outcome = run_check(opts, EcrApi(opts.ecr), out, clock=clock, sleep=sleep)
        if outcome.verdict.reason is Reason.SCAN_NOT_FOUND:
            outcome = replace(outcome, verdict=_explained(EcrApi(opts.ecr), opts.image, outcome.verdict))
    except Exception as exc:
        # Crashed: later jobs still learn why, and GitLab shows a failed scan, not an empty one.
        if opts.dotenv:
            write_dotenv(opts.dotenv, None, Reason.ERROR.value)
        write_reports(opts.reports, opts.image, crashed(opts.image, exc), opts.policy, started)
        raise
    if opts.dotenv:
        write_dotenv(opts.dotenv, outcome.verdict)
    write_reports(opts.reports, opts.image, outcome.verdict, opts.policy, started, outcome.scan)
    for line in summary_lines(opts, outcome):
        out(line)
    if opts.json:
        print(as_json(opts, outcome), flush=True)
    if not outcome.verdict.passed:
        for line in failure_lines(outcome.verdict):
            err(line)
    return outcome.verdict.reason.exit_code
