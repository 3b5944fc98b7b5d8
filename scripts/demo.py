"""`make demo`: the bot end to end against the GitLab and ECR doubles.

Part 1: one MR with a clean, a vulnerable and an unscanned image. Part 2: a monorepo whose repo file declares
three images while its pipeline pushes one (one status, two "not gated" lines). Part 3: a repo-file error.
Part 4: the merged image is rescanned a day later, finds a new CVE, and the project gets one GitLab issue.
"""

from __future__ import annotations

import sys
import tempfile
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402

from bot.adapters.queue import make_celery  # noqa: E402
from bot.config import load_settings  # noqa: E402
from tests import configs, harness  # noqa: E402
from tests.fakes.ecr import EcrDouble, basic_finding  # noqa: E402
from tests.fakes.gitlab import FakeGitLab  # noqa: E402
from tests.fakes.payloads import job_payload, pipeline_payload, webhook_headers  # noqa: E402
from tests.stack import free_port  # noqa: E402

PROJECT_ID, PROJECT = 42, "acme/shop"
MR_IID, PIPELINE_ID, SHA = 7, 1001, "4f2a9c1e8b7d6a5f4e3d2c1b0a9f8e7d6c5b4a39"
IMAGES = {  # repository -> (push job, what ECR will say)
    "web": ("push-web", "clean: scanned, only LOW findings"),
    "api": ("push-api", "vulnerable: CRITICAL and HIGH findings, one of them an accepted risk"),
    "worker": ("push-worker", "unscanned: scan on push is off"),
}


def up(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).ok
    except requests.RequestException:
        return False


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def seed_ecr(ecr: EcrDouble) -> None:
    tag = SHA[:8]
    for repo in IMAGES:
        ecr.create_repository(repo, scan_on_push=repo != "worker", mutability="IMMUTABLE")
        ecr.push_image(repo, tag)
    # ECR's scan timeline after a push: IN_PROGRESS for a few polls, then COMPLETE.
    ecr.script(
        "web",
        tag=tag,
        steps=[
            {"status": "IN_PROGRESS"},
            {"status": "IN_PROGRESS"},
            {"status": "COMPLETE", "findings": [basic_finding("CVE-2022-37434", "LOW", "zlib", "1.2.11", "1.2.12")]},
        ],
    )
    ecr.script(
        "api",
        tag=tag,
        steps=[
            {"status": "IN_PROGRESS"},
            {
                "status": "COMPLETE",
                "findings": [
                    basic_finding("CVE-2023-44487", "HIGH", "nghttp2", "1.43.0-1", "1.43.0-1+deb11u1"),
                    basic_finding("CVE-2024-6387", "CRITICAL", "openssh-server", "1:9.2p1-2", "1:9.2p1-2+deb12u3"),
                    basic_finding("CVE-2023-4911", "HIGH", "libc6", "2.36-9", "2.36-9+deb12u3"),
                    basic_finding("CVE-2023-5678", "MEDIUM", "openssl", "3.0.11-1", "3.0.13-1"),
                ],
            },
        ],
    )
    # "worker" gets no script: moto answers ScanNotFoundException, as ECR does when no scan ran.


def seed_gitlab(gitlab: FakeGitLab) -> dict[str, int]:
    gitlab.add_project(PROJECT_ID, PROJECT)
    gitlab.add_merge_request(PROJECT_ID, MR_IID, "feature/checkout", "main", SHA)
    jobs = {job: 5000 + i for i, (job, _) in enumerate(IMAGES.values())}
    gitlab.add_pipeline(
        PROJECT_ID,
        PIPELINE_ID,
        SHA,
        source="merge_request_event",
        merge_request_iid=MR_IID,
        jobs=[{"id": jid, "name": name, "stage": "push", "status": "created"} for name, jid in jobs.items()],
    )
    return jobs


def deliver(url: str, event: str, body: dict) -> None:
    response = requests.post(
        f"{url}/webhook",
        json=body,
        timeout=10,
        headers=webhook_headers(event, harness.WEBHOOK_SECRET) | {"Connection": "close"},
    )
    print(f"   POST /webhook  {event:<13} → {response.status_code} {response.json()}")


