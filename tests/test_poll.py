"""The one polling rule (bot.core.poll), tested exhaustively: examples for each branch, properties for all inputs."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bot.core import poll
from bot.core.errors import TransientError
from bot.core.models import Finding, Image, Phase, Reason, ScanResult, Severity
from bot.core.policy import Policy
from bot.core.settings import ScanSettings

DIGEST = "sha256:" + "ab" * 32
OTHER_DIGEST = "sha256:" + "cd" * 32
IMAGE = Image(repository="app", tag="v1")
SCAN = ScanSettings(poll_interval_s=15, timeout_s=600, not_found_grace_s=60, backoff_max_s=60)
POLICY = Policy()
T0 = 1_000.0


def start(now: float = T0, scan: ScanSettings = SCAN) -> poll.Progress:
    return poll.start(now, scan)


def step(
    answer: poll.Answer,
    at: float,
    progress: poll.Progress | None = None,
    image: Image = IMAGE,
    scan: ScanSettings = SCAN,
    seed: int = 0,
) -> poll.Step:
    return poll.next_step(image, progress or start(scan=scan), answer, T0 + at, scan, POLICY, random.Random(seed))


IN_PROGRESS = ScanResult(Phase.IN_PROGRESS, ecr_status="IN_PROGRESS", digest=DIGEST)
CLEAN = ScanResult(Phase.COMPLETE, ecr_status="COMPLETE", digest=DIGEST, counts={Severity.LOW: 2})
HIGH = Finding("CVE-2023-44487", Severity.HIGH, package="nghttp2")
DIRTY = ScanResult(Phase.COMPLETE, ecr_status="COMPLETE", digest=DIGEST, counts={Severity.HIGH: 1}, findings=(HIGH,))
SCAN_NOT_FOUND = ScanResult(Phase.FINAL, ecr_status="ScanNotFoundException", reason=Reason.SCAN_NOT_FOUND)
IMAGE_NOT_FOUND = ScanResult(Phase.FINAL, ecr_status="ImageNotFoundException", reason=Reason.IMAGE_NOT_FOUND)
FAILED = ScanResult(Phase.FINAL, ecr_status="FAILED", reason=Reason.SCAN_FAILED, detail="layer unreadable")
DENIED = ScanResult(
    Phase.FINAL,
    ecr_status="AccessDeniedException",
    reason=Reason.ACCESS_DENIED,
    detail="ecr:DescribeImageScanFindings: not authorized",
)


# --------------------------------------------------------------------------------------------- examples


def test_start_counts_the_whole_timeout_from_now() -> None:
    assert start() == poll.Progress(polling_since=T0, deadline=T0 + 600)


def test_in_progress_asks_again_after_the_interval_and_pins_the_digest() -> None:
    s = step(IN_PROGRESS, at=0)
    assert isinstance(s, poll.Wait)
    assert s.after_s == 15
    assert s.image.digest == DIGEST and s.image.tag == "v1"
    assert (s.progress.attempts, s.progress.failures, s.progress.ecr_status) == (1, 0, "IN_PROGRESS")


def test_the_last_wait_ends_at_the_deadline_not_past_it() -> None:
    s = step(IN_PROGRESS, at=590)
    assert isinstance(s, poll.Wait) and s.after_s == pytest.approx(10)


def test_complete_and_clean_passes_complete_with_findings_blocks() -> None:
    passed = step(CLEAN, at=30)
    assert isinstance(passed, poll.Finish) and passed.verdict.reason is Reason.PASSED
    assert passed.verdict.digest == DIGEST
    blocked = step(DIRTY, at=30)
    assert isinstance(blocked, poll.Finish) and blocked.verdict.reason is Reason.BLOCKED
    assert blocked.verdict.blocking == (HIGH,)


@pytest.mark.parametrize("answer", [FAILED, DENIED])
def test_final_failures_finish_at_once_with_their_reason(answer: ScanResult) -> None:
    s = step(answer, at=0)
    assert isinstance(s, poll.Finish) and s.verdict.reason is answer.reason
    assert answer.detail in s.verdict.detail


@pytest.mark.parametrize("answer", [SCAN_NOT_FOUND, IMAGE_NOT_FOUND])
def test_not_found_is_asked_again_within_the_grace_then_believed(answer: ScanResult) -> None:
    early = step(answer, at=59)
    assert isinstance(early, poll.Wait) and early.after_s == 15
    late = step(answer, at=60)
    assert isinstance(late, poll.Finish) and late.verdict.reason is answer.reason


def test_not_found_still_standing_at_the_deadline_is_the_answer_not_a_timeout() -> None:
    scan = SCAN.model_copy(update={"timeout_s": 30})  # a deadline inside the grace
    s = step(SCAN_NOT_FOUND, at=30, scan=scan)
    assert isinstance(s, poll.Finish) and s.verdict.reason is Reason.SCAN_NOT_FOUND


def test_in_progress_at_the_deadline_times_out_with_the_last_status() -> None:
    s = step(IN_PROGRESS, at=600)
    assert isinstance(s, poll.Finish) and s.verdict.reason is Reason.TIMEOUT
    assert s.verdict.detail == "last ECR status: IN_PROGRESS"
    assert s.verdict.digest == DIGEST  # pinned by this very answer
    assert "after 600s" in s.verdict.summary


def test_transient_errors_back_off_with_jitter_and_count_in_a_row() -> None:
    progress = start()
    waits = []
    for n in range(1, 6):
        s = step(TransientError("ECR ThrottlingException: slow down"), at=n, progress=progress, seed=n)
        assert isinstance(s, poll.Wait)
        assert s.progress.failures == n and s.progress.attempts == n
        assert 0.5 <= s.after_s <= min(60, 2.0 * 2**n)
        waits.append(s.after_s)
        progress = s.progress
    assert progress.last_error == "ECR ThrottlingException: slow down"
    after = step(IN_PROGRESS, at=10, progress=progress)
    assert after.progress.failures == 0 and after.progress.last_error == ""


def test_retry_after_wins_over_the_backoff() -> None:
    s = step(TransientError("GitLab 429", retry_after=7.0), at=0)
    assert isinstance(s, poll.Wait) and s.after_s == 7.0


def test_no_ecr_answer_in_the_whole_window_is_an_error_naming_the_cause() -> None:
    s = step(TransientError("ECR unreachable: EndpointConnectionError"), at=601)
    assert isinstance(s, poll.Finish) and s.verdict.reason is Reason.ERROR
    assert s.verdict.detail == "ECR gave no answer in 601s; last error: ECR unreachable: EndpointConnectionError"


def test_a_transient_error_at_the_deadline_after_answers_times_out_naming_the_error() -> None:
    waiting = step(IN_PROGRESS, at=10)
    assert isinstance(waiting, poll.Wait)
    s = step(TransientError("ECR ThrottlingException: Rate exceeded"), at=601, progress=waiting.progress)
    assert isinstance(s, poll.Finish) and s.verdict.reason is Reason.TIMEOUT
    assert s.verdict.detail == "last error: ECR ThrottlingException: Rate exceeded"


def test_rate_limited_waits_for_the_token_without_counting_an_attempt() -> None:
    s = step(poll.RateLimited(2.0), at=0)
    assert isinstance(s, poll.Wait)
    assert 2.0 <= s.after_s <= 4.0
    assert s.progress == start()
    ended = step(poll.RateLimited(2.0), at=600)
    assert isinstance(ended, poll.Finish) and ended.verdict.reason is Reason.TIMEOUT


def test_no_answer_waits_for_the_deadline_then_times_out_as_the_sweep_says() -> None:
    s = step(None, at=100)
    assert isinstance(s, poll.Wait) and s.after_s == pytest.approx(500)
    done = step(None, at=700)
    assert isinstance(done, poll.Finish) and done.verdict.reason is Reason.TIMEOUT
    swept = poll.timeout(IMAGE, start(), T0 + 700, how=" (finished by sweep)")
    assert swept.verdict.detail == "last ECR status: no answer (finished by sweep)"


def test_a_pinned_digest_is_never_replaced_and_junk_never_pins() -> None:
    pinned = Image("app", "v1", digest=DIGEST)
    s = step(ScanResult(Phase.IN_PROGRESS, ecr_status="IN_PROGRESS", digest=OTHER_DIGEST), at=0, image=pinned)
    assert s.image.digest == DIGEST
    junk = step(ScanResult(Phase.IN_PROGRESS, ecr_status="IN_PROGRESS", digest="sha256:short"), at=0)
    assert junk.image.digest == ""


def test_the_verdict_carries_the_pinned_digest_when_the_answer_has_none() -> None:
    pinned = Image("app", "v1", digest=DIGEST)
    s = step(FAILED, at=0, image=pinned)
    assert isinstance(s, poll.Finish) and s.verdict.digest == DIGEST


def test_backoff_is_full_jitter_and_capped() -> None:
    rng = random.Random(1)
    assert all(0.5 <= poll.backoff(n, 60, rng) <= min(60, 2 * 2**n) for n in range(40) for _ in range(20))
    assert poll.backoff(0, 60, random.Random(3)) <= 2.0
    assert poll.backoff(10**6, 60, rng) <= 60  # the exponent is capped, no overflow


# ------------------------------------------------------------------------------------------- properties

severities = st.sampled_from(list(Severity))
findings = st.builds(
    Finding,
    id=st.sampled_from(["CVE-1", "CVE-2", "CVE-3"]),
    severity=severities,
    status=st.sampled_from(["ACTIVE", "SUPPRESSED"]),
)
digests = st.sampled_from(["", DIGEST, OTHER_DIGEST, "sha256:junk", "not-a-digest"])
scan_results = st.one_of(
    st.builds(
        ScanResult,
        phase=st.just(Phase.IN_PROGRESS),
        ecr_status=st.sampled_from(["IN_PROGRESS", "ACTIVE"]),
        digest=digests,
    ),
    st.builds(
        ScanResult,
        phase=st.just(Phase.FINAL),
        reason=st.sampled_from(
            [r for r in Reason if r not in (Reason.PASSED, Reason.BLOCKED, Reason.TIMEOUT, Reason.CANCELED)]
        ),
        ecr_status=st.text(max_size=20),
        digest=digests,
    ),
    st.builds(
        ScanResult,
        phase=st.just(Phase.COMPLETE),
        ecr_status=st.just("COMPLETE"),
        digest=digests,
        counts=st.dictionaries(severities, st.integers(0, 5)),
        findings=st.lists(findings, max_size=4).map(tuple),
        # imageScanCompletedAt around the time a rescan asked for a new scan (or missing, or unreadable).
        completed_at=st.one_of(
            st.just(""),
            st.just("not a time"),
            st.floats(T0 - 200, T0 + 200).map(lambda t: str(datetime.fromtimestamp(t, UTC))),
        ),
    ),
)
answers = st.one_of(
    scan_results,
    st.builds(TransientError, st.text(max_size=40), retry_after=st.one_of(st.none(), st.floats(0.1, 120))),
    st.builds(poll.RateLimited, st.floats(0.001, 30)),
    st.none(),
)
progresses = st.builds(
    poll.Progress,
    polling_since=st.just(T0),
    deadline=st.floats(T0, T0 + 1200),
    attempts=st.integers(0, 100),
    failures=st.integers(0, 40),
    ecr_status=st.text(max_size=20),
    last_error=st.text(max_size=40),
    not_before=st.one_of(st.just(0.0), st.floats(T0 - 100, T0 + 100)),  # a merge gate, or a rescan
)
scans = st.builds(
    ScanSettings,
    poll_interval_s=st.floats(1, 60),
    timeout_s=st.floats(1, 1200),
    not_found_grace_s=st.floats(0, 120),
    backoff_max_s=st.floats(1, 120),
)
images = st.builds(
    Image, repository=st.just("app"), tag=st.sampled_from(["v1", ""]), digest=st.sampled_from(["", DIGEST])
)


@settings(max_examples=2000, deadline=None)
@given(images, progresses, answers, st.floats(-100, 1500), scans, st.integers(0, 2**32))
def test_every_step_is_safe(
    image: Image, progress: poll.Progress, answer: poll.Answer, at: float, scan: ScanSettings, seed: int
) -> None:
    now = T0 + at
    s = poll.next_step(image, progress, answer, now, scan, POLICY, random.Random(seed))
    remaining = progress.deadline - now
    # Nothing passes that was not read as COMPLETE (and the policy decides that part).
    if isinstance(s, poll.Finish) and s.verdict.reason is Reason.PASSED:
        assert isinstance(answer, ScanResult) and answer.phase is Phase.COMPLETE
        assert not any(f.severity in POLICY.fail_on and f.active for f in answer.findings)
    # A rescan never takes the old scan's COMPLETE (from before it asked for a new one) for its result.
    stale = isinstance(answer, ScanResult) and poll.older_than_asked(answer, progress.not_before)
    if stale and isinstance(s, poll.Finish):
        assert s.verdict.reason is Reason.TIMEOUT and remaining <= 0
    # A complete or failed-for-good answer is never thrown away for another ask.
    early = isinstance(answer, ScanResult) and poll.within_grace(answer, now - T0, scan.not_found_grace_s)
    if isinstance(answer, ScanResult) and answer.is_final and not early and not stale:
        assert isinstance(s, poll.Finish)
    # At or past the deadline every answer finishes the gate; before it, waits stay inside it.
    if remaining <= 0:
        assert isinstance(s, poll.Finish)
    if isinstance(s, poll.Wait):
        assert 0 <= s.after_s <= remaining
    if isinstance(s, poll.Finish) and s.verdict.reason is Reason.TIMEOUT:
        assert remaining <= 0 and s.verdict.detail.startswith(("last ECR status: ", "last error: "))
    # The digest, once pinned, stays; it only ever pins to a well-formed one.
    if image.digest:
        assert s.image.digest == image.digest
    assert s.image.digest in ("", DIGEST, OTHER_DIGEST)
    assert s.image.repository == image.repository and s.image.tag == image.tag
    # Counting: an ask is one attempt; errors in a row drive the backoff; the rest is untouched.
    asked = isinstance(answer, ScanResult | TransientError)
    assert s.progress.attempts == progress.attempts + (1 if asked else 0)
    if isinstance(answer, TransientError):
        assert s.progress.failures == progress.failures + 1
    elif isinstance(answer, ScanResult):
        assert s.progress.failures == 0
        assert s.progress.ecr_status == answer.ecr_status + (poll.STALE if stale else "")
    else:
        assert s.progress == progress
    assert (s.progress.polling_since, s.progress.deadline) == (progress.polling_since, progress.deadline)
    assert s.progress.not_before == progress.not_before


TICK = 0.05  # a real clock always moves: the least time one ask takes in the simulation below


@settings(max_examples=300, deadline=None)
@given(
    st.lists(answers.filter(lambda a: a is not None), min_size=1, max_size=400),
    scans.filter(lambda s: s.timeout_s <= 120),
    st.integers(0, 2**32),
)
# Found by CI: a deadline just short of a whole number of ticks, which a step-counting loop missed.
@example(
    script=[poll.RateLimited(0.015625)],
    scan=ScanSettings(poll_interval_s=1.0, timeout_s=1.999999999999993, not_found_grace_s=0.0, backoff_max_s=1.0),
    seed=0,
)
def test_following_the_rule_always_ends_by_the_deadline(
    script: list[poll.Answer], scan: ScanSettings, seed: int
) -> None:
    """Drive the rule as the task and the CLI do: ask, follow the wait. It ends, and never after the deadline."""
    rng = random.Random(seed)
    image, progress, now = IMAGE, start(scan=scan), T0
    # The bound is only a guard against a hang: the rule itself must finish on the first ask at or
    # past the deadline. Counting steps instead would fail on float drift (40 x 0.05 added to 1000.0
    # is 1001.9999999999982, still short of a 2 s deadline).
    for n in range(2 * int(scan.timeout_s / TICK) + 10):
        s = poll.next_step(image, progress, script[n % len(script)], now, scan, POLICY, rng)
        if isinstance(s, poll.Finish):
            assert now <= progress.deadline + TICK
            return
        assert now < progress.deadline, "the rule waited at or past the deadline"
        image, progress = s.image, s.progress
        now += max(s.after_s, TICK)
    pytest.fail("the rule never finished")


# --------------------------------------------------------------------------- the real cause at the deadline


@pytest.mark.parametrize("last", [SCAN_NOT_FOUND, IMAGE_NOT_FOUND], ids=["scan", "image"])
@pytest.mark.parametrize(
    "at_deadline",
    [None, poll.RateLimited(1.0), TransientError("ECR 500")],
    ids=["no answer (sweep)", "rate limited", "transient error"],
)
def test_a_not_found_still_standing_at_the_deadline_is_the_verdict(last: ScanResult, at_deadline: poll.Answer) -> None:
    long_grace = ScanSettings(poll_interval_s=15, timeout_s=60, not_found_grace_s=600, backoff_max_s=60)
    waiting = step(last, at=30, scan=long_grace)
    assert isinstance(waiting, poll.Wait) and waiting.progress.withheld == last.reason.value  # type: ignore[union-attr]
    final = step(at_deadline, at=61, progress=waiting.progress, scan=long_grace)
    assert isinstance(final, poll.Finish)
    assert final.verdict.reason is last.reason


def test_an_in_progress_answer_clears_a_withheld_not_found() -> None:
    waiting = step(IMAGE_NOT_FOUND, at=5)
    assert isinstance(waiting, poll.Wait) and waiting.progress.withheld == "image_not_found"
    later = step(IN_PROGRESS, at=20, progress=waiting.progress)
    assert isinstance(later, poll.Wait) and later.progress.withheld == ""
    final = step(None, at=601, progress=later.progress)
    assert isinstance(final, poll.Finish) and final.verdict.reason is Reason.TIMEOUT


# --------------------------------------------------------------------------- a rescan's old COMPLETE


def completed(result: ScanResult, at: float) -> ScanResult:
    """`result` as ECR answers it for a scan that ended at T0 + at (imageScanCompletedAt, as the adapter keeps it)."""
    return replace(result, completed_at=str(datetime.fromtimestamp(T0 + at, UTC)))


def rescan(asked_at: float = 0.0, scan: ScanSettings = SCAN) -> poll.Progress:
    """A rescan's progress: StartImageScan was taken at T0 + asked_at."""
    return replace(start(scan=scan), not_before=T0 + asked_at)


