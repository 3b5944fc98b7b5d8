"""Scale: many gates waiting at once (scans IN_PROGRESS for longer than the run) on ONE Celery worker process:
its memory and CPU, how the countdown tasks sit in Redis over time, and poll runs vs expected (no redelivery
storm at the visibility timeout)."""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_gate import started_stack, tree_cpu_s, tree_memory  # noqa: E402

from tests.fakes.ecr import SCAN_OP  # noqa: E402
from tests.harness import PUSH_API, PUSH_APP, Scenario  # noqa: E402
from tests.stack import Stack  # noqa: E402

PREFIX = "scale"
QUEUE = "ecr-scan-gate"
IMAGES = {"app": PUSH_APP, "api": PUSH_API}
MIB = 1024 * 1024
# Celery's worker log: "[2026-12-04 01:36:03,337: INFO/ForkPoolWorker-4] Task gate.poll[<id>] retry: Retry in 15s"
LOG_LINE = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}): \w+/[\w-]+\] Task gate\.poll\[([0-9a-f-]+)\] (\w+)")


def log(text: str) -> None:
    print(f"[scale_gates {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def log_time(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()  # the worker logs local time


def poll_log(text: str) -> list[tuple[float, str, str]]:
    """(time, task id, what) for each gate.poll line: received, retry (ran, will run again), succeeded (ran and
    stopped: for a gate still IN_PROGRESS, a copy that found its generation already claimed)."""
    found = []
    for line in text.splitlines():
        m = LOG_LINE.match(line)
        if m:
            found.append((log_time(m.group(1)), m.group(2), m.group(3)))
    return found


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * p
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


class Sampler:
    """Every few seconds: the Celery keys in Redis, the worker tree's memory and CPU, ECR reads so far."""

    def __init__(self, stack: Stack, worker_pid: int, every_s: float) -> None:
        self.stack, self.pid, self.every = stack, worker_pid, every_s
        self.redis = stack.store()
        self.celery = f"{stack.prefix}:celery:"
        self.samples: list[dict[str, Any]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def sample(self) -> dict[str, Any]:
        now = time.time()
        oldest = self.redis.zrange(f"{self.celery}unacked_index", 0, 0, withscores=True)
        rss, pss = tree_memory(self.pid)
        main_rss = int(Path(f"/proc/{self.pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        row = {
            "t": now,
            "queue_len": self.redis.llen(f"{self.celery}{QUEUE}"),
            "unacked": self.redis.hlen(f"{self.celery}unacked"),
            "unacked_index": self.redis.zcard(f"{self.celery}unacked_index"),
            # How long the longest-held message has been out: past the visibility timeout, Redis redelivers it.
            "oldest_unacked_s": round(now - float(oldest[0][1]), 1) if oldest else 0.0,
            "rss_mib": round(rss / MIB, 1),
            "pss_mib": round(pss / MIB, 1),
            # The main process alone: it holds the countdown (ETA) tasks until they are due.
            "main_rss_mib": round(main_rss / MIB, 1),
            "cpu_s": round(tree_cpu_s(self.pid), 2),
            "ecr_reads": sum(1 for c in self.stack.ecr.calls(SCAN_OP) if not c.next_token),
        }
        self.samples.append(row)
        return row

    def run(self) -> None:
        while not self.stop.wait(self.every):
            try:
                self.sample()
            except Exception as exc:  # noqa: BLE001 - a missed sample is noted, not fatal
                log(f"sample failed: {exc!r}")

    def __enter__(self) -> Sampler:
        self.sample()
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--gates", type=int, default=1000, help="gates waiting at once (2 images per pipeline)")
    ap.add_argument("--concurrency", type=int, default=4, help="prefork children of the one worker (Procfile: 4)")
    ap.add_argument("--interval", type=float, default=15, help="[scan] poll_interval_s")
    ap.add_argument("--visibility", type=int, default=60, help="[celery] visibility_timeout_s (countdowns cap: half)")
    ap.add_argument("--run", type=float, default=150, help="seconds measured once every gate is polling")
    ap.add_argument("--sample", type=float, default=5, help="seconds between samples")
    ap.add_argument("--arrival-rate", type=float, default=20, help="pipelines delivered per second")
    ap.add_argument("--rate", type=float, default=500, help="[ecr] rate_per_s: above gates/interval, no throttling")
    ap.add_argument("--burst", type=int, default=500, help="[ecr] burst")
    ap.add_argument("--json", metavar="FILE", help="write the numbers and the time series as JSON")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = ap.parse_args()
    if args.gates < 1 or args.run < args.visibility:
        ap.error("--gates >= 1 and --run >= --visibility (the run must span a visibility window)")
    pipelines = math.ceil(args.gates / 2)
    expected_per_gate = args.run / args.interval
    print(
        f"{args.gates} gates ({pipelines} pipelines x app+api), scans IN_PROGRESS for 24 h; ONE worker process, "
        f"concurrency {args.concurrency} (the Procfile's default); poll_interval_s {args.interval:g}, "
        f"visibility_timeout_s {args.visibility} (countdowns capped at {args.visibility / 2:g} s), measured for "
        f"{args.run:g} s = {args.run / args.visibility:.1f} visibility windows; [ecr] rate_per_s {args.rate:g}, "
        f"burst {args.burst} (needed: {args.gates / args.interval:.0f}/s); sweep every 60 s, stuck_after_s 300"
    )
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start (other work shares them)")
    workdir = Path(tempfile.mkdtemp(prefix="esg-scale-"))
    stack = Stack(
        workdir,
        workers=1,
        concurrency=args.concurrency,
        prefix=PREFIX,
        poll_interval=args.interval,
        visibility=args.visibility,
        timeout_s=24 * 3600,  # no gate reaches its deadline during the run
        stuck_after=300,  # production's: the sweep must not re-send polls that are merely waiting
        grace=60,
        rate=args.rate,
        burst=args.burst,
    )
    try:
        t_start = time.time()
        started_stack(stack, 60.0)
        worker = stack.workers[0].proc
        assert worker is not None
        log(f"stack up in {time.time() - t_start:.1f}s; logs in {workdir}")
        # Set-up outside the measurement: the MRs, pipelines and pushed images, each scan's timeline.
        scenarios: list[Scenario] = []
        images: dict[str, str] = {}  # tag or digest -> gate
        for i in range(pipelines):
            names = tuple(IMAGES.values()) if 2 * i + 1 < args.gates else (PUSH_APP,)
            s = Scenario(stack.gitlab, stack.ecr, stack.deliver, job_names=(*names, "unit-tests"))
            for repo, job in IMAGES.items():
                if job in names:
                    digest = s.push(repo)
                    s.script(repo, [{"status": "IN_PROGRESS", "for_s": 24 * 3600}, {"status": "COMPLETE"}])
                    stack.gitlab.set_job_status(s.jobs[job], "success")
                    images[s.tag(repo)] = images[digest] = f"{s.project_id}:{repo}"
            scenarios.append(s)
        gates = len(images) // 2
        log(f"{gates} gates set up in {time.time() - t_start:.1f}s")
        cpu0 = tree_cpu_s(worker.pid)
        with Sampler(stack, worker.pid, args.sample) as sampler:
            t_create = time.time()

            def deliver(i: int) -> int:
                time.sleep(max(0.0, t_create + i / args.arrival_rate - time.time()))
                s = scenarios[i]
                builds = {job: "success" for job in IMAGES.values() if job in s.jobs}
                return int(s.pipeline_event("running", builds).status_code)

            with ThreadPoolExecutor(8) as pool:
                codes = Counter(pool.map(deliver, range(len(scenarios))))
            log(f"{len(scenarios)} pipeline events delivered in {time.time() - t_create:.1f}s: {dict(codes)}")

            def polled() -> int:
                return len({images[c.image] for c in stack.ecr.calls(SCAN_OP) if c.image in images})

            deadline = time.time() + 600
            while (n := polled()) < gates and time.time() < deadline:
                time.sleep(1)
            t_steady = time.time()
            cpu_steady0 = tree_cpu_s(worker.pid)
            log(f"every gate polled once ({n}/{gates}) {t_steady - t_create:.1f}s after the first delivery")
            time.sleep(max(0.0, t_steady + args.run - time.time()))
            t_end = time.time()
            cpu_end = tree_cpu_s(worker.pid)
            sampler.sample()
        text = stack.workers[0].log_text()
        calls = [c for c in stack.ecr.calls(SCAN_OP) if c.image in images and not c.next_token]
        redis = stack.store()
        states = Counter(str(redis.hget(key, "state")) for key in gate_keys(stack, scenarios))
    except BaseException:
        print(f"logs: {workdir}")
        raise
    finally:
        stack.stop()

    lines = poll_log(text)
    in_window = [(t, tid, what) for t, tid, what in lines if t_steady <= t < t_end]
    ran = Counter(what for _, _, what in in_window)
    executions = ran["retry"] + ran["succeeded"]
    reads = [c for c in calls if t_steady <= c.time < t_end]
    per_gate: dict[str, list[float]] = defaultdict(list)
    for c in calls:
        per_gate[images[c.image or ""]].append(c.time)
    in_window_per_gate = [sum(t_steady <= t < t_end for t in times) for times in per_gate.values()]
    periods = [b - a for times in per_gate.values() for a, b in zip(sorted(times), sorted(times)[1:], strict=False)]
    periods = [p for p in periods if p > 0]
    expected = gates * expected_per_gate
    samples = sampler.samples
    steady = [s for s in samples if s["t"] >= t_steady]
    result = {
        "gates": gates,
        "gates_by_state_at_end": dict(states),
        "concurrency": args.concurrency,
        "poll_interval_s": args.interval,
        "visibility_timeout_s": args.visibility,
        "run_s": round(t_end - t_steady, 1),
        "creation_s": round(t_steady - t_create, 1),
        "worker_rss_mib_peak": max(s["rss_mib"] for s in samples),
        "worker_rss_mib_end": samples[-1]["rss_mib"],
        "worker_pss_mib_peak": max(s["pss_mib"] for s in samples),
        "worker_pss_mib_end": samples[-1]["pss_mib"],
        "worker_main_rss_mib_idle": samples[0]["main_rss_mib"],
        "worker_main_rss_mib_peak": max(s["main_rss_mib"] for s in samples),
        "worker_cpu_s_creation": round(cpu_steady0 - cpu0, 2),
        "worker_cpu_s_run": round(cpu_end - cpu_steady0, 2),
        "worker_cpu_share_run": round((cpu_end - cpu_steady0) / (t_end - t_steady), 3),
        "worker_cpu_ms_per_poll": round(1000 * (cpu_end - cpu_steady0) / max(1, executions), 2),
        "poll_runs": executions,
        "poll_runs_expected": round(expected),
        "poll_runs_vs_expected": round(executions / expected, 3),
        # What one worker process sustained: the gates it could keep at the interval.
        "polls_per_s": round(executions / (t_end - t_steady), 1),
        "gates_sustainable_at_interval": round(executions / (t_end - t_steady) * args.interval),
        "poll_duplicates": ran["succeeded"],
        "poll_received": ran["received"],
        "ecr_reads": len(reads),
        "reads_per_gate_min": min(in_window_per_gate, default=0),
        "reads_per_gate_max": max(in_window_per_gate, default=0),
        "poll_period_p50_s": round(percentile(periods, 0.5), 2),
        "poll_period_p99_s": round(percentile(periods, 0.99), 2),
        "poll_period_max_s": round(max(periods, default=float("nan")), 2),
        "unacked_max_run": max((s["unacked"] for s in steady), default=0),
        "oldest_unacked_max_s": max((s["oldest_unacked_s"] for s in steady), default=0),
        "queue_len_max_run": max((s["queue_len"] for s in steady), default=0),
    }
    print(
        f"\n== Redis (keys under {PREFIX}:celery:) and the worker, every {args.sample:g} s "
        "(t from the moment every gate had polled once; negative: while the gates were being created)"
    )
    print(
        f"  {'t s':>6} {'queue':>6} {'unacked':>8} {'unacked_index':>13} {'oldest unacked s':>16} "
        f"{'RSS MiB':>8} {'PSS MiB':>8} {'main RSS':>8} {'CPU s':>7} {'ECR reads':>9}"
    )
    for row in samples:
        print(
            f"  {row['t'] - t_steady:6.0f} {row['queue_len']:6d} {row['unacked']:8d} {row['unacked_index']:13d} "
            f"{row['oldest_unacked_s']:16.1f} {row['rss_mib']:8.1f} {row['pss_mib']:8.1f} {row['main_rss_mib']:8.1f} "
            f"{row['cpu_s']:7.2f} "
            f"{row['ecr_reads']:9d}"
        )
    print(f"\n== {gates} gates on one worker (concurrency {args.concurrency}), {result['run_s']:g} s measured")
    for key, value in result.items():
        print(f"  {key:28} {value}")
    storm = result["poll_duplicates"] > 0.01 * executions or result["oldest_unacked_max_s"] >= args.visibility
    verdict = "no redelivery storm" if not storm else "REDELIVERIES seen"
    print(
        f"  {'result':28} {verdict}: {executions} poll runs for {round(expected)} expected "
        f"({result['poll_runs_vs_expected']:.3f}x), {result['poll_duplicates']} duplicates, oldest unacked message "
        f"{result['oldest_unacked_max_s']:g} s (visibility {args.visibility} s)"
    )
    behind = result["poll_runs_vs_expected"] < 0.97
    print(
        f"  {'keeping up':28} {'NO' if behind else 'yes'}: polls every {result['poll_period_p50_s']:g} s (p50) / "
        f"{result['poll_period_p99_s']:g} s (p99) for an interval of {args.interval:g} s; one worker process sustained "
        f"{result['polls_per_s']:g} polls/s = {result['gates_sustainable_at_interval']} gates at that interval, using "
        f"{result['worker_cpu_share_run']:g} CPUs ({result['worker_cpu_ms_per_poll']:g} ms CPU per poll)"
    )
    if args.json:
        payload = result | {"samples": [s | {"t": round(s["t"] - t_steady, 1)} for s in samples]}
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        print(f"  numbers written to {args.json}")
    ok = not storm
    if ok and not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"logs: {workdir}")
    return 0 if ok else 1


def gate_keys(stack: Stack, scenarios: list[Scenario]) -> list[str]:
    return [
        f"{stack.prefix}:gate:{s.project_id}:{s.pipeline_id}:{repo}"
        for s in scenarios
        for repo, job in IMAGES.items()
        if job in s.jobs
    ]


if __name__ == "__main__":
    raise SystemExit(main())
