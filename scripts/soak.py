"""Soak run: many MR pipelines × 2 images through the real stack under random faults; prints the counts."""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
import requests  # noqa: E402

from bot.core.report import MARKER  # noqa: E402
from tests.fakes.ecr import SCAN_OP, basic_finding  # noqa: E402
from tests.harness import PUSH_API, PUSH_APP, Scenario  # noqa: E402
from tests.stack import Stack  # noqa: E402

PREFIX = "soak"
FINAL = ("success", "failed", "canceled")
IMAGES = {"app": PUSH_APP, "api": PUSH_API}
HIGH = basic_finding("CVE-2023-44487", "HIGH", "nghttp2", "1.43.0-1", "1.43.0-1+deb11u1")
LOW = basic_finding("CVE-2022-0001", "LOW", "zlib", "1.2.11", "1.2.12")
# Expected verdict reason -> weight. scan_not_found/image_not_found come from moto itself (no script).
REASONS = {
    "passed": 30,
    "blocked": 14,
    "scan_failed": 6,
    "unsupported_image": 6,
    "findings_unavailable": 6,
    "access_denied": 6,
    "repository_not_found": 6,
    "error": 6,
    "scan_not_found": 6,
    "image_not_found": 4,
    "timeout": 2,
}
UNAVAILABLE = ("FINDINGS_UNAVAILABLE", "SCAN_ELIGIBILITY_EXPIRED", "LIMIT_EXCEEDED", "IMAGE_ARCHIVED")
MODES = {"jobs": 50, "builds": 15, "lost": 15, "out_of_order": 20}  # how a pipeline's events reach the bot


class SoakScenario(Scenario):
    # The fake gives a commit status the id max(all job and status ids) + 1: job ids counting down from far
    # above the status ids (which count up) never collide with them, even over 500 pipelines.
    job_ids = itertools.count(10**10, -1)


@dataclass
class Image:
    repository: str
    reason: str  # the verdict the script must lead to
    steps: list[dict[str, Any]] | None  # None: moto answers (no scan started / no image)
    push: bool = True
    digest: str = ""


@dataclass
class Pipeline:
    scenario: Scenario
    images: dict[str, Image]
    mode: str


