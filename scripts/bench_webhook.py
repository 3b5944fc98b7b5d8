"""Benchmark: webhook answer latency through gunicorn with real Redis dedupe and Celery enqueue."""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402

from tests import harness  # noqa: E402
from tests.fakes.ecr import EcrDouble  # noqa: E402
from tests.fakes.gitlab import FakeGitLab  # noqa: E402
from tests.fakes.payloads import pipeline_payload, webhook_headers  # noqa: E402
from tests.stack import free_port  # noqa: E402


def up(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).ok
    except requests.RequestException:
        return False


# The Procfile's setup, and the threaded worker it replaced as the baseline measured in the same run.
SETUPS = {
    "gevent (Procfile)": (),
    "gthread 2x4 (before)": ("--worker-class", "gthread", "--threads", "4"),
}


def bench(env: dict[str, str], workdir: Path, options: tuple[str, ...], args: argparse.Namespace, base: int) -> dict:
    port = free_port()
    web = harness.web_server(env, workdir, port, "--workers", "2", *options).start()
    url = f"http://127.0.0.1:{port}/webhook"
    try:
        harness.wait_for(lambda: up(url.replace("webhook", "healthz")), 60, "the web process")

        def one(i: int) -> tuple[float, int]:
            body = pipeline_payload(
                project_id=base + i,
                project_path=f"{harness.GROUP}/bench{base + i}",
                pipeline_id=base + i,
                status="running",
            )
            started = time.perf_counter()
            response = requests.post(
                url, json=body, timeout=10, headers=webhook_headers("Pipeline Hook", harness.WEBHOOK_SECRET)
            )
            return time.perf_counter() - started, response.status_code

        started = time.perf_counter()
        with ThreadPoolExecutor(args.senders) as pool:
            results = list(pool.map(one, range(args.requests)))
        wall = time.perf_counter() - started
    finally:
        web.stop()
    latencies = sorted(r[0] * 1000 for r in results)
    codes: dict[int, int] = {}
    for _, code in results:
        codes[code] = codes.get(code, 0) + 1

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))]

    return {
        "codes": codes,
        "p50": pct(0.5),
        "p99": pct(0.99),
        "max": latencies[-1],
        "mean": statistics.mean(latencies),
        "per_s": len(results) / wall,
        "wall": wall,
    }


_WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = [==[%(body)s]==]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-Gitlab-Event"] = "Pipeline Hook"
wrk.headers["X-Gitlab-Token"] = "%(token)s"
local n = 0
local me = tostring({}):sub(8)
request = function()
  n = n + 1
  wrk.headers["Idempotency-Key"] = me .. "-" .. n  -- every request a new delivery: the whole path runs
  return wrk.format(nil, "/webhook")
end
"""


def wrk(url: str, script: Path, seconds: int, connections: int) -> dict[str, float]:
    """Requests/s and p99 from wrk (a C load generator: Debian's package `wrk`)."""
    binary = shutil.which("wrk") or "wrk"
    out = subprocess.run(  # noqa: S603 - our own arguments
        [binary, "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "per_s": rate,
        "p99_ms": float(p99.group(1)) * scale[p99.group(2)] if p99 else float("nan"),
        "non_2xx": float(non2xx.group(1)) if non2xx else 0.0,
    }


def against_bare(args: argparse.Namespace) -> int:
    """Ours and a bare Flask app that only parses the body, same gunicorn settings (the Procfile's), under wrk."""
    if shutil.which("wrk") is None:
        print("wrk not found: apt-get install -y wrk", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="esg-bench-"))
    prefix = f"esg-bench-{int(time.time())}"
    body = json.dumps(pipeline_payload(project_id=4_000_001, project_path=f"{harness.GROUP}/bench", status="running"))
    script = workdir / "deliveries.lua"
    script.write_text(_WRK_SCRIPT % {"body": body, "token": harness.WEBHOOK_SECRET}, encoding="utf-8")
    rows: dict[str, dict[str, float]] = {}
    with FakeGitLab(token=harness.GITLAB_TOKEN) as gitlab, EcrDouble() as ecr:
        config = harness.write_config(workdir / "config.toml", gitlab.url, args.redis_url, prefix=prefix)
        env = harness.stack_env(config, ecr)
        try:
            for name, app in (("bare Flask", "bare_app:create_app()"), ("ecr-scan-gate", "")):
                port = free_port()
                extra = ("--chdir", str(ROOT / "scripts")) if app else ()
                argv_app = (app,) if app else ()
                web = harness.web_server(env, workdir, port, "--workers", "2", *extra, app=argv_app).start()
                try:
                    harness.wait_for(lambda port=port: up(f"http://127.0.0.1:{port}/healthz"), 60, name)
                    wrk(f"http://127.0.0.1:{port}/webhook", script, 2, args.connections)  # warm-up
                    rows[name] = wrk(f"http://127.0.0.1:{port}/webhook", script, args.seconds, args.connections)
                finally:
                    web.stop()
        finally:
            harness.drop_prefix(args.redis_url, prefix)
    for name, r in rows.items():
        print(f"{name:14} {r['per_s']:8.0f} deliveries/s  p99 {r['p99_ms']:6.1f} ms  non-2xx {r['non_2xx']:.0f}")
    ratio = rows["ecr-scan-gate"]["per_s"] / rows["bare Flask"]["per_s"]
    print(f"ratio: {ratio:.2f}x the bare app (wrk -t2 -c{args.connections} -d{args.seconds}s; gevent, 2 workers)")
    return 0 if all(r["non_2xx"] == 0 for r in rows.values()) else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--senders", type=int, default=8)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--against-bare", action="store_true", help="wrk: ours vs a bare Flask app")
    parser.add_argument("--seconds", type=int, default=10, help="--against-bare: wrk duration")
    parser.add_argument("--connections", type=int, default=16, help="--against-bare: wrk connections")
    args = parser.parse_args()
    if args.against_bare:
        return against_bare(args)
    workdir = Path(tempfile.mkdtemp(prefix="esg-bench-"))
    prefix = f"esg-bench-{int(time.time())}"
    rows = {}
    with FakeGitLab(token=harness.GITLAB_TOKEN) as gitlab, EcrDouble() as ecr:
        config = harness.write_config(workdir / "config.toml", gitlab.url, args.redis_url, prefix=prefix)
        env = harness.stack_env(config, ecr)
        try:
            for n, (name, options) in enumerate(SETUPS.items()):
                rows[name] = bench(env, workdir, options, args, 5_000_000 + n * 1_000_000)
        finally:
            harness.drop_prefix(args.redis_url, prefix)
    print(f"deliveries: {args.requests} per setup with {args.senders} senders, 2 gunicorn workers each")
    for name, r in rows.items():
        print(
            f"{name:22} answers {r['codes']}  latency ms p50 {r['p50']:.1f} p99 {r['p99']:.1f} max {r['max']:.1f}  "
            f"throughput {r['per_s']:.0f}/s over {r['wall']:.1f} s"
        )
    ours, before = rows["gevent (Procfile)"], rows["gthread 2x4 (before)"]
    throughput, p99 = ours["per_s"] / before["per_s"], ours["p99"] / before["p99"]
    print(f"ratio (gevent / gthread): throughput {throughput:.2f}x, p99 {p99:.2f}x")
    return 0 if all(set(r["codes"]) == {202} for r in rows.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
