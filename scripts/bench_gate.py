"""Benchmark: the runbook's shell polling gate vs the bot polling vs the bot woken by scan events, on ECR scan
timelines (the ECR double): ECR calls, verdict latency after the scan completed, runner time and CPU per gate."""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.core.report import MARKER  # noqa: E402
from bot.core.settings import EventsSettings, ScanSettings  # noqa: E402
from tests import configs, harness  # noqa: E402
from tests.fakes.ecr import SCAN_OP, EcrDouble, basic_finding  # noqa: E402
from tests.fakes.ecr.events import EventSpec  # noqa: E402
from tests.harness import PUSH_APP, Scenario  # noqa: E402
from tests.stack import Stack  # noqa: E402

RUNBOOK_GATE = ROOT / "scripts" / "runbook_gate.sh"
MODES = ("shell", "polling", "events")
REPO = "app"
HIGH = basic_finding("CVE-2023-44487", "HIGH", "nghttp2", "1.43.0-1", "1.43.0-1+deb11u1")
# The runbook: "ECR needs between 10 and 90 seconds to complete a scan after push"; it polls every 15 s, 20 times.
SCAN_RANGE_S = (10.0, 90.0)
RUNBOOK_INTERVAL_S, RUNBOOK_ATTEMPTS = 15.0, 20
# Production defaults (bot/core/settings.py), scaled like every other time here.
POLL_S, TIMEOUT_S, STUCK_AFTER_S, SWEEP_S, GRACE_S = 15.0, 600.0, 300.0, 60.0, 60.0
BACKSTOP_S = EventsSettings().backstop_interval_s
FIRST_READ_S = ScanSettings().first_read_after_s
# [celery] visibility_timeout_s: every countdown is capped at half of it, so it scales too (the Stack's 24 s would
# cap an unscaled 60 s backstop, or a 15 s poll, at 12 s).
VISIBILITY_S = 600
# The targets.
TARGET_EVENTS_CALLS, TARGET_EVENTS_P95_S = 1.2, 1.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- the gates: the same timelines in every mode ---------------------------------------------------------------


@dataclass(frozen=True)
class GatePlan:
    index: int
    push_after_s: float  # after the mode's start
    scan_s: float  # IN_PROGRESS this long after the push, then COMPLETE
    blocked: bool  # COMPLETE with a HIGH finding (else clean)

    def steps(self) -> list[dict[str, Any]]:
        final = {"status": "COMPLETE", "findings": [HIGH] if self.blocked else []}
        return [{"status": "IN_PROGRESS", "for_s": self.scan_s}, final]


def plan_gates(n: int, scale: float, spread_s: float, seed: int) -> list[GatePlan]:
    """Scan durations drawn from the runbook's 10-90 s, pushes spread over spread_s, half blocked: all / scale.

    Stratified draws (one uniform draw in each of n equal slices of the range, in a seeded random order), so
    that 20 gates cover the range evenly: 20 plain draws can bunch (seed 1 puts 12 of 20 above 60 s).
    """
    rng = random.Random(seed)  # noqa: S311 - a reproducible plan, not crypto
    lo, hi = SCAN_RANGE_S
    durations = [lo + (hi - lo) * (i + rng.random()) / n for i in range(n)]
    rng.shuffle(durations)
    blocked = [i % 2 == 1 for i in range(n)]
    rng.shuffle(blocked)
    return [GatePlan(i, rng.uniform(0, spread_s) / scale, durations[i] / scale, blocked[i]) for i in range(n)]


@dataclass
class GateResult:
    plan: GatePlan
    tag: str
    pushed_at: float = 0.0
    completed_at: float | None = None  # from the timeline (the double's completion_time)
    verdict_at: float | None = None  # the script's exit, or the bot's final status POST
    verdict: str = ""  # passed / blocked / anything else
    detail: str = ""
    calls: int = 0
    runner_s: float = 0.0
    cpu_s: float = 0.0
    read_at: float | None = None  # the first call answered COMPLETE
    event_sent_at: float | None = None

    @property
    def correct(self) -> bool:
        return self.verdict == ("blocked" if self.plan.blocked else "passed")

    @property
    def latency(self) -> float | None:
        if self.verdict_at is None or self.completed_at is None:
            return None
        return self.verdict_at - self.completed_at


