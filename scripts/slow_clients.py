"""Slow-client check: N connections stall (mid-headers, or after one body byte) while /healthz and real
deliveries must still answer within 1 s. Runs the Procfile's serving setup and, as the baseline in the same
run, the threaded worker it replaced (2 workers x 4 threads)."""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
import threading
import time
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402

from tests import harness  # noqa: E402
from tests.fakes.ecr import EcrDouble  # noqa: E402
from tests.fakes.gitlab import FakeGitLab  # noqa: E402
from tests.fakes.payloads import pipeline_payload, webhook_headers  # noqa: E402
from tests.stack import free_port  # noqa: E402

SETUPS = {
    "gevent (Procfile)": (),
    "gthread 2x4 (before)": ("--worker-class", "gthread", "--threads", "4"),
}


def up(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).ok
    except requests.RequestException:
        return False


def stall(port: int, kind: str, opened: list[socket.socket]) -> None:
    """One unauthenticated connection that never finishes its request."""
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    except OSError:
        return
    if kind == "headers":
        sock.sendall(b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Type: appl")  # stalls mid-headers
    else:
        sock.sendall(b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")  # one body byte
    opened.append(sock)


def timed(fn: object) -> float:
    started = time.perf_counter()
    try:
        fn()  # type: ignore[operator]
    except requests.RequestException:
        return float("inf")
    return time.perf_counter() - started


def measure(port: int, slow: int, rounds: int) -> dict[str, float | int]:
    opened: list[socket.socket] = []
    threads = [threading.Thread(target=stall, args=(port, "headers" if i % 2 else "body", opened)) for i in range(slow)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    time.sleep(0.5)  # the server has accepted them all and is waiting on each
    url = f"http://127.0.0.1:{port}"
    health, deliveries, codes = [], [], []
    for i in range(rounds):
        health.append(timed(lambda: requests.get(f"{url}/healthz", timeout=3).raise_for_status()))
        body = pipeline_payload(
            project_id=2_000_000 + i, project_path=f"{harness.GROUP}/slow{i}", pipeline_id=7_000_000 + i
        )

        def deliver(body: dict = body) -> None:
            r = requests.post(
                f"{url}/webhook", json=body, timeout=3, headers=webhook_headers("Pipeline Hook", harness.WEBHOOK_SECRET)
            )
            codes.append(r.status_code)

        deliveries.append(timed(deliver))
    for sock in opened:
        sock.close()
    return {
        "slow connections open": len(opened),
        "healthz max s": max(health),
        "delivery p50 s": statistics.median(deliveries),
        "delivery max s": max(deliveries),
        "deliveries 202": sum(c == 202 for c in codes),
        "rounds": rounds,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--slow", type=int, default=200, help="stalled connections held open")
    parser.add_argument("--rounds", type=int, default=20, help="healthz + delivery pairs measured meanwhile")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="esg-slow-"))
    prefix = f"esg-slow-{int(time.time())}"
    results: dict[str, dict[str, float | int]] = {}
    with FakeGitLab(token=harness.GITLAB_TOKEN) as gitlab, EcrDouble() as ecr:
        config = harness.write_config(workdir / "config.toml", gitlab.url, args.redis_url, prefix=prefix)
        env = harness.stack_env(config, ecr)
        for name, options in SETUPS.items():
            port = free_port()
            web = harness.web_server(env, workdir, port, "--workers", "2", *options).start()
            try:
                harness.wait_for(partial(up, f"http://127.0.0.1:{port}/healthz"), 60, "web")
                results[name] = measure(port, args.slow, args.rounds)
            finally:
                web.stop()
    harness.drop_prefix(args.redis_url, prefix)
    keys = list(next(iter(results.values())))
    print(f"{'':28}" + "".join(f"{k:>24}" for k in keys))
    for name, row in results.items():
        print(f"{name:28}" + "".join(f"{v:>24.3f}" if isinstance(v, float) else f"{v:>24}" for v in row.values()))
    ours = results["gevent (Procfile)"]
    ok = ours["healthz max s"] < 1 and ours["delivery max s"] < 1 and ours["deliveries 202"] == ours["rounds"]
    print("result", "OK" if ok else "FAILED: /healthz or a delivery took 1 s or more with slow clients open")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
