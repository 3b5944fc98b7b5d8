"""`make demo`: the bot end to end against the GitLab and ECR doubles: a clean, a vulnerable, an unscanned image."""

from __future__ import annotations

import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402

from tests import configs, harness  # noqa: E402
from tests.fakes.ecr import EcrDouble, basic_finding  # noqa: E402
from tests.fakes.gitlab import FakeGitLab  # noqa: E402
from tests.fakes.payloads import job_payload, pipeline_payload, webhook_headers  # noqa: E402
from tests.stack import free_port  # noqa: E402

PROJECT_ID, PROJECT = 42, "acme/shop"
MR_IID, PIPELINE_ID, SHA = 7, 1001, "4f2a9c1e8b7d6a5f4e3d2c1b0a9f8e7d6c5b4a39"
IMAGES = {  # repository -> (push job, what ECR will say)
    "web": ("push-web", "clean: scanned, only LOW findings"),
    "api": ("push-api", "vulnerable: CRITICAL and HIGH findings"),
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


def show_statuses(gitlab: FakeGitLab) -> None:
    for name, status in sorted(gitlab.latest_statuses(PROJECT_ID, SHA).items()):
        print(f"   {name:<24} {status['status']:<8} {status['description']}")


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
            policy={"fail_on": ["CRITICAL", "HIGH"]},
            scan={"poll_interval_s": 2, "timeout_s": 60, "not_found_grace_s": 4},
            sweep={"interval_s": 5, "stuck_after_s": 30},
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
        notes = gitlab.notes(PROJECT_ID, MR_IID)
        say(f"Result: the MR note ({len(notes)} note on MR !{MR_IID}, edited in place)")
        print(textwrap.indent(notes[0]["body"], "   │ "))
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