@dataclass
class ModeResult:
    mode: str
    gates: list[GateResult]
    cpu_s: float  # the Celery worker tree's (or, for shell, the scripts' and their children's)
    cpu_what: str
    other_cpu_s: dict[str, float] = field(default_factory=dict)
    peak_calls_per_s: int = 0
    wall_s: float = 0.0
    notes: list[str] = field(default_factory=list)


# --- process accounting from /proc -----------------------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # after "pid (comm) ": state ppid ... (comm may hold spaces)


def process_tree(root: int) -> list[int]:
    """root and all its descendants now alive (a prefork worker: the main process and its pool children)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def tree_cpu_s(root: int) -> float:
    """utime + stime of the tree, plus what the root's reaped children used (a pool child that was replaced)."""
    ticks = 0
    for pid in process_tree(root):
        fields = _stat(pid)
        if fields is not None:
            ticks += int(fields[11]) + int(fields[12])
            if pid == root:
                ticks += int(fields[13]) + int(fields[14])
    return ticks / CLK_TCK


def tree_memory(root: int) -> tuple[int, int]:
    """(RSS summed over the tree, PSS summed over the tree) in bytes; PSS splits shared pages between sharers,
    so it does not count the pool children's copy-on-write pages shared with the main process twice."""
    rss = pss = 0
    for pid in process_tree(root):
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                name, _, value = line.partition(":")
                if name in ("Rss", "Pss"):
                    kib = int(value.split()[0]) * 1024
                    rss, pss = (rss + kib, pss) if name == "Rss" else (rss, pss + kib)
        except (OSError, ValueError):
            continue
    return rss, pss


# --- the stack's config: production defaults, scaled ---------------------------------------------------------


@contextmanager
def sweep_every(seconds: float, first_read_s: float) -> Iterator[None]:
    """Write [sweep] interval_s and [scan] first_read_after_s into the config Stack.start writes
    (harness.write_config has no such options; the suites' 2 s sweep and immediate first read are not
    production's)."""
    original = harness.write_config

    def write(path: Path, *args: Any, **kwargs: Any) -> Path:
        written = original(path, *args, **kwargs)
        config = tomllib.loads(written.read_text())
        config.setdefault("sweep", {})["interval_s"] = seconds
        config.setdefault("scan", {})["first_read_after_s"] = first_read_s
        written.write_text(configs.dumps(config), encoding="utf-8")
        return written

    harness.write_config = write
    try:
        yield
    finally:
        harness.write_config = original


def started_stack(stack: Stack, sweep_s: float, first_read_s: float) -> Stack:
    with sweep_every(sweep_s, first_read_s):
        return stack.start()


# --- helpers -------------------------------------------------------------------------------------------------