def show_statuses(gitlab: FakeGitLab, project_id: int = PROJECT_ID, sha: str = SHA) -> None:
    statuses = sorted(gitlab.latest_statuses(project_id, sha).items())
    for name, status in statuses:
        print(f"   {name:<24} {status['status']:<8} {status['description']}")
    if not statuses:
        print("   (none)")


MONO_ID, MONO, MONO_MR = 43, "acme/monorepo", 8
MONO_FILE = """\
# .gitlab/ecr-scan-gate.toml of acme/monorepo: each image with the CI job that pushes it
[[images]]
repository = "checkout"
push_job = "push-checkout"

[[images]]
repository = "billing"
push_job = "push-billing"

[[images]]
repository = "search"
push_job = "push-search"
"""
BAD_FILE = """\
[[images]]
repository = "checkout"
push_job = "push-checkout"
region = "ap-south-1"

[policy]
fail_on = ["CRITICAL"]
"""


def show_note(gitlab: FakeGitLab, project_id: int, iid: int) -> None:
    notes = gitlab.notes(project_id, iid)
    say(f"Result: the MR note ({len(notes)} note on MR !{iid}, edited in place)")
    print(textwrap.indent(notes[0]["body"], "   │ "))


def monorepo(url: str, gitlab: FakeGitLab, ecr: EcrDouble) -> None:
    """Part 2 and 3: a repo file declares the images; a pipeline gates only those whose push job it has."""
    sha, pipeline, job = "9b1e" + "0" * 36, 2001, 6001
    gitlab.add_project(MONO_ID, MONO)
    gitlab.add_merge_request(MONO_ID, MONO_MR, "feature/checkout-v2", "main", sha)
    jobs = [{"id": job, "name": "push-checkout", "stage": "push", "status": "created"}]
    jobs.append({"id": job + 1, "name": "unit-tests", "stage": "test", "status": "success"})
    gitlab.add_pipeline(MONO_ID, pipeline, sha, source="merge_request_event", merge_request_iid=MONO_MR, jobs=jobs)
    gitlab.set_file(MONO_ID, ".gitlab/ecr-scan-gate.toml", MONO_FILE, sha=sha)
    ecr.create_repository("checkout", scan_on_push=True, mutability="IMMUTABLE")
    ecr.push_image("checkout", sha[:8])
    ecr.script("checkout", tag=sha[:8], steps=[{"status": "IN_PROGRESS"}, {"status": "COMPLETE", "findings": []}])
    say(f"Part 2: {MONO} declares 3 images in .gitlab/ecr-scan-gate.toml; its MR pipeline pushes only checkout")
    print(textwrap.indent(MONO_FILE, "   │ "))
    builds = [(j["name"], j["stage"], j["status"], j["id"]) for j in jobs]
    body = pipeline_payload(
        MONO_ID, MONO, pipeline, sha, "feature/checkout-v2", "running", mr_iid=MONO_MR, builds=builds
    )
    deliver(url, "Pipeline Hook", body)
    gitlab.set_job_status(job, "success")
    ref = f"refs/merge-requests/{MONO_MR}/head"
    deliver(url, "Job Hook", job_payload(MONO_ID, MONO, pipeline, job, "push-checkout", "success", sha, ref))
    harness.wait_for(
        lambda: any("PASSED" in n["body"] for n in gitlab.notes(MONO_ID, MONO_MR)), 60, "the monorepo's note"
    )
    time.sleep(1)
    say("Result: one commit status, for the one image this pipeline built")
    show_statuses(gitlab, MONO_ID, sha)
    show_note(gitlab, MONO_ID, MONO_MR)

    say("Part 3: the next commit's repo file asks for a region and a laxer policy than the central config allows")
    sha2, pipeline2 = "9b1f" + "0" * 36, 2002
    gitlab.set_mr_head(MONO_ID, MONO_MR, sha2)
    gitlab.add_pipeline(MONO_ID, pipeline2, sha2, source="merge_request_event", merge_request_iid=MONO_MR, jobs=[
        {"id": job + 500, "name": "push-checkout", "stage": "push", "status": "created"}])  # fmt: skip
    gitlab.set_file(MONO_ID, ".gitlab/ecr-scan-gate.toml", BAD_FILE, sha=sha2)
    print(textwrap.indent(BAD_FILE, "   │ "))
    body = pipeline_payload(MONO_ID, MONO, pipeline2, sha2, "feature/checkout-v2", "running", mr_iid=MONO_MR,
                            builds=[("push-checkout", "push", "created", job + 500)])  # fmt: skip
    deliver(url, "Pipeline Hook", body)
    harness.wait_for(
        lambda: any("config_error" in n["body"] for n in gitlab.notes(MONO_ID, MONO_MR)), 60, "the config error"
    )
    time.sleep(1)
    say('Result: the pipeline fails closed with one "config error" status; the note lists each problem')
    show_statuses(gitlab, MONO_ID, sha2)
    show_note(gitlab, MONO_ID, MONO_MR)


