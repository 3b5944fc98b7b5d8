"""Benchmark: webhook answer latency through gunicorn with real Redis dedupe and Celery enqueue."""

from __future__ import annotations

import argparse
import statistics
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--senders", type=int, default=8)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="esg-bench-"))
    prefix = f"esg-bench-{int(time.time())}"
    with FakeGitLab(token=harness.GITLAB_TOKEN) as gitlab, EcrDouble() as ecr:
        config = harness.write_config(workdir / "config.toml", gitlab.url, args.redis_url, prefix=prefix)
        env = harness.stack_env(config, ecr)
        port = free_port()
        web = harness.web_server(env, workdir, port, "--workers", "2", "--threads", "4").start()
        url = f"http://127.0.0.1:{port}/webhook"
        try:
            harness.wait_for(lambda: up(url.replace("webhook", "healthz")), 60, "the web process")

            def one(i: int) -> tuple[float, int]:
                body = pipeline_payload(
                    project_id=1_000_000 + i,
                    project_path=f"{harness.GROUP}/bench{i}",
                    pipeline_id=5_000_000 + i,
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
            harness.drop_prefix(args.redis_url, prefix)
    latencies = sorted(r[0] * 1000 for r in results)
    codes: dict[int, int] = {}
    for _, code in results:
        codes[code] = codes.get(code, 0) + 1

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))]

    print(f"deliveries: {len(results)} with {args.senders} senders, answers by code: {codes}")
    print(
        f"latency ms: p50 {pct(0.5):.1f}  p95 {pct(0.95):.1f}  p99 {pct(0.99):.1f}  max {latencies[-1]:.1f}  "
        f"mean {statistics.mean(latencies):.1f}"
    )
    print(f"throughput: {len(results) / wall:.0f} deliveries/s over {wall:.1f} s (2 gunicorn workers × 4 threads)")
    return 0 if set(codes) == {202} else 1


if __name__ == "__main__":
    raise SystemExit(main())