@dataclass
class Tally:
    """Counters shared by the sender threads."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    c: Counter[str] = field(default_factory=Counter)
    started: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, key: str, n: int = 1) -> None:
        with self.lock:
            self.c[key] += n


def ecr_steps(reason: str, rng: random.Random) -> list[dict[str, Any]] | None:
    wait = [{"status": "IN_PROGRESS"}] * rng.randint(0, 3)
    return {
        "passed": wait + [{"status": "COMPLETE", "findings": rng.choice([[], [LOW]])}],
        "blocked": wait + [{"status": "COMPLETE", "findings": [HIGH, LOW]}],
        "scan_failed": wait + [{"status": "FAILED", "description": "soak: scan engine crashed"}],
        "unsupported_image": [{"status": "UNSUPPORTED_IMAGE"}],
        "findings_unavailable": wait + [{"status": rng.choice(UNAVAILABLE)}],
        "access_denied": [{"error": "AccessDeniedException"}],
        "repository_not_found": [{"error": "RepositoryNotFoundException"}],
        "error": wait + [{"status": "COMPLETE", "no_findings_object": True}],
        "timeout": [{"status": "IN_PROGRESS"}],  # the last step repeats: never completes
    }.get(reason)


def plan(stack: Stack, rng: random.Random, args: argparse.Namespace, tally: Tally, deliver: Any) -> Pipeline:
    s = SoakScenario(stack.gitlab, stack.ecr, deliver)
    images: dict[str, Image] = {}
    for repo in IMAGES:
        reason = rng.choices(list(REASONS), weights=list(REASONS.values()))[0]
        image = Image(repo, reason, ecr_steps(reason, rng), push=reason != "image_not_found")
        if rng.random() < args.fault_rate:  # ECR throttles or fails first; retried, never a verdict
            tally.add("fault ecr throttling")
            prefix = [{"error": "ThrottlingException"}] * rng.randint(1, 3) + [{"error": "ServerException"}] * (
                rng.random() < 0.5
            )
            image.steps = prefix + (image.steps or [{"moto": True}])
        if image.push:
            image.digest = s.push(repo)
        if image.steps:
            s.script(repo, image.steps)
        images[repo] = image
    if rng.random() < args.fault_rate:
        tally.add("fault gitlab status")
        status = rng.choice([500, 502, 503, 429, 409])
        stack.gitlab.inject_fault(
            "POST",
            rf"/projects/{s.project_id}/statuses/",
            status=status,
            times=rng.randint(1, 3),
            retry_after=1 if status == 429 else None,
        )
    if rng.random() < args.fault_rate:
        tally.add("fault gitlab note")
        notes = rf"/projects/{s.project_id}/merge_requests/\d+/notes"
        if rng.random() < 0.25:  # stored, but answered after the bot's timeout: the retry must edit it
            stack.gitlab.inject_fault("POST", notes, delay_s=6, times=1)
        else:
            status = rng.choice([500, 502, 429])
            stack.gitlab.inject_fault(
                "*", notes, status=status, times=rng.randint(1, 2), retry_after=1 if status == 429 else None
            )
    return Pipeline(s, images, rng.choices(list(MODES), weights=list(MODES.values()))[0])


class Sender:
    """Delivers one pipeline's webhooks like GitLab: duplicates, odd order, resends after a 503."""

    def __init__(self, stack: Stack, args: argparse.Namespace, tally: Tally, deadline: float) -> None:
        self.stack, self.args, self.tally, self.deadline = stack, args, tally, deadline
        self.t0 = time.monotonic()

    def post(self, event: str, body: dict[str, Any], key: str | None, failed: list[tuple[Any, ...]]) -> Any:
        key = key or uuid.uuid4().hex
        self.tally.add("deliveries sent")
        try:
            answer = self.stack.deliver(event, body, key)
        except requests.RequestException as exc:
            self.tally.add(f"delivery error {type(exc).__name__}")
            failed.append((event, body, key))
            return None
        self.tally.add(f"delivery answer {answer.status_code}")
        if answer.status_code >= 500:
            failed.append((event, body, key))
        elif answer.status_code == 200 and answer.json().get("status") == "duplicate":
            self.tally.add("delivery answer duplicate")
        return answer

    def run(self, index: int) -> Pipeline | None:
        if self.args.arrival_rate > 0:  # pipelines arrive at a steady rate, as in a busy GitLab
            time.sleep(max(0.0, self.t0 + index / self.args.arrival_rate - time.monotonic()))
        if time.monotonic() > self.deadline:
            return None
        rng = random.Random(f"{self.args.seed}-{index}")  # per pipeline: same plan whatever the thread order
        failed: list[tuple[Any, ...]] = []
        try:
            p = plan(self.stack, rng, self.args, self.tally, lambda e, b, k: self.post(e, b, k, failed))
        except Exception as exc:  # noqa: BLE001 - one broken set-up is counted, not fatal to the run
            log(f"pipeline {index}: set-up failed: {exc!r}")
            self.tally.add("pipelines not set up")
            return None
        with self.tally.lock:
            self.tally.started += 1
        s, dup = p.scenario, rng.random() < 0.15

        def send(fn: Any, *a: Any) -> None:
            key = uuid.uuid4().hex  # explicit, so a duplicate or a resend carries the same key
            fn(*a, key=key)
            if dup:
                self.tally.add("deliveries duplicated")
                fn(*a, key=key)

        builds = dict.fromkeys(IMAGES.values(), "success")
        if p.mode == "builds":  # no job events at all: the pipeline event's builds[] says the pushes succeeded
            for job in IMAGES.values():
                self.stack.gitlab.set_job_status(s.jobs[job], "success")
            send(s.pipeline_event, "running", builds)
        elif p.mode == "lost":  # pushes succeed, (some) job events never arrive: the sweep must find them
            send(s.pipeline_event, "running")
            for job in IMAGES.values():
                if rng.random() < 0.6:
                    self.tally.add("job events lost")
                    self.stack.gitlab.set_job_status(s.jobs[job], "success")
                else:
                    send(s.job_event, job)
        else:
            order = [(s.pipeline_event, "running")] + [(s.job_event, job) for job in IMAGES.values()]
            if p.mode == "out_of_order":  # a job event before its pipeline event
                order.insert(rng.randint(1, 2), order.pop(0))
            for fn, arg in order:
                send(fn, arg)
        # GitLab's "Resend": the same body and Idempotency-Key, later, until it is taken.
        for _attempt in range(60):
            if not failed or time.monotonic() > self.deadline:
                break
            time.sleep(rng.uniform(0.5, 1.5))
            retry, failed[:] = list(failed), []
            for event, body, key in retry:
                self.tally.add("deliveries resent")
                self.post(event, body, key, failed)
        if failed:
            self.tally.add("deliveries given up", len(failed))
        return p