def rescan(url: str, gitlab: FakeGitLab, ecr: EcrDouble, config: Path, env: dict[str, str]) -> None:
    """Part 4: web merges to main; a day later its rescan finds a new CVE, and the project gets ONE issue."""
    sha, pipeline, job = "7c3d" + "0" * 36, 3001, 7001
    gitlab.add_pipeline(PROJECT_ID, pipeline, sha, source="push", ref="main", jobs=[
        {"id": job, "name": "push-web", "stage": "push", "status": "success"}])  # fmt: skip
    ecr.push_image("web", sha[:8])
    ecr.script("web", tag=sha[:8], steps=[{"status": "COMPLETE", "findings": []}])
    say("Part 4: the merge lands on main; its pipeline pushes web (clean), and [monitor] watches that digest")
    body = pipeline_payload(PROJECT_ID, PROJECT, pipeline, sha, "main", "running", "push", mr_iid=None,
                            builds=[("push-web", "push", "success", job)])  # fmt: skip
    deliver(url, "Pipeline Hook", body)
    harness.wait_for(lambda: (gitlab.latest_statuses(PROJECT_ID, sha).get("ecr-scan-gate/web") or {}).get("status")
                     == "success", 60, "the main pipeline's verdict")  # fmt: skip
    show_statuses(gitlab, PROJECT_ID, sha)
    time.sleep(1)  # the digest joins the watched set just after the verdict
    new_cve = basic_finding("CVE-2026-31337", "CRITICAL", "openssl", "3.0.11-1", "3.0.15-1")
    ecr.script("web", tag=sha[:8], steps=[{"status": "IN_PROGRESS"}, {"status": "COMPLETE", "findings": [new_cve]}])
    say("A day later, beat's daily rescan: StartImageScan, then the same polling rule; a new CRITICAL is published")
    make_celery(load_settings(config, env)).send_task("monitor.rescan_all")
    harness.wait_for(lambda: gitlab.issues(PROJECT_ID), 60, "the monitor issue")
    time.sleep(1)
    issue = gitlab.issues(PROJECT_ID)[0]
    print(f"   issue #{issue['iid']} ({'confidential' if issue['confidential'] else 'public'}, "
          f"labels {issue['labels']}): {issue['title']}")  # fmt: skip
    print(textwrap.indent(issue["description"], "   │ "))


