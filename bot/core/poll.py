"""Pure: the one polling rule: a gate's progress + an ECR answer (or none) + the time -> ask again | finish."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, replace
from datetime import date

from bot.core.errors import TransientError
from bot.core.markdown import clean
from bot.core.models import Image, Phase, Reason, ScanResult, Verdict, epoch_of
from bot.core.policy import Policy, decide, failed_verdict
from bot.core.risk import finding_key, utc_day
from bot.core.settings import ScanSettings

# Not-found answers can be ECR's eventual consistency right after a push; only these are asked again.
GRACE_REASONS = frozenset({Reason.SCAN_NOT_FOUND, Reason.IMAGE_NOT_FOUND})
# ECR's clock and the worker's differ by a little: a scan completed up to this long before the new scan was
# asked for is taken as the new one. An old scan a rescan must not read is a day old, not 30 s.
CLOCK_SKEW_S = 30.0
STALE = " (from before the rescan)"  # added to the ECR status of an old scan's COMPLETE


@dataclass(frozen=True)
class Progress:
    """How far one gate's polling has got; the bot keeps it in Redis, the CLI gate in memory."""

    polling_since: float = 0.0  # when the push was seen to succeed: the grace and the deadline count from here
    deadline: float = 0.0
    attempts: int = 0  # ECR answers and transient errors so far
    failures: int = 0  # transient errors in a row: the backoff's exponent
    ecr_status: str = ""  # the last status or error code ECR answered
    last_error: str = ""  # the last transient error, for the timeout's text
    # The reason of the last not-found answer that came within the grace (and its text): if nothing better
    # comes by the deadline, that is the real cause, not a "timeout".
    withheld: str = ""
    withheld_detail: str = ""
    # Enhanced (Inspector) findings keep arriving after the scan says it is done: the mark of the last
    # complete read, and a verdict only once a second read agrees with it (or at the deadline).
    settled: str = ""
    # When a new scan was asked for (a rescan's StartImageScan; epoch seconds, 0 = none): until it starts,
    # ECR still answers the old scan's COMPLETE, which must not stand for the new one.
    not_before: float = 0.0


@dataclass(frozen=True)
class RateLimited:
    """The shared ECR rate limit said to wait `wait_s` before asking; nothing was asked."""

    wait_s: float


# What one run learned: ECR's (classified) answer, a transient error, the rate limiter's "not yet", or
# None when nothing can be asked (the sweep finishing a gate whose poll task was lost).
Answer = ScanResult | TransientError | RateLimited | None


@dataclass(frozen=True)
class Wait:
    """Ask ECR again after `after_s` seconds, for `image` (pinned to its digest once ECR named one)."""

    after_s: float
    image: Image
    progress: Progress


@dataclass(frozen=True)
class Finish:
    """The gate is decided: post this verdict."""

    verdict: Verdict
    image: Image
    progress: Progress


Step = Wait | Finish


def start(now: float, scan: ScanSettings) -> Progress:
    """The progress of a gate whose push was just seen: the whole timeout is ahead of it."""
    return Progress(polling_since=now, deadline=now + scan.timeout_s)


def backoff(failures: int, cap: float, rng: random.Random) -> float:
    """Full-jitter exponential backoff, so pollers throttled together don't retry together."""
    return rng.uniform(0.5, max(0.5, min(cap, 2.0 * 2 ** min(failures, 16))))


def within_grace(result: ScanResult, elapsed_s: float, grace_s: float) -> bool:
    """True when a not-found answer came too soon after the push to be believed yet."""
    return result.reason in GRACE_REASONS and elapsed_s < grace_s


def older_than_asked(result: ScanResult, not_before: float) -> bool:
    """A COMPLETE from a scan that ended before the new one was asked for (or whose end ECR did not say)."""
    if not not_before or result.phase is not Phase.COMPLETE:
        return False
    completed = epoch_of(result.completed_at)
    return completed is None or completed < not_before - CLOCK_SKEW_S


def findings_mark(result: ScanResult) -> str:
    """What two reads of the same findings share: counts and each finding's id, package, severity and status."""
    rows = sorted(f"{finding_key(f)}|{f.severity.value}|{f.status}" for f in result.findings)
    counts = sorted(f"{sev.value}={n}" for sev, n in result.counts.items())
    return hashlib.sha256("\n".join([*counts, *rows]).encode()).hexdigest()[:32]


