"""Which images a pipeline gates (its jobs decide), and how a gate ends when its push never happens."""

from __future__ import annotations

import pytest

from bot.core.events import Build
from bot.core.models import Reason
from bot.core.plan import NO_BUILDS, NoPush, NotGated, plan_pipeline, without_push
from bot.core.settings import ImageSettings

API = ImageSettings(repository="api", push_job="push-api")
WORKER = ImageSettings(repository="worker", push_job="push-worker")
DB = ImageSettings(repository="db", push_job="push-db", required=True)


def job(name: str, status: str, id: int = 1, allow_failure: bool = False) -> Build:  # noqa: A002
    return Build(id=id, name=name, stage="push", status=status, allow_failure=allow_failure)


def test_only_images_whose_push_job_is_in_the_pipeline_are_gated() -> None:
    plan = plan_pipeline(
        [API, WORKER, DB], [job("lint", "success"), job("push-api", "created", 2), job("push-db", "manual", 3)]
    )
    assert plan.gated == (API, DB)
    assert plan.not_gated == (NotGated("worker", "push-worker"),)
    assert (plan.missing_required, plan.why_all) == ((), "")


def test_a_required_image_without_its_push_job_is_missing_not_silently_ungated() -> None:
    plan = plan_pipeline([API, DB], [job("docs", "success")])
    assert plan.gated == () and plan.not_gated == (NotGated("api", "push-api"),)
    assert plan.missing_required == (DB,)


def test_no_job_list_gates_everything_and_says_why() -> None:
    plan = plan_pipeline([API, WORKER], [])
    assert plan.gated == (API, WORKER) and plan.not_gated == ()
    assert plan.why_all == NO_BUILDS
    assert plan_pipeline([], []).why_all == ""


def test_push_may_still_happen_while_jobs_may_run() -> None:
    assert without_push("push-api", [job("build", "running"), job("push-api", "created", 2)], "running") is None
    assert without_push("push-api", [job("push-api", "success")], "running") is None
    # a delayed job will run by itself
    assert without_push("push-api", [job("push-api", "scheduled")], "running") is None


def test_a_manual_push_job_nobody_ran_is_skipped_once_the_rest_is_done() -> None:
    builds = [job("test", "success"), job("push-api", "manual", 2)]
    assert without_push("push-api", builds) == NoPush(
        Reason.SKIPPED, "the pipeline finished without running push-api (manual)"
    )
    # the pipeline's own finished status decides too, with or without the job
    assert without_push("push-api", [job("test", "success")], "success") == NoPush(
        Reason.SKIPPED, "the pipeline finished without running push-api (not in the pipeline)"
    )


@pytest.mark.parametrize(
    ("builds", "status", "why"),
    [
        ([job("push-api", "failed")], "running", "push-api failed: nothing was pushed"),
        ([job("push-api", "canceled")], "running", "push-api canceled: nothing was pushed"),
        ([job("push-api", "created")], "canceled", "pipeline canceled before push-api succeeded"),
        (
            [job("test", "failed"), job("push-api", "skipped", 2)],
            "running",
            "pipeline failed (test) before push-api ran",
        ),
    ],
)
def test_a_failed_or_canceled_pipeline_cancels(builds: list[Build], status: str, why: str) -> None:
    assert without_push("push-api", builds, status) == NoPush(Reason.CANCELED, why)


def test_the_newest_try_counts_and_allowed_failures_do_not_fail_the_pipeline() -> None:
    retried = [job("push-api", "failed", 1), job("push-api", "running", 2)]
    assert without_push("push-api", retried, "running") is None
    lenient = [job("lint", "failed", 1, allow_failure=True), job("push-api", "manual", 2)]
    assert without_push("push-api", lenient).reason is Reason.SKIPPED  # type: ignore[union-attr]