def log(text: str) -> None:
    print(f"[bench_gate {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def percentile(values: list[float], p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default): with 20 values, p95 lies between the two
    slowest."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * p
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def iso_epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def peak_per_s(times: list[float]) -> int:
    times, peak, lo = sorted(times), 0, 0
    for hi, t in enumerate(times):  # the busiest one-second window
        while t - times[lo] >= 1.0:
            lo += 1
        peak = max(peak, hi - lo + 1)
    return peak


def run_at(items: list[tuple[float, Callable[[], None]]]) -> None:
    """Run each action at its time (time.time()), in order; a late one runs at once."""
    for when, action in sorted(items, key=lambda item: item[0]):
        time.sleep(max(0.0, when - time.time()))
        action()


def aws_cli_path() -> Path | None:
    """The aws CLI's own executable: a pyenv shim costs a `pyenv exec` per call that a CI image would not pay."""
    found = shutil.which("aws")
    if found is None:
        return None
    if "/.pyenv/shims/" in found and shutil.which("pyenv"):
        pyenv = ["pyenv", "which", "aws"]
        real = subprocess.run(pyenv, capture_output=True, text=True, check=False).stdout.strip()  # noqa: S603, S607
        if real:
            return Path(real)
    return Path(found)


def aws_version(aws: Path) -> str:
    answer = subprocess.run([str(aws), "--version"], capture_output=True, text=True, check=False)  # noqa: S603
    return (answer.stdout or answer.stderr).strip().split(" ")[0]


def scan_calls(ecr: EcrDouble, names: set[str]) -> list[Any]:
    """DescribeImageScanFindings calls for these images (tags and digests), follow-up pages included."""
    return [c for c in ecr.calls(SCAN_OP, REPO) if c.image in names]


# --- mode (a): the runbook's shell loop ------------------------------------------------------------------------


def run_shell(plan: list[GatePlan], args: argparse.Namespace, workdir: Path) -> ModeResult:
    aws = aws_cli_path()
    if aws is None or shutil.which("jq") is None:
        raise SystemExit("the shell mode runs the aws CLI and jq: pip install awscli; apt-get install jq")
    interval = RUNBOOK_INTERVAL_S / args.scale
    with EcrDouble() as ecr:
        harness.ensure_repositories(ecr, (REPO,))
        results = [GateResult(g, f"shell-{g.index:03d}-{uuid.uuid4().hex[:6]}") for g in plan]
        digests = {r.tag: ecr.push_image(REPO, r.tag) for r in results}
        base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ECR_GATE", "GITLAB_"))}
        env = base | ecr.env()
        env |= {
            "PATH": f"{aws.parent}{os.pathsep}{env.get('PATH', '')}",
            # No profile of this machine's may change what the CLI does.
            "AWS_CONFIG_FILE": str(workdir / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(workdir / "no-aws-credentials"),
            "SLEEP_INTERVAL": f"{interval:g}",
            "MAX_ATTEMPTS": str(RUNBOOK_ATTEMPTS),
        }
        waiters: list[threading.Thread] = []

        def start(r: GateResult) -> None:
            job_dir = workdir / f"job-{r.plan.index:03d}"  # each CI job has its own checkout (scan.env)
            job_dir.mkdir()
            ecr.script(REPO, tag=r.tag, steps=r.plan.steps())
            r.pushed_at = time.time()
            out = (job_dir / "job.log").open("wb")
            proc = subprocess.Popen(  # noqa: S603 - our own script
                ["bash", str(RUNBOOK_GATE)],  # noqa: S607 - bash from PATH, as a runner finds it
                cwd=job_dir,
                env=env | {"ECR_REPO": REPO, "IMAGE_TAG": r.tag},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
            began = time.time()

            def wait() -> None:
                # wait4: the script's own CPU plus that of every child it reaped (aws, jq, grep, sleep).
                _, status, usage = os.wait4(proc.pid, 0)
                r.verdict_at = time.time()
                proc.returncode = os.waitstatus_to_exitcode(status)
                out.close()
                r.runner_s = r.verdict_at - began
                r.cpu_s = usage.ru_utime + usage.ru_stime
                text = (job_dir / "job.log").read_text(errors="replace")
                blocking = [line for line in text.splitlines() if "TOTAL_BLOCKING=" in line]
                total = blocking[-1].rsplit("=", 1)[1] if blocking else "?"
                r.detail = f"exit {proc.returncode}, TOTAL_BLOCKING={total}"
                if proc.returncode == 0 and total == "0":
                    r.verdict = "passed"
                elif proc.returncode == 1 and total not in ("0", "?"):
                    r.verdict = "blocked"
                else:
                    r.verdict = f"exit {proc.returncode}"

            thread = threading.Thread(target=wait, daemon=True)
            thread.start()
            waiters.append(thread)

        t0 = time.time() + 1.0
        run_at([(t0 + r.plan.push_after_s, functools.partial(start, r)) for r in results])
        budget = RUNBOOK_ATTEMPTS * (interval + 5) + 30
        for thread in waiters:
            thread.join(timeout=max(1.0, t0 + budget - time.time()))
        wall = time.time() - t0
        periods: list[float] = []
        for r in results:
            r.completed_at = ecr.completion_time(REPO, tag=r.tag)
            mine = scan_calls(ecr, {r.tag, digests[r.tag]})
            periods += [b.time - a.time for a, b in zip(mine, mine[1:], strict=False)]
            r.calls = len(mine)
            done = [c.time for c in mine if c.step == 1 and c.http_status == 200]
            r.read_at = min(done) if done else None
        peak = peak_per_s([c.time for c in scan_calls(ecr, set(digests) | set(digests.values()))])
    cpu = sum(r.cpu_s for r in results)
    notes = [
        f"aws CLI {aws_version(aws)} ({aws}); mean time between a script's calls (aws call + jq + sleep "
        f"{interval:g} s): {sum(periods) / max(1, len(periods)):.2f} s",
        # Each CI job has a runner of its own; here every script shares this machine's CPUs.
        f"the scripts kept {cpu / max(wall, 1e-9):.2f} of this machine's {os.cpu_count()} CPUs busy on average over "
        f"{wall:.1f} s (each aws call is a new Python process: its start-up CPU does not scale down with time)",
    ]
    return ModeResult(
        "shell",
        results,
        cpu,
        "the shell scripts and their aws CLI / jq children (wait4 rusage), not a Celery worker",
        peak_calls_per_s=peak,
        wall_s=wall,
        notes=notes,
    )


# --- modes (b) and (c): the bot --------------------------------------------------------------------------------


def note_final(stack: Stack, s: Scenario) -> bool:
    notes = [n["body"] for n in stack.gitlab.notes(s.project_id, s.mr_iid) if MARKER in n["body"]]
    return bool(notes) and not any(
        line.startswith(("#### WAITING", "#### SCANNING")) for line in notes[-1].splitlines()
    )


def final_status(stack: Stack, s: Scenario) -> dict[str, Any] | None:
    """The first final commit status the bot posted for the gate (the verdict), as the fake GitLab holds it."""
    for st in stack.gitlab.statuses(s.project_id, s.sha):
        if st["name"] == f"ecr-scan-gate/{REPO}" and st["status"] in ("success", "failed", "canceled"):
            return st
    return None


def run_bot(mode: str, plan: list[GatePlan], args: argparse.Namespace, workdir: Path) -> ModeResult:
    scale = args.scale
    events = {"backstop_interval_s": args.backstop / scale} if mode == "events" else None
    stack = Stack(
        workdir,
        workers=1,
        concurrency=args.concurrency,
        events=events,
        poll_interval=max(1.0, POLL_S / scale),
        timeout_s=TIMEOUT_S / scale,
        stuck_after=max(STUCK_AFTER_S, args.backstop) / scale,  # the config insists: backstop <= stuck_after
        grace=GRACE_S / scale,
        visibility=max(4, round(VISIBILITY_S / scale)),
        rate=args.rate,
        burst=args.burst,
    )
    try:
        started_stack(stack, max(1.0, SWEEP_S / scale), FIRST_READ_S / scale)
        worker = stack.workers[0].proc
        assert worker is not None
        scenarios = [Scenario(stack.gitlab, stack.ecr, stack.deliver, job_names=(PUSH_APP, "unit-tests")) for _ in plan]
        results = [GateResult(g, s.tag(REPO)) for g, s in zip(plan, scenarios, strict=True)]
        digests = {s.tag(REPO): s.push(REPO) for s in scenarios}
        for s in scenarios:
            answer = s.pipeline_event("running")
            if answer.status_code != 202:
                raise RuntimeError(f"pipeline event answered {answer.status_code}: {answer.text[:200]}")
        harness.wait_for(
            lambda: all((st := s.status(REPO)) and st["status"] == "pending" for s in scenarios),
            60,
            "every gate's pending status",
        )
        time.sleep(1.0)  # let the pipeline events' notes settle: the measurement starts from an idle worker
        others = {"web": stack.web, "beat": stack.beat, "events": stack.events}
        other_pids = {k: p.proc.pid for k, p in others.items() if p is not None and p.proc is not None}
        cpu_before = tree_cpu_s(worker.pid)
        others_before = {k: tree_cpu_s(pid) for k, pid in other_pids.items()}
        spec = EventSpec(queue_url=stack.queue_url) if mode == "events" else None

        def push(r: GateResult, s: Scenario) -> None:
            # The push job has pushed: the scan starts (the timeline), and GitLab sends its job event.
            stack.ecr.script(REPO, tag=r.tag, steps=r.plan.steps(), events=spec)
            r.pushed_at = time.time()
            answer = s.job_event(PUSH_APP)
            if answer.status_code != 202:
                raise RuntimeError(f"job event answered {answer.status_code}: {answer.text[:200]}")

        t0 = time.time() + 1.0
        pairs = zip(results, scenarios, strict=True)
        run_at([(t0 + r.plan.push_after_s, functools.partial(push, r, s)) for r, s in pairs])
        deadline = max(r.plan.push_after_s + r.plan.scan_s for r in results) + TIMEOUT_S / scale + 30
        harness.wait_for(lambda: all(final_status(stack, s) for s in scenarios), deadline, "every verdict")
        wall = time.time() - t0
        # The gate's work ends with its MR note showing the verdict: count the CPU up to then.
        harness.wait_for(lambda: all(note_final(stack, s) for s in scenarios), 60, "every note to show its verdict")
        time.sleep(0.5)
        cpu = tree_cpu_s(worker.pid) - cpu_before
        other_cpu = {k: tree_cpu_s(pid) - others_before[k] for k, pid in other_pids.items()}
        store = stack.store()
        sent = stack.ecr.events_sent() if mode == "events" else []
        for r, s in zip(results, scenarios, strict=True):
            st = final_status(stack, s)
            assert st is not None
            # finished_at: when the final state was posted (created_at is the status job's first state, pending).
            r.verdict_at = iso_epoch(st["finished_at"] or st["created_at"])
            record = store.hgetall(f"{stack.prefix}:gate:{s.project_id}:{s.pipeline_id}:{REPO}")
            reason = json.loads(record["verdict"])["reason"] if record.get("verdict") else "?"
            wanted = {"passed": "success", "blocked": "failed"}.get(reason)
            r.verdict = reason if wanted == st["status"] else f"{reason}/{st['status']}"
            r.detail = f"{st['status']}: {st.get('description', '')}"
            r.completed_at = stack.ecr.completion_time(REPO, tag=r.tag)
            mine = scan_calls(stack.ecr, {r.tag, digests[r.tag]})
            r.calls = len(mine)
            done = [c.time for c in mine if c.step == 1 and c.http_status == 200]
            r.read_at = min(done) if done else None
            due = [e.sent_at for e in sent if r.completed_at is not None and abs(e.due_at - r.completed_at) < 1e-3]
            r.event_sent_at = min(due) if due else None
        all_names = set(digests) | set(digests.values())
        peak = peak_per_s([c.time for c in scan_calls(stack.ecr, all_names)])
    finally:
        stack.stop()
    return ModeResult(
        mode,
        results,
        cpu,
        f"the Celery worker process tree (main + {args.concurrency} prefork children, /proc utime+stime)",
        other_cpu_s=other_cpu,
        peak_calls_per_s=peak,
        wall_s=wall,
    )


# --- report --------------------------------------------------------------------------------------------------


def summary(m: ModeResult, args: argparse.Namespace) -> dict[str, Any]:
    n = len(m.gates)
    latencies = [lat for r in m.gates if (lat := r.latency) is not None]
    row: dict[str, Any] = {
        "mode": m.mode,
        "gates": n,
        "describe_calls_per_gate": round(sum(r.calls for r in m.gates) / n, 3),
        "verdict_latency_p50_s": round(percentile(latencies, 0.50), 3),
        "verdict_latency_p95_s": round(percentile(latencies, 0.95), 3),
        "runner_seconds_per_gate": round(sum(r.runner_s for r in m.gates) / n, 3) if m.mode == "shell" else 0.0,
        "worker_cpu_s_per_gate": round(m.cpu_s / n, 4),
        # extras
        "cpu_measured": m.cpu_what,
        "verdicts_correct": sum(r.correct for r in m.gates),
        "verdict_latency_max_s": round(max(latencies, default=float("nan")), 3),
        "verdicts_missing": n - len(latencies),
        "describe_calls_max": max((r.calls for r in m.gates), default=0),
        "describe_calls_min": min((r.calls for r in m.gates), default=0),
        "peak_describe_calls_per_s": m.peak_calls_per_s,
        "other_cpu_s_per_gate": {k: round(v / n, 4) for k, v in m.other_cpu_s.items()},
        "wall_s": round(m.wall_s, 1),
        "scale": args.scale,
        "seed": args.seed,
    }
    reads = [r.read_at - r.completed_at for r in m.gates if r.read_at and r.completed_at]
    posts = [r.verdict_at - r.read_at for r in m.gates if r.verdict_at and r.read_at]
    row["completion_to_complete_read_p50_s"] = round(percentile(reads, 0.5), 3)
    row["completion_to_complete_read_p95_s"] = round(percentile(reads, 0.95), 3)
    row["complete_read_to_verdict_p50_s"] = round(percentile(posts, 0.5), 3)
    row["complete_read_to_verdict_p95_s"] = round(percentile(posts, 0.95), 3)
    if m.mode == "events":
        sent = [r.event_sent_at - r.completed_at for r in m.gates if r.event_sent_at and r.completed_at]
        woke = [r.read_at - r.event_sent_at for r in m.gates if r.read_at and r.event_sent_at]
        row["completion_to_event_sent_p95_s"] = round(percentile(sent, 0.95), 3)
        row["event_sent_to_complete_read_p50_s"] = round(percentile(woke, 0.5), 3)
        row["event_sent_to_complete_read_p95_s"] = round(percentile(woke, 0.95), 3)
        row["backstop_reads"] = sum(r.calls - 1 for r in m.gates if r.calls > 1)
    if m.mode == "shell":
        row["shell_cpus_busy"] = round(m.cpu_s / max(m.wall_s, 1e-9), 2)
    if m.notes:
        row["notes"] = m.notes
    return row


def print_mode(m: ModeResult, row: dict[str, Any]) -> None:
    title = {
        "shell": "the runbook's loop (scripts/runbook_gate.sh), one script per gate, started at its push",
        "polling": "the bot polling ([scan] poll_interval_s), pipeline + job events through the webhook",
        "events": "the bot with scan events (SQS -> events process), [events] backstop_interval_s",
    }[m.mode]
    print(f"\n== {m.mode}: {title}")
    n = row["gates"]
    print(f"  {'gates':32} {n}  (verdicts correct {row['verdicts_correct']}/{n}, missing {row['verdicts_missing']})")
    print(
        f"  {'describe calls per gate':32} {row['describe_calls_per_gate']:.2f}  (min {row['describe_calls_min']}, "
        f"max {row['describe_calls_max']}; {sum(r.calls for r in m.gates)} calls; peak "
        f"{row['peak_describe_calls_per_s']}/s)"
    )
    print(
        f"  {'verdict latency after completion':32} p50 {row['verdict_latency_p50_s']:.3f} s  "
        f"p95 {row['verdict_latency_p95_s']:.3f} s  max {row['verdict_latency_max_s']:.3f} s"
    )
    print(
        f"  {'  completion -> COMPLETE read':32} p50 {row['completion_to_complete_read_p50_s']:.3f} s  "
        f"p95 {row['completion_to_complete_read_p95_s']:.3f} s"
    )
    what = "script exit" if m.mode == "shell" else "status POST"
    print(
        f"  {'  COMPLETE read -> ' + what:32} p50 {row['complete_read_to_verdict_p50_s']:.3f} s  "
        f"p95 {row['complete_read_to_verdict_p95_s']:.3f} s"
    )
    if m.mode == "events":
        print(f"  {'  completion -> event sent (p95)':32} {row['completion_to_event_sent_p95_s']:.3f} s")
        print(
            f"  {'  event sent -> COMPLETE read':32} p50 {row['event_sent_to_complete_read_p50_s']:.3f} s  "
            f"p95 {row['event_sent_to_complete_read_p95_s']:.3f} s"
        )
        print(f"  {'backstop reads (before completion)':32} {row['backstop_reads']}")
    print(f"  {'runner seconds per gate':32} {row['runner_seconds_per_gate']:.2f}")
    print(f"  {'CPU seconds per gate':32} {row['worker_cpu_s_per_gate']:.4f}  ({row['cpu_measured']})")
    if row["other_cpu_s_per_gate"]:
        others = ", ".join(f"{k} {v:.4f}" for k, v in row["other_cpu_s_per_gate"].items())
        print(f"  {'  other processes, per gate':32} {others}")
    for note in row.get("notes", []):
        print(f"  {'note':32} {note}")
    wrong = [r for r in m.gates if not r.correct]
    for r in wrong[:5]:
        print(f"  WRONG gate {r.plan.index} ({'blocked' if r.plan.blocked else 'clean'}): {r.verdict} {r.detail}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--gates", type=int, default=20, help="gates per mode")
    ap.add_argument("--scale", type=float, default=10, help="every time (scans, intervals, timeouts) divided by this")
    ap.add_argument("--spread", type=float, default=60, help="pushes spread over this many (unscaled) seconds")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of " + ",".join(MODES))
    ap.add_argument("--backstop", type=float, default=BACKSTOP_S, help="events: backstop_interval_s (unscaled)")
    ap.add_argument("--concurrency", type=int, default=4, help="prefork children of the worker (Procfile: 4)")
    ap.add_argument("--rate", type=float, default=100, help="[ecr] rate_per_s: high, so the bot is never throttled")
    ap.add_argument("--burst", type=int, default=100, help="[ecr] burst")
    ap.add_argument("--json", metavar="FILE", help="write the per-mode numbers as a JSON list")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = ap.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    if not set(modes) <= set(MODES) or args.gates < 1 or args.scale <= 0:
        ap.error(f"--modes from {MODES}, --gates >= 1, --scale > 0")
    scale = args.scale
    poll = max(1.0, POLL_S / scale)
    lo, hi = SCAN_RANGE_S
    headline = (
        f"times scaled down {scale:g}x: 15 s poll = {poll:g} s, {args.backstop:g} s backstop = "
        f"{args.backstop / scale:g} s, scans {lo:g}-{hi:g} s = {lo / scale:g}-{hi / scale:g} s"
    )
    print(f"*** {headline} ***")
    print(
        f"{args.gates} gates per mode (half clean, half one HIGH finding; seed {args.seed}), pushes spread over "
        f"{args.spread / scale:g} s; ECR rate limit for the bot [ecr] rate_per_s {args.rate:g}, burst {args.burst} "
        f"(at most {args.gates / poll:.0f} calls/s needed); worker: 1 process, concurrency {args.concurrency}"
    )
    print(
        f"scaled bot config: poll_interval_s {poll:g}, first_read_after_s {FIRST_READ_S / scale:g}, "
        f"backstop_interval_s {args.backstop / scale:g}, timeout_s "
        f"{TIMEOUT_S / scale:g}, stuck_after_s {max(STUCK_AFTER_S, args.backstop) / scale:g}, sweep interval_s "
        f"{max(1.0, SWEEP_S / scale):g}, visibility_timeout_s {max(4, round(VISIBILITY_S / scale))}; "
        f"shell: SLEEP_INTERVAL {RUNBOOK_INTERVAL_S / scale:g}, "
        f"MAX_ATTEMPTS {RUNBOOK_ATTEMPTS}"
    )
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start (other work shares them)")
    plan = plan_gates(args.gates, scale, args.spread, args.seed)
    workdir = Path(tempfile.mkdtemp(prefix="esg-bench-gate-"))
    results: list[ModeResult] = []
    ok = False
    try:
        for mode in modes:
            log(f"mode {mode}: {args.gates} gates")
            mode_dir = workdir / mode
            mode_dir.mkdir()
            if mode == "shell":
                results.append(run_shell(plan, args, mode_dir))
            else:
                results.append(run_bot(mode, plan, args, mode_dir))
        ok = True
    finally:
        if not ok or args.keep:
            print(f"logs: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    rows = [summary(m, args) for m in results]
    for m, row in zip(results, rows, strict=True):
        print_mode(m, row)
    print(f"\n== summary ({headline})")
    print(
        f"  {'mode':8} {'gates':>5} {'calls/gate':>10} {'p50 s':>7} {'p95 s':>7} {'runner s/gate':>13} "
        f"{'cpu s/gate':>10} {'correct':>8}"
    )
    for row in rows:
        print(
            f"  {row['mode']:8} {row['gates']:5d} {row['describe_calls_per_gate']:10.2f} "
            f"{row['verdict_latency_p50_s']:7.3f} {row['verdict_latency_p95_s']:7.3f} "
            f"{row['runner_seconds_per_gate']:13.2f} {row['worker_cpu_s_per_gate']:10.4f} "
            f"{row['verdicts_correct']:>5d}/{row['gates']}"
        )
    print("  (cpu s/gate: the Celery worker tree for the bot; for shell, the scripts and their aws CLI children)")
    by_mode = {row["mode"]: row for row in rows}
    checks: list[tuple[str, bool]] = []
    if "shell" in by_mode and "polling" in by_mode:
        shell, polling = by_mode["shell"]["describe_calls_per_gate"], by_mode["polling"]["describe_calls_per_gate"]
        print(f"  polling calls / shell calls: {polling:.2f} / {shell:.2f} = {polling / shell:.2f}")
        checks.append((f"polling <= the shell loop's calls per gate ({polling:.2f} vs {shell:.2f})", polling <= shell))
    if "events" in by_mode:
        ev = by_mode["events"]
        calls, p95 = ev["describe_calls_per_gate"], ev["verdict_latency_p95_s"]
        checks.append((f"events <= {TARGET_EVENTS_CALLS} describe calls per gate ({calls:.2f})", calls <= 1.2))
        checks.append((f"events p95 <= {TARGET_EVENTS_P95_S:g} s after completion ({p95:.3f} s)", p95 <= 1.0))
    for row in rows:
        checks.append((f"{row['mode']}: every verdict correct", row["verdicts_correct"] == row["gates"]))
    for text, passed in checks:
        print(f"  {'PASS' if passed else 'MISS'}  {text}")
    busy = by_mode.get("shell", {}).get("shell_cpus_busy", 0.0)
    if busy > 0.75 * (os.cpu_count() or 1):
        print(
            f"  note: the shell scripts kept {busy:.2f} of {os.cpu_count()} CPUs busy: CPU-bound here (each aws call "
            "is a new Python process whose start-up CPU does not scale down with time), so the shell's calls per "
            "gate and latency at this scale are not what a runner of its own would show; compare with --scale 1"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
        print(f"  numbers written to {args.json}")
    return 0 if all(passed for _, passed in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