def timeout(image: Image, progress: Progress, now: float, how: str = "") -> Finish:
    """The verdict at the deadline: TIMEOUT, unless ECR's last word was image or scan not found (then that), or
    ECR never answered at all (throttled or unreachable throughout: ERROR with the last error)."""
    if progress.withheld in GRACE_REASONS:
        reason = Reason(progress.withheld)
        verdict = failed_verdict(
            reason, image, detail=progress.withheld_detail + how, status=progress.ecr_status, digest=image.digest
        )
        return Finish(verdict, image, progress)
    if progress.last_error and not progress.ecr_status:
        # ECR never answered (throttled or unreachable the whole time): that is the cause, not a slow scan.
        verdict = failed_verdict(
            Reason.ERROR,
            image,
            detail=f"ECR gave no answer in {now - progress.polling_since:.0f}s; last error: {progress.last_error}{how}",
            status="none",
            digest=image.digest,
        )
        return Finish(verdict, image, progress)
    if progress.last_error:
        detail = f"last error: {progress.last_error}"
    else:
        detail = f"last ECR status: {progress.ecr_status or 'no answer'}"
    verdict = failed_verdict(
        Reason.TIMEOUT,
        image,
        detail=detail + how,
        status=progress.ecr_status or "none",
        digest=image.digest,
        waited_s=now - progress.polling_since,
    )
    return Finish(verdict, image, progress)


def next_step(
    image: Image,
    progress: Progress,
    answer: Answer,
    now: float,
    scan: ScanSettings,
    policy: Policy,
    rng: random.Random,
    today: date | None = None,
) -> Step:
    """The next step of a gate after `answer`. Never a pass without a COMPLETE answer read.

    `now` is the epoch (the worker's) or any monotonic clock (the CLI's): only differences are taken. `today`,
    the UTC day exception dates are judged on, defaults to the day of `now` (right for an epoch clock).
    """
    remaining = progress.deadline - now
    if answer is None or isinstance(answer, RateLimited):
        if remaining <= 0:
            return timeout(image, progress, now)
        wait = remaining if answer is None else answer.wait_s + rng.uniform(0, answer.wait_s)
        return Wait(min(wait, remaining), image, progress)
    if isinstance(answer, TransientError):
        failures = progress.failures + 1
        progress = replace(
            progress, attempts=progress.attempts + 1, failures=failures, last_error=clean(str(answer), 200)
        )
        if remaining <= 0:
            return timeout(image, progress, now)
        wait = answer.retry_after if answer.retry_after else backoff(failures, scan.backoff_max_s, rng)
        return Wait(min(wait, remaining), image, progress)
    image = image.pinned(answer.digest)
    early = within_grace(answer, now - progress.polling_since, scan.not_found_grace_s)
    progress = replace(
        progress,
        attempts=progress.attempts + 1,
        failures=0,
        ecr_status=answer.ecr_status,
        last_error="",
        withheld=answer.reason.value if early and answer.reason else "",
        withheld_detail=clean(answer.detail, 300) if early else "",
    )
    if older_than_asked(answer, progress.not_before):
        # The old scan, still answered until the new one starts: asked again, and never the verdict; at the
        # deadline the gate times out saying so.
        progress = replace(progress, ecr_status=answer.ecr_status + STALE)
        if remaining <= 0:
            return timeout(image, progress, now)
        return Wait(min(scan.poll_interval_s, remaining), image, progress)
    # A not-found answer still standing at the deadline is the answer (not a timeout): it says why.
    if answer.is_final and (not early or remaining <= 0):
        if answer.phase is Phase.COMPLETE and answer.enhanced and remaining > 0:
            mark = findings_mark(answer)
            if mark != progress.settled:
                return Wait(min(scan.enhanced_settle_s, remaining), image, replace(progress, settled=mark))
        verdict = decide(answer, policy, image, today or utc_day(now))
        return Finish(
            verdict if verdict.digest or not image.digest else replace(verdict, digest=image.digest), image, progress
        )
    if remaining <= 0:
        return timeout(image, progress, now)
    return Wait(min(scan.poll_interval_s, remaining), image, progress)
