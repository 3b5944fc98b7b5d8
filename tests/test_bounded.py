"""What reaches Redis is bounded: an event's jobs, a verdict's findings (the totals stay exact)."""

from __future__ import annotations

import json
from datetime import date

from bot.adapters.store import to_hash
from bot.core.events import MAX_BUILDS, event_to_dict, parse_event
from bot.core.gate import Gate
from bot.core.models import Acceptance, Finding, Image, Phase, ScanResult, Severity, dump_verdict
from bot.core.policy import KEPT_FINDINGS, Policy, decide
from tests.fakes.payloads import pipeline_payload


def test_a_pipeline_with_thousands_of_job_tries_keeps_the_newest_of_each_name() -> None:
    builds = [(f"job-{i % 500}", "test", "failed" if i < 8500 else "success", 10_000 + i) for i in range(9000)]
    event = parse_event("Pipeline Hook", pipeline_payload(builds=builds))
    assert event is not None and len(event.builds) == 500
    assert all(b.status == "success" and b.id >= 18_500 for b in event.builds)
    assert len(json.dumps(event_to_dict(event))) < 100_000  # was the whole 9,000: megabytes per task


def test_more_job_names_than_the_cap_is_no_job_list_at_all() -> None:
    builds = [(f"job-{i}-{'x' * 200}", "test", "created", 10_000 + i) for i in range(MAX_BUILDS + 1)]
    event = parse_event("Pipeline Hook", pipeline_payload(builds=builds))
    assert event is not None and event.builds == ()  # every image is then gated (fail closed), nothing copied


def test_a_verdict_of_ten_thousand_findings_stores_what_the_note_can_show() -> None:
    findings = tuple(
        Finding(f"CVE-2024-{i:05d}", Severity.HIGH, package="p" * 300, description="d" * 2000) for i in range(10_000)
    )
    result = ScanResult(Phase.COMPLETE, counts={Severity.HIGH: 10_000}, findings=findings)
    accepted = tuple(Acceptance(f"CVE-2024-{i:05d}", "ok", date(2099, 1, 1)) for i in range(0, 10_000, 2))
    verdict = decide(result, Policy(exceptions=accepted), Image("app"), date(2026, 12, 3))
    assert verdict.blocking_total == 5_000 and len(verdict.blocking) == KEPT_FINDINGS
    assert len(verdict.waived) == KEPT_FINDINGS
    assert all(f.description == "" and len(f.package) == 200 for f in verdict.blocking)
    gate = Gate(1, "g/p", "0" * 40, "main", 1, Image("app"), "push", "s", verdict=verdict)
    assert len(to_hash(gate)["verdict"]) < 600_000  # was 46 MB for 10,000 findings
    assert len(json.dumps(dump_verdict(verdict))) < 600_000