def test_after_a_new_scan_was_asked_for_the_old_scans_complete_is_asked_again_never_the_verdict() -> None:
    old = completed(DIRTY, -86_400)  # yesterday's scan, answered until today's starts
    waiting = step(old, at=1, progress=rescan())
    assert isinstance(waiting, poll.Wait) and waiting.after_s == SCAN.poll_interval_s
    assert waiting.progress.ecr_status == "COMPLETE" + poll.STALE and waiting.progress.attempts == 1
    new = step(completed(CLEAN, 20), at=21, progress=step(IN_PROGRESS, at=16, progress=waiting.progress).progress)
    assert isinstance(new, poll.Finish) and new.verdict.reason is Reason.PASSED


def test_a_scan_ending_within_the_clock_skew_of_the_ask_is_the_new_one() -> None:
    just_before = completed(CLEAN, -poll.CLOCK_SKEW_S + 1)
    assert isinstance(step(just_before, at=1, progress=rescan()), poll.Finish)
    too_early = completed(CLEAN, -poll.CLOCK_SKEW_S - 1)
    assert isinstance(step(too_early, at=1, progress=rescan()), poll.Wait)


def test_a_complete_without_its_end_time_is_not_taken_for_the_new_scan() -> None:
    assert isinstance(step(CLEAN, at=1, progress=rescan()), poll.Wait)  # cannot tell: asked again
    assert isinstance(step(CLEAN, at=1), poll.Finish)  # a merge gate asked for no new scan: it is the scan


def test_only_the_old_scan_until_the_deadline_times_out_saying_so() -> None:
    old = completed(CLEAN, -86_400)
    waiting = step(old, at=590, progress=rescan())
    assert isinstance(waiting, poll.Wait)
    for last in (old, None, poll.RateLimited(1.0)):
        final = step(last, at=601, progress=waiting.progress)
        assert isinstance(final, poll.Finish) and final.verdict.reason is Reason.TIMEOUT, last
        assert "last ECR status: COMPLETE (from before the rescan)" in final.verdict.detail


def test_other_final_answers_are_not_held_back_by_the_ask() -> None:
    for answer in (FAILED, DENIED, SCAN_NOT_FOUND):
        s = step(answer, at=100, progress=rescan())
        assert isinstance(s, poll.Finish) and s.verdict.reason is answer.reason