def show_metrics(url: str, worker_port: int) -> None:
    """A few lines of what Prometheus would scrape: the web's /metrics and the worker's port."""
    say("Metrics (README: Operating it): verdicts from the worker's port, deliveries and open gates from /metrics")
    wanted = ("ecr_scan_gate_gates_finished_total", "ecr_scan_gate_deliveries_total", "ecr_scan_gate_open_gates")
    for source in (f"http://127.0.0.1:{worker_port}/metrics", f"{url}/metrics"):
        for line in requests.get(source, timeout=5).text.splitlines():
            if line.startswith(wanted):
                print(f"   {line}")


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="ecr-scan-gate-demo-"))
    gitlab, ecr = FakeGitLab(token=harness.GITLAB_TOKEN).start(), EcrDouble().start()
    procs: list[harness.Process] = []
    run = 0
    try:
        say("Setting up: fake GitLab (MR !7, pipeline 1001), ECR double with three pushed images")
        for repo, (job, story) in IMAGES.items():
            print(f"   {repo:<7} pushed by job {job:<12} → {story}")
        seed_ecr(ecr)
        jobs = seed_gitlab(gitlab)
        config = workdir / "config.toml"
        run = int(time.time())
        configs.write_config(
            config,
            defaults=False,
            gitlab={"url": gitlab.url, "timeout_s": 5},
            redis={"url": "redis://127.0.0.1:6379/0", "key_prefix": f"esg-demo-{run}"},
            policy={
                "fail_on": ["CRITICAL", "HIGH"],
                # An accepted risk: shown in the note's "Accepted risks", never blocking until it ends.
                "exceptions": [
                    {
                        "id": "CVE-2023-4911",
                        "package": "libc6",
                        "reason": "setuid binaries are removed from this image",
                        "expires": datetime.now(UTC).date() + timedelta(days=5),
                        "by": "@security-team",
                    }
                ],
            },
            scan={"poll_interval_s": 2, "timeout_s": 60, "not_found_grace_s": 4, "first_read_after_s": 2},
            sweep={"interval_s": 5, "stuck_after_s": 30},
            monitor={"enabled": True},
            metrics={"worker_port": (metrics_port := free_port()), "bind": "127.0.0.1"},
            projects=[
                {
                    "path": "acme/*",
                    "images": [
                        {"repository": repo, "tag": "{short_sha}", "push_job": job} for repo, (job, _) in IMAGES.items()
                    ],
                }
            ],
        )
        env = harness.stack_env(config, ecr)
        port = free_port()
        say("Starting the bot: gunicorn (web) + Celery worker, on the local Redis")
        procs.append(harness.web_server(env, workdir, port, "--workers", "1").start())
        procs.append(harness.celery_worker(env, workdir, concurrency=4).start())
        url = f"http://127.0.0.1:{port}"
        harness.wait_for(lambda: up(f"{url}/healthz"), 60, "the web process")

        say("GitLab: the MR pipeline starts (Pipeline Hook)")
        deliver(
            url,
            "Pipeline Hook",
            pipeline_payload(
                PROJECT_ID,
                PROJECT,
                PIPELINE_ID,
                SHA,
                "feature/checkout",
                "running",
                mr_iid=MR_IID,
                builds=[(n, "push", "created", j) for n, j in jobs.items()],
            ),
        )
        harness.wait_for(lambda: len(gitlab.latest_statuses(PROJECT_ID, SHA)) == 3, 30, "pending statuses")
        print("   Statuses now hold the pipeline (and auto-merge) until a verdict:")
        show_statuses(gitlab)

        say("GitLab: the three push jobs succeed (Job Hooks); the worker polls ECR")
        for name, job_id in jobs.items():
            gitlab.set_job_status(job_id, "success")
            deliver(
                url,
                "Job Hook",
                job_payload(
                    PROJECT_ID, PROJECT, PIPELINE_ID, job_id, name, "success", SHA, f"refs/merge-requests/{MR_IID}/head"
                ),
            )
        final = ("success", "failed", "canceled")
        harness.wait_for(
            lambda: all(s["status"] in final for s in gitlab.latest_statuses(PROJECT_ID, SHA).values()), 90, "verdicts"
        )
        harness.wait_for(
            lambda: any("worker" in n["body"] and "api" in n["body"] for n in gitlab.notes(PROJECT_ID, MR_IID)),
            30,
            "the MR note",
        )
        time.sleep(2)  # let the last note edit land

        say('Result: commit statuses on pipeline 1001 ("Pipelines must succeed" blocks the merge)')
        show_statuses(gitlab)
        show_note(gitlab, PROJECT_ID, MR_IID)
        monorepo(url, gitlab, ecr)
        rescan(url, gitlab, ecr, config, env)
        show_metrics(url, metrics_port)
        calls = ecr.calls("DescribeImageScanFindings")
        say(f"ECR: {len(calls)} DescribeImageScanFindings calls, one per poll; logs in {workdir}")
        return 0
    except Exception as exc:  # noqa: BLE001 - a demo reports what failed and where the logs are
        print(f"\ndemo failed: {exc}\nlogs: {workdir}", file=sys.stderr)
        return 1
    finally:
        for proc in reversed(procs):
            proc.stop()
        ecr.stop()
        gitlab.stop()
        if run:
            harness.drop_prefix("redis://127.0.0.1:6379/0", f"esg-demo-{run}")


if __name__ == "__main__":
    raise SystemExit(main())
