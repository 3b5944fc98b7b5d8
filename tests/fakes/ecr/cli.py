"""The command line (`python -m tests.fakes.ecr`): serve one double and print its endpoint until SIGTERM or Ctrl-C."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence

from .constants import DEFAULT_REGION
from .double import EcrDouble


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fakes.ecr", description=sys.modules[__package__].__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5555, help="proxy port (0: any free port)")
    parser.add_argument("--region", default=DEFAULT_REGION)
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = parser.parse_args(argv)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    with EcrDouble(host=args.host, port=args.port, region=args.region, verbose=args.verbose) as double:
        print(f"AWS_ENDPOINT_URL={double.endpoint_url}", flush=True)
        print(
            f"ECR double: {double.endpoint_url} (moto at {double.moto_url}); control: "
            f"{double.endpoint_url}/_ecr/{{info,script,calls,reset,completion,queues,send_event,queue_messages,events_sent}}",
            flush=True,
        )
        try:
            while not stopped.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
    return 0
