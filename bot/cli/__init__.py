"""The command line: `ecr-scan-gate check` (the gate inside a pipeline) and `ecr-scan-gate doctor`."""

from bot.cli.main import main

__all__ = ["main"]
