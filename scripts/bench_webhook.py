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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--senders", type=int, default=8)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    args = parser.parse_args()
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
