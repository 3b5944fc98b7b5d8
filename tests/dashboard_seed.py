"""A realistic dashboard for the browser tests and the screenshot: gates seeded through the Store, and the browser."""

from __future__ import annotations

import secrets
import shutil
import subprocess
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from bot.adapters.store import Store
from bot.core.gate import Gate
from bot.core.models import Acceptance, Finding, Image, Phase, Reason, ScanResult, Severity, Verdict
from bot.core.policy import Policy, decide, failed_verdict
from bot.core.poll import Progress
from bot.core.repo_config import REPO_FILE

ROOT = Path(__file__).resolve().parent.parent
PROJECTS = {7101: "acme/payments-api", 7102: "acme/web-frontend", 7103: "platform/auth-service", 7104: "data/etl-jobs"}
# What each project's finished gates ended with: passed most, a few blocked, each kind of setup error once or twice.
OUTCOMES: dict[int, tuple[Reason, ...]] = {
    7101: (Reason.PASSED,) * 6 + (Reason.BLOCKED,) * 2 + (Reason.CANCELED,),
    7102: (Reason.PASSED,) * 8 + (Reason.BLOCKED, Reason.SKIPPED),
    7103: (Reason.PASSED,) * 3 + (Reason.ACCESS_DENIED, Reason.TIMEOUT),
    7104: (Reason.PASSED, Reason.SCAN_NOT_FOUND, Reason.SCAN_NOT_FOUND),
}
DETAILS = {
    Reason.ACCESS_DENIED: "User: arn:aws:sts::123456789012:assumed-role/ecr-scan-gate/worker is not authorized to "
    "perform: ecr:DescribeImageScanFindings on resource: auth-service",
    Reason.TIMEOUT: "last ECR status: IN_PROGRESS",
}
FINDINGS = (
    Finding("CVE-2024-6387", Severity.CRITICAL, package="openssh-server", installed_version="1:9.2p1-2"),
    Finding("CVE-2023-44487", Severity.HIGH, package="nghttp2", installed_version="1.43.0-1"),
)
CENTRAL_ID, MR_ID, REPO_ID = "CVE-2023-4911", "CVE-2024-2961", "CVE-2024-45490"


def central_exceptions(today: date) -> list[dict[str, Any]]:
    """[[policy.exceptions]] for the config: one expiring soon, one far off (not listed as expiring)."""
    return [
        {"id": CENTRAL_ID, "reason": "glibc tunables are not reachable: no setuid binaries in our images",
         "expires": today + timedelta(days=5), "package": "glibc", "by": "@sec-team"},
        {"id": "CVE-2022-40897", "reason": "setuptools only at build time", "expires": today + timedelta(days=80)},
    ]  # fmt: skip


def _gate(project_id: int, pipeline_id: int, repository: str, created_at: float, policy: Policy | None = None) -> Gate:
    sha = secrets.token_hex(20)
    return Gate(
        project_id=project_id,
        project_path=PROJECTS.get(project_id, f"group/p{project_id}"),
        sha=sha,
        ref="feature/checkout",
        pipeline_id=pipeline_id,
        image=Image(repository, tag=sha[:8], region="eu-west-1"),
        push_job="docker-push",
        status_name=f"ecr-scan-gate/{repository}",
        mr_iid=pipeline_id % 97 + 1,
        created_at=created_at,
        policy=policy,
    )


def _verdict(reason: Reason, image: Image) -> Verdict:
    if reason is Reason.PASSED:
        return decide(ScanResult(Phase.COMPLETE, "COMPLETE", counts={Severity.LOW: 3}), Policy(), image)
    if reason is Reason.BLOCKED:
        counts = {Severity.CRITICAL: 1, Severity.HIGH: 1, Severity.MEDIUM: 4}
        return decide(ScanResult(Phase.COMPLETE, "COMPLETE", counts=counts, findings=FINDINGS), Policy(), image)
    return failed_verdict(reason, image, detail=DETAILS.get(reason, ""), status="IN_PROGRESS", waited_s=600)


def finish(store: Store, gate: Gate, verdict: Verdict, *, posted: bool = True) -> None:
    """A gate's whole life as the worker lives it: recorded, polled, decided, its status and note posted."""
    store.create(gate)
    store.start_polling(gate.key, gate.created_at + 20, gate.created_at + 620)
    assert store.finish(gate.key, verdict)
    if posted:
        store.set_posted(gate.key, verdict.reason.commit_state)
        store.mark_noted(gate.key)
        store.forget_open(gate.key)


def seed(store: Store, now: float, today: date) -> None:
    """Finished gates in four projects, one scanning, one waiting, one stuck, one unposted, and exceptions."""
    # The earliest verdict, its status never posted; the sweep last looked at it 20 min ago.
    unposted = _gate(7104, 39_999, "etl-jobs", now - 3300)
    finish(store, unposted, _verdict(Reason.PASSED, unposted.image), posted=False)
    store.touch(unposted.key, now - 1200)
    pipeline = 40_000
    for project_id, reasons in OUTCOMES.items():
        for i, reason in enumerate(reasons):
            pipeline += 1
            repository = PROJECTS[project_id].rsplit("/", 1)[1] if i % 3 else "base-image"
            gate = _gate(project_id, pipeline, repository, now - 3600 + pipeline % 100 * 30)
            finish(store, gate, _verdict(reason, gate.image))
    held = Acceptance(REPO_ID, "expat is only used to parse our own config", today + timedelta(days=9),
                      package="libexpat1", by="@bob", source=REPO_FILE)  # fmt: skip
    scanning = _gate(7101, pipeline + 1, "payments-api", now - 95, Policy(exceptions=(held,)))
    store.create(scanning)
    gen = store.start_polling(scanning.key, now - 80, now + 520)
    progress = Progress(polling_since=now - 80, deadline=now + 520, attempts=3, ecr_status="IN_PROGRESS")
    store.save_progress(scanning.key, gen, scanning.image.pinned("sha256:" + "ab" * 32), progress, now - 10)
    waiting = _gate(7102, pipeline + 2, "web-frontend", now - 40)
    store.create(waiting)
    stuck = _gate(7103, pipeline + 3, "auth-service", now - 2 * 3600 - 300)
    store.create(stuck)
    store.start_polling(stuck.key, stuck.created_at + 30, stuck.created_at + 630)
    accepted = Acceptance(MR_ID, "iconv is not reachable from the web tier", today + timedelta(days=2),
                          package="libc-bin", by="@alice", source="MR !12 comment")  # fmt: skip
    store.add_exception(7102, accepted)
    store.add_exception(7102, Acceptance("CVE-2021-3711", "expired long ago", today - timedelta(days=3)))


def chromium() -> str | None:
    """Debian's chromium: on PATH, else installed by scripts/ensure-chromium.sh; None when neither works."""
    found = shutil.which("chromium")
    if found:
        return found
    try:
        subprocess.run(["sh", str(ROOT / "scripts" / "ensure-chromium.sh")], check=True, timeout=900)
    except (subprocess.SubprocessError, OSError):
        return None
    return shutil.which("chromium")