def run_faults(stack: Stack, args: argparse.Namespace, tally: Tally, rng: random.Random, stop: threading.Event) -> None:
    """Worker SIGKILLs and Redis restarts spread over the pipelines started; a crashed worker is counted
    and restarted, as systemd would, so one crash does not stall the rest of the run."""
    events = ["kill"] * args.kills + ["redis"] * args.redis_restarts
    rng.shuffle(events)
    due = [((n + 1) * args.pipelines // (len(events) + 1), kind) for n, kind in enumerate(events)]
    queue = stack.store()
    while not stop.wait(0.5):
        try:
            for i, worker in enumerate(stack.workers):
                if worker.proc is not None and worker.proc.poll() is not None:
                    why = [line for line in worker.log_text().splitlines() if "CRITICAL" in line][-1:]
                    log(f"worker{i} exited by itself (rc {worker.proc.returncode}): {why}")
                    tally.add("worker crashes")
                    tally.examples.extend(why)
                    stack.start_worker(i)
            try:  # backlog of the Celery queue: the best single number for "is the stack keeping up"
                depth = queue.llen(f"{PREFIX}:celery:ecr-scan-gate")
            except redis.RedisError:
                depth = 0
            with tally.lock:
                tally.c["peak celery queue depth"] = max(tally.c["peak celery queue depth"], depth)
            if not due or tally.started < due[0][0]:
                continue
            _, kind = due.pop(0)
            tally.add(f"fault {kind}")
            if kind == "kill":
                i = len(due) % len(stack.workers)
                log(f"fault: SIGKILL worker{i} (pipeline {tally.started}, queue {depth})")
                stack.workers[i].kill()
                time.sleep(rng.uniform(0.5, 2.0))
                stack.start_worker(i)
            else:
                log(f"fault: restarting Redis (pipeline {tally.started}, queue {depth})")
                stack.redis.restart(down_s=rng.uniform(1.0, 3.0))
        except Exception as exc:  # noqa: BLE001 - e.g. a worker slow to start: note it, keep supervising
            log(f"supervisor: {exc!r}")
            tally.add("supervisor errors")


Row = tuple[int, int, str, str, bool, str]  # project, pipeline, name, state, retried, created_at


def status_rows(stack: Stack) -> list[Row]:
    # One pass under the fake's lock instead of 1,000 latest_statuses() scans of the same list.
    with stack.gitlab._lock:
        return [
            (s.project_id, s.pipeline_id, s.name, s.status, s.retried, s.created_at)
            for s in stack.gitlab.commit_statuses
        ]


def latest(rows: list[Row]) -> dict[tuple[int, int, str], str]:
    return {(pid, pipe, name): st for pid, pipe, name, st, retried, _ in rows if not retried}


def gates(pipelines: list[Pipeline]) -> list[tuple[Pipeline, Image, tuple[int, int, str]]]:
    return [
        (p, img, (p.scenario.project_id, p.scenario.pipeline_id, f"ecr-scan-gate/{img.repository}"))
        for p in pipelines
        for img in p.images.values()
    ]


def wait_final(stack: Stack, pipelines: list[Pipeline], deadline: float, stall_s: float) -> None:
    """Until every gate is final and every note shows it, the deadline passes, or nothing moves for stall_s."""
    wanted = [key for _, _, key in gates(pipelines)]

    def gates_left() -> int:
        now_latest = latest(status_rows(stack))
        return sum(now_latest.get(k) not in FINAL for k in wanted)

    for what, left in (("gates", gates_left), ("notes", lambda: sum(bool(note_problem(stack, p)) for p in pipelines))):
        before, moved, shown = -1, time.monotonic(), 0.0
        while time.monotonic() < deadline:
            n = left()
            if n != before:
                before, moved = n, time.monotonic()
            if time.monotonic() - shown > 10:
                log(f"waiting: {n} {what} not final yet")
                shown = time.monotonic()
            if not n or time.monotonic() - moved > stall_s:
                break
            time.sleep(2)
    time.sleep(3)  # let a late duplicate status or note land before counting


def note_problem(stack: Stack, p: Pipeline) -> str:
    notes = [n["body"] for n in stack.gitlab.notes(p.scenario.project_id, p.scenario.mr_iid) if MARKER in n["body"]]
    if not notes:
        return "missing"
    if any(line.startswith(("#### WAITING", "#### SCANNING")) for line in notes[-1].splitlines()):
        return "stale"
    return ""


def ecr_index(stack: Stack) -> tuple[dict[tuple[str, str], list[Any]], float]:
    calls = [c for c in stack.ecr.calls(SCAN_OP) if not c.next_token]
    by_image: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for c in calls:
        by_image[(c.repository or "", c.image or "")].append(c)
    times, peak, lo = sorted(c.time for c in calls), 0, 0
    for hi, t in enumerate(times):  # the busiest one-second window
        while t - times[lo] >= 1.0:
            lo += 1
        peak = max(peak, hi - lo + 1)
    return by_image, peak


def report(
    stack: Stack, pipelines: list[Pipeline], tally: Tally, args: argparse.Namespace, wall: float
) -> dict[str, Any]:
    rows = status_rows(stack)
    now_latest = latest(rows)
    finals: dict[tuple[int, int, str], list[str]] = defaultdict(list)
    for pid, pipe, name, st, _, at in rows:
        if st in FINAL:
            finals[(pid, pipe, name)].append(f"{st} (job created {at[11:23]})")
    store = stack.store()
    by_image, peak = ecr_index(stack)
    reasons: Counter[str] = Counter()
    lost, wrong, unproven, calls_per_gate = [], [], [], []
    for p, img, key in gates(pipelines):
        s = p.scenario
        state = now_latest.get(key)
        record = store.hgetall(f"{PREFIX}:gate:{s.project_id}:{s.pipeline_id}:{img.repository}")
        reason = json.loads(record["verdict"])["reason"] if record.get("verdict") else f"<{record.get('state')}>"
        reasons[reason] += 1
        mine = by_image[(img.repository, s.tag(img.repository))] + (
            by_image[(img.repository, img.digest)] if img.digest else []
        )
        calls_per_gate.append(len(mine))
        where = f"{key[0]}/{key[1]}/{img.repository} ({p.mode})"
        if state not in FINAL:
            lost.append(f"{where}: status {state}, record {record.get('state')}")
            continue
        if reason != img.reason or state != ("success" if img.reason == "passed" else "failed"):
            wrong.append(f"{where}: expected {img.reason}, got {reason} / {state}")
        complete = any(
            c.answered_by == "script"
            and c.http_status == 200
            and c.step is not None
            and img.steps
            and img.steps[c.step].get("status") == "COMPLETE"
            for c in mine
        )
        if state == "success" and not complete:
            unproven.append(where)
    duplicates = [
        f"{k[0]}/{k[1]}/{k[2]}: {v}; posted {posted_states(stack, *k)}" for k, v in finals.items() if len(v) > 1
    ]
    notes = Counter(note_problem(stack, p) or "ok" for p in pipelines)
    dup_notes = sum(
        sum(MARKER in n["body"] for n in stack.gitlab.notes(p.scenario.project_id, 1)) > 1 for p in pipelines
    )
    codes: Counter[str] = Counter()
    for key, n in stack.gitlab.request_counts().items():
        codes[key.rsplit(" ", 1)[1]] += n
    return {
        "pipelines": len(pipelines),
        "gates": len(calls_per_gate),
        "deliveries": {k: n for k, n in sorted(tally.c.items()) if k.startswith(("deliver", "job events"))},
        "faults": {k.removeprefix("fault "): n for k, n in sorted(tally.c.items()) if k.startswith("fault")},
        "stack": {k: n for k, n in sorted(tally.c.items()) if not k.startswith(("deliver", "job events", "fault"))},
        "verdicts_by_reason": dict(reasons.most_common()),
        "expected_by_reason": dict(Counter(img.reason for _, img, _ in gates(pipelines)).most_common()),
        "modes": dict(Counter(p.mode for p in pipelines)),
        "lost": len(lost),
        "wrong": len(wrong),
        "success_without_complete": len(unproven),
        "duplicate_final_statuses": len(duplicates),
        "duplicate_notes": dup_notes,
        "notes": dict(notes),
        "ecr_calls_per_gate": {
            "mean": round(sum(calls_per_gate) / max(1, len(calls_per_gate)), 2),
            "max": max(calls_per_gate, default=0),
        },
        "ecr_peak_calls_per_s": peak,
        "ecr_rate_configured": {"rate_per_s": args.ecr_rate, "burst": args.ecr_burst},
        "gitlab_requests_by_status": dict(sorted(codes.items())),
        "wall_s": round(wall, 1),
        "examples": {
            "lost": lost[:5],
            "wrong": wrong[:5],
            "success_without_complete": unproven[:5],
            "duplicate_final_statuses": duplicates[:5],
            "worker_crashes": tally.examples[:3],
        },
    }


def posted_states(stack: Stack, project_id: int, pipeline_id: int, name: str) -> list[str]:
    """Every status POST the bot made for one gate, in order: the evidence for a duplicate."""
    posts = stack.gitlab.requests("POST", rf"/projects/{project_id}/statuses/")
    return [
        f"{r['body'].get('state')}->{r['status']}"
        for r in posts
        if r["body"].get("name") == name and str(r["body"].get("pipeline_id")) == str(pipeline_id)
    ]


def log(text: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def hard_stop(stack: Stack) -> None:
    """Last resort at the wall-clock cap: kill every child we started, then leave."""
    log("hard timeout: killing the stack")
    for proc in [stack.beat, stack.web, *stack.workers]:
        if proc is not None and proc.proc is not None and proc.proc.poll() is None:
            os.killpg(proc.proc.pid, signal.SIGKILL)
    if stack.redis.proc is not None:
        stack.redis.proc.kill()
    os._exit(4)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pipelines", type=int, default=500)
    ap.add_argument("--workers", type=int, default=2, help="Celery worker processes (each prefork)")
    ap.add_argument("--concurrency", type=int, default=8, help="prefork children per worker")
    ap.add_argument("--senders", type=int, default=8, help="threads delivering webhooks")
    ap.add_argument("--arrival-rate", type=float, default=3, help="pipelines started per second (0: at once)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--fault-rate", type=float, default=0.2, help="per pipeline: GitLab 5xx/429, ECR throttling")
    ap.add_argument("--kills", type=int, default=4, help="worker SIGKILLs spread over the run")
    ap.add_argument("--redis-restarts", type=int, default=2)
    ap.add_argument("--scan-timeout", type=float, default=60, help="scan.timeout_s: only never-ending scans hit it")
    ap.add_argument("--ecr-rate", type=float, default=50, help="ecr.rate_per_s shared by all workers")
    ap.add_argument("--ecr-burst", type=int, default=50)
    # Above the Celery queue's latency: a restart that lands before the restarted poll runs starves the gate.
    ap.add_argument("--stuck-after", type=float, default=30, help="sweep.stuck_after_s")
    # GitLab's default notes_create_limit is 300/min per user; the fake defaults to GitLab.com's stricter 60.
    ap.add_argument("--note-rate-limit", type=int, default=300, help="fake GitLab's note creations per minute")
    ap.add_argument("--timeout", type=float, default=900, help="wall-clock cap for the whole run, seconds")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs) even on success")
    ap.add_argument("--json", action="store_true", help="also print the numbers as JSON")
    args = ap.parse_args()
    started = time.monotonic()
    deadline = started + args.timeout
    workdir = Path(tempfile.mkdtemp(prefix="ecr-scan-gate-soak-"))
    stack = Stack(
        workdir,
        workers=args.workers,
        concurrency=args.concurrency,
        beat=True,
        prefix=PREFIX,
        timeout_s=args.scan_timeout,
        rate=args.ecr_rate,
        burst=args.ecr_burst,
        stuck_after=args.stuck_after,
    )
    watchdog = threading.Timer(args.timeout + 120, hard_stop, [stack])
    watchdog.daemon = True
    watchdog.start()
    tally, stop, ok = Tally(), threading.Event(), False
    faults: threading.Thread | None = None
    try:
        stack.start()
        stack.gitlab.configure(note_rate_limit=args.note_rate_limit)
        log(f"stack up in {time.monotonic() - started:.1f}s; logs in {workdir}")
        t0 = time.monotonic()
        faults = threading.Thread(
            target=run_faults, daemon=True, args=(stack, args, tally, random.Random(args.seed), stop)
        )
        faults.start()
        sender = Sender(stack, args, tally, deadline)
        with ThreadPoolExecutor(args.senders) as pool:
            pipelines = [p for p in pool.map(sender.run, range(args.pipelines)) if p is not None]
        log(f"{len(pipelines)} pipelines delivered in {time.monotonic() - t0:.1f}s")
        # Nothing moving for this long means stuck: past the scan timeout and the sweep's stuck_after.
        wait_final(stack, pipelines, deadline, stall_s=max(120.0, 3 * args.scan_timeout, args.stuck_after + 60))
        numbers = report(stack, pipelines, tally, args, time.monotonic() - t0)
        bad = {
            k: numbers[k]
            for k in ("lost", "wrong", "success_without_complete", "duplicate_final_statuses", "duplicate_notes")
            if numbers[k]
        }
        bad.update({f"notes {k}": n for k, n in numbers["notes"].items() if k != "ok"})
        bad.update({"worker crashes": tally.c["worker crashes"]} if tally.c["worker crashes"] else {})
        bad.update(
            {"pipelines not started": args.pipelines - len(pipelines)} if len(pipelines) < args.pipelines else {}
        )
        ok = not bad
        for key, value in numbers.items():
            print(f"{key:28} {value}")
        print(f"{'result':28} {'OK' if ok else f'FAILED {bad}'}")
        if args.json:
            print(json.dumps(numbers | {"ok": ok, "failures": bad}))
    finally:
        stop.set()
        if faults is not None:  # it may be starting a worker: let it finish, or that worker outlives us
            faults.join(timeout=90)
        stack.stop()
        watchdog.cancel()
        if ok and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"{'logs':28} {workdir}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
