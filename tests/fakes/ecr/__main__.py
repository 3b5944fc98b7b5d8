"""Runs the double's command line: `python -m tests.fakes.ecr [--host H] [--port P] [--region R] [--verbose]`."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
